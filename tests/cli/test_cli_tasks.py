"""The console script beyond MiniLM classifiers: other families' preset
folders, text pairs, generation (causal and seq2seq), `--task-column` and
`train --resume`. Tiny random presets saved by the tests stand in for
downloaded ones (tests/fixtures/presets.py)."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from keras_adalink.cli.generation import causal_examples
from tests.fixtures import presets
from tests.fixtures.checks import run_cli

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once

_run = run_cli


def _json_lines(result):
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def _last_json(result):  # train prints Keras' epoch lines first
    return json.loads(result.stdout.strip().splitlines()[-1])


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    folders = {}

    def get(name):
        if name not in folders:
            folder = str(tmp_path_factory.mktemp(name))
            folders[name] = getattr(presets, name)(folder)
        return folders[name]

    return get


def test_causal_loss_is_on_response_tokens_only(preset):
    import keras_hub

    lm = keras_hub.models.CausalLM.from_preset(preset("gpt2"))
    tokenizer = lm.preprocessor.tokenizer
    prompt, response = tokenizer(["is film good"])[0], tokenizer([" yes"])[0]
    x, y, w = causal_examples(lm.preprocessor, ["is film good"], [" yes"], 10)
    end = tokenizer.end_token_id
    sequence = [end, *prompt, *response, end]  # GPT-2: start = end id
    n = len(sequence) - 1
    assert x["token_ids"][0, :n].tolist() == sequence[:-1]
    assert y[0, :n].tolist() == sequence[1:]
    assert x["padding_mask"][0].tolist() == [1] * n + [0] * (10 - n)
    # Weighted targets: exactly the response tokens and the end token.
    assert y[0][w[0] == 1].tolist() == [*response, end]
    # A prompt longer than the sequence leaves nothing to learn from.
    _, _, w = causal_examples(lm.preprocessor, ["good " * 20], [" yes"], 10)
    assert w.sum() == 0


def test_preset_name_offline_says_how(monkeypatch, tmp_path, capsys):
    from keras_adalink import cli

    def unreachable(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    data = _write_jsonl(tmp_path / "d.jsonl", [{"t": "good", "y": 1}])
    code = cli.main(
        ["train", "--data", str(data), "--text-column", "t"]
        + ["--label-column", "y", "--task", "classification"]
        + ["--backbone", "roberta_base_en", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "'roberta_base_en'" in error and "--backbone PATH" in error
    assert "save_to_preset" in error


def test_generation_flags_are_required(tmp_path, capsys):
    from keras_adalink import cli

    data = _write_jsonl(tmp_path / "d.jsonl", [{"p": "a", "r": "b"}])
    code = cli.main(
        ["train", "--data", str(data), "--task", "generation"]
        + ["--prompt-column", "p", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "needs --response-column" in capsys.readouterr().err


QUESTIONS = [f"is {a} {b}" for a in ("film", "plot") for b in presets.WORDS]


@pytest.mark.end_to_end
@pytest.mark.slow
def test_causal_lm_learns_to_answer(preset, tmp_path):
    rows = [{"prompt": q, "answer": " yes"} for q in QUESTIONS[:12]]
    data = _write_jsonl(tmp_path / "chat.jsonl", rows)
    run = tmp_path / "run"
    before = _run(
        "train", "--backbone", preset("gpt2"), "--data", data,
        "--task", "generation", "--prompt-column", "prompt",
        "--response-column", "answer", "--sequence-length", 10,
        "--rank", 8, "--learning-rate", 0.05, "--epochs", 40,
        "--decay", "constant",
        "--batch-size", 4, "--out", run,
    )  # fmt: skip
    trained = _last_json(before)["train"]
    evaluated = _json_lines(_run("eval", "--adapter", run, "--data", data))[0]
    assert evaluated["loss"] == pytest.approx(trained["loss"], rel=1e-4)
    assert evaluated["perplexity"] == pytest.approx(np.exp(trained["loss"]))
    # The frozen random LM's own answers are noise (none is " yes"); the
    # adapter taught it the answer (a rank-8 input-side module on a random
    # one-layer LM gets most prompts, not always every one).
    assert evaluated["exact_match"] >= 0.75
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert history["loss"][-1] < history["loss"][0] / 2
    lines = _json_lines(
        _run(
            "predict",
            "--adapter",
            run,
            "--max-length",
            10,
            "--sampler",
            "greedy",
            "--text",
            *QUESTIONS[:12],
        )  # fmt: skip
    )
    assert [line["text"] for line in lines] == QUESTIONS[:12]
    answered = [line["prediction"] == " yes" for line in lines]
    assert np.mean(answered) == pytest.approx(evaluated["exact_match"])


@pytest.mark.end_to_end
@pytest.mark.slow
def test_seq2seq_lm_learns_to_answer(preset, tmp_path):
    rows = [{"question": q, "answer": " no"} for q in QUESTIONS[:8]]
    data = _write_jsonl(tmp_path / "qa.jsonl", rows)
    result = _run(
        "train", "--backbone", preset("bart"), "--data", data,
        "--val-data", data, "--task", "generation",
        "--prompt-column", "question", "--response-column", "answer",
        "--sequence-length", 8, "--rank", 8, "--learning-rate", 0.05,
        "--epochs", 10, "--batch-size", 4, "--out", tmp_path / "run",
    )  # fmt: skip
    validation = _last_json(result)["validation"]
    assert validation["exact_match"] == 1.0
    assert validation["perplexity"] < 2


@pytest.mark.end_to_end
@pytest.mark.slow
def test_task_column_with_pairs_on_a_roberta_preset(preset, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        first, second = rng.choice(presets.WORDS, 2)
        rows.append(
            {"task": "same", "a": first, "b": second,
             "label": "yes" if first == second else "no"}
        )  # fmt: skip
        rows.append(
            {"task": "colour", "a": f"{first} film", "b": second,
             "label": ["red", "blue", "other"][i % 3]}
        )  # fmt: skip
    data = _write_jsonl(tmp_path / "tasks.csv.jsonl", rows)
    run = tmp_path / "multi"
    _run(
        "train", "--backbone", preset("roberta"), "--data", data,
        "--task-column", "task", "--text-column", "a",
        "--text-pair-column", "b", "--label-column", "label",
        "--task", "classification", "--max-steps", 3, "--batch-size", 8,
        "--sequence-length", 12, "--out", run,
    )  # fmt: skip
    spec = json.loads((run / "run.json").read_text())
    assert spec["task_names"] == ["colour", "same"]
    assert spec["tasks"]["colour"]["labels"] == ["blue", "other", "red"]
    assert spec["tasks"]["same"]["labels"] == ["no", "yes"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 3
    evaluated = _json_lines(_run("eval", "--adapter", run, "--data", data))[0]
    assert sorted(evaluated) == ["colour", "same"]
    for name, scores in evaluated.items():
        assert scores == pytest.approx(metrics["train"][name], rel=1e-5)
    pairs = _write_jsonl(tmp_path / "p.jsonl", [{"a": "red", "b": "red"}])
    lines = _json_lines(
        _run("predict", "--adapter", run, "--task", "same", "--data", pairs)
    )
    assert lines[0]["task"] == "same" and lines[0]["prediction"] in {
        "no",
        "yes",
    }
    # A pair task needs both texts: --text alone says so.
    alone = _run(
        "predict", "--adapter", run, "--task", "same", "--text", "red",
        check=False,
    )  # fmt: skip
    assert alone.returncode == 2 and "--data" in alone.stderr


KILLED = """
import os, signal, sys
from keras_adalink.cli import fitting, main
step = fitting.StopAfter.on_train_batch_end
def kill_at_8(self, batch, logs=None):
    step(self, batch, logs)
    if self.seen == 8:  # mid-epoch 2 of 3 (6 steps an epoch)
        os.kill(os.getpid(), signal.SIGKILL)
fitting.StopAfter.on_train_batch_end = kill_at_8
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.end_to_end
@pytest.mark.slow
def test_resume_after_a_kill_ends_where_an_unbroken_run_ends(preset, tmp_path):
    rows = [
        {"text": f"{w} film", "score": float(i % 5)}
        for i, w in enumerate(presets.WORDS * 3)
    ][:24]
    data = _write_jsonl(tmp_path / "d.jsonl", rows)

    def train(out, *extra, killed=False):
        args = ["train", "--backbone", preset("bert"), "--data", str(data),
                "--val-data", str(data), "--text-column", "text",
                "--label-column", "score", "--task", "regression",
                "--epochs", "3", "--batch-size", "4", "--sequence-length",
                "8", "--out", str(out), *extra]  # fmt: skip
        if not killed:
            return run_cli(*args, check=False)
        # Only a process of its own can be killed mid-epoch.
        return subprocess.run(
            [sys.executable, "-c", KILLED, *args],
            capture_output=True,
            text=True,
            timeout=900,
        )

    assert train(tmp_path / "whole").returncode == 0
    killed = train(tmp_path / "cut", killed=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "cut" / "adapter.safetensors").exists()
    resumed = train(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 2/3" in resumed.stdout
    whole = load_file(str(tmp_path / "whole" / "adapter.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "adapter.safetensors"))
    assert sorted(whole) == sorted(cut)
    for name in whole:
        np.testing.assert_allclose(cut[name], whole[name], rtol=1e-6)
    metrics = [
        json.loads((tmp_path / folder / "metrics.json").read_text())
        for folder in ("whole", "cut")
    ]
    assert metrics[1]["train_steps"] == metrics[0]["train_steps"] == 18
    assert sorted(metrics[1]["history"]) == sorted(metrics[0]["history"])
    for key, values in metrics[0]["history"].items():
        assert metrics[1]["history"][key] == pytest.approx(values), key
    assert metrics[1]["validation"] == pytest.approx(metrics[0]["validation"])
    # Other flags than the checkpoint's: refused, not silently mixed.
    other = train(tmp_path / "cut", "--resume", "--seed", "1")
    assert other.returncode == 2 and "seed" in other.stderr


@pytest.mark.end_to_end
@pytest.mark.slow
def test_quantized_remat_run_evaluates_and_predicts(preset, tmp_path):
    """`train --quantize int8 --remat`: the run records both, and eval and
    predict rebuild the same quantized base (the adapter file's fingerprint
    would refuse any other) and reproduce train's validation metrics."""
    rows = [
        {"text": f"{w} film", "label": ["neg", "pos"][i % 2]}
        for i, w in enumerate(presets.WORDS * 2)
    ][:16]
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "q"
    run_cli(
        "train", "--backbone", preset("bert"), "--data", data,
        "--val-data", data, "--text-column", "text", "--label-column",
        "label", "--task", "classification", "--epochs", "1",
        "--batch-size", "4", "--sequence-length", "8", "--quantize",
        "int8", "--remat", "--out", out,
    )  # fmt: skip
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["quantize"] == "int8" and recorded["remat"] is True
    trained = json.loads((out / "metrics.json").read_text())["validation"]
    evaluated = _last_json(run_cli("eval", "--adapter", out, "--data", data))
    assert evaluated == pytest.approx(trained, rel=1e-4)
    predicted = _json_lines(
        run_cli("predict", "--adapter", out, "--text", "a film")
    )
    assert predicted[0]["prediction"] in ("neg", "pos")
