"""The `keras-adalink` console script, driven as a user would."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from tests.fixtures.checks import run_cli
from tests.fixtures.cli import write_csv as _write_csv

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once

_run = run_cli


@pytest.mark.parametrize(
    "command", ["train", "eval", "predict", "export", "compose", "demo"]
)
def test_help_with_examples(command, capsys):
    # The parser in this process (the console script itself is driven by
    # the end-to-end tests): one start-up instead of one per command.
    from keras_adalink import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: keras-adalink" in out
    assert "--" in out


@pytest.mark.end_to_end
@pytest.mark.slow
def test_train_eval_predict_export(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _write_csv(train, 64, "train")
    _write_csv(test, 32, "test")
    out = tmp_path / "run"
    _run(
        "train",
        "--data",
        str(train),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--task",
        "classification",
        "--rank",
        "2",
        "--max-steps",
        "3",
        "--sequence-length",
        "32",
        "--val-data",
        str(test),
        "--out",
        str(out),
    )
    assert sorted(os.listdir(out)) == [
        "adapter.safetensors",
        "checkpoint.npz",
        "learning_curve.png",
        "logs",
        "metrics.json",
        "run.json",
    ]
    assert os.listdir(out / "logs" / "train")  # TensorBoard event files
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history["accuracy"]) == len(history["val_accuracy"]) == 2
    # 64 examples at batch 32 are 2 steps an epoch: 3 steps end mid-epoch 2.
    assert metrics["train_steps"] == 3
    # No --learning-rate: the rank's default, 0.02 / sqrt(2).
    assert metrics["learning_rate"] == pytest.approx(0.02 / 2**0.5)
    assert metrics["decay"] == "rsqrt"
    assert 0 <= metrics["validation"]["accuracy"] <= 1
    evaluated = json.loads(
        _run("eval", "--adapter", str(out), "--data", str(test))
        .stdout.strip()
        .splitlines()[-1]
    )
    assert evaluated["accuracy"] == pytest.approx(
        metrics["validation"]["accuracy"]
    )
    lines = (
        _run(
            "predict",
            "--adapter",
            str(out),
            "--text",
            "a gorgeous film",
            "a dull mess",
        )
        .stdout.strip()
        .splitlines()
    )
    predictions = [json.loads(line)["prediction"] for line in lines[-2:]]
    assert set(predictions) <= {"fresh", "rotten"}
    if keras.backend.backend() != "torch":
        _run(
            "export",
            "--adapter",
            str(out),
            "--out",
            str(tmp_path / "sm"),
            "--fold",
        )
        assert (tmp_path / "sm" / "saved_model.pb").exists()


def test_every_flag_has_help_and_its_default():
    import argparse

    from keras_adalink.cli import parser

    top = parser()
    commands = next(
        a for a in top._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name, command in commands.choices.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]}: no help"
            shown = action.default not in (None, False, argparse.SUPPRESS)
            if shown:
                assert f"default: {action.default}" in text, (
                    f"{name} {action.option_strings[0]}: default not shown"
                )


def test_quiet_start_prints_only_its_own_output(tmp_path):
    result = _run(
        "eval",
        "--adapter",
        str(tmp_path),
        "--data",
        "x.csv",
        check=False,
        process=True,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"keras-adalink eval: error: {tmp_path} is not a keras-adalink run "
        "folder (no run.json)"
    ]
    assert _run("--help", process=True).stderr == ""


def test_unknown_column_lists_available(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("review,sentiment\ngood,fresh\n")
    result = _run(
        "train",
        "--data",
        str(data),
        "--text-column",
        "text",
        "--label-column",
        "sentiment",
        "--task",
        "classification",
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert result.returncode == 2
    assert "column 'text' not in" in result.stderr
    assert "available: review, sentiment" in result.stderr


def test_missing_backbone_says_how(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"t": "good", "y": 1}\n')
    result = _run(
        "train",
        "--data",
        str(data),
        "--text-column",
        "t",
        "--label-column",
        "y",
        "--task",
        "regression",
        "--backbone",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert result.returncode == 2
    assert "--backbone" in result.stderr and "local folder" in result.stderr


def test_missing_data_file(tmp_path):
    result = _run(
        "eval", "--adapter", str(tmp_path), "--data", "nope.csv", check=False
    )
    assert result.returncode == 2
    assert "run.json" in result.stderr or "no such data file" in result.stderr


@pytest.mark.end_to_end
@pytest.mark.slow
def test_train_regression_reports_pearson(tmp_path):
    data = tmp_path / "d.jsonl"
    rng = np.random.default_rng(0)
    lines = [
        json.dumps({"text": f"review number {i}", "score": float(s)})
        for i, s in enumerate(rng.normal(size=40))
    ]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    _run(
        "train",
        "--data",
        str(data),
        "--val-data",
        str(data),
        "--text-column",
        "text",
        "--label-column",
        "score",
        "--task",
        "regression",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--sequence-length",
        "16",
        "--learning-rate",
        "0.003",
        "--decay",
        "cosine",
        "--out",
        str(out),
    )

    def refuse(token):
        raise AssertionError(f"metrics.json is not strict JSON: {token}")

    metrics = json.loads(
        (out / "metrics.json").read_text(), parse_constant=refuse
    )
    assert metrics["learning_rate"] == 0.003
    assert metrics["decay"] == "cosine"
    history = metrics["history"]
    # Real numbers every epoch, train and validation (was NaN: [B, 1] vs [B]).
    for key in ("pearson", "val_pearson"):
        assert len(history[key]) == 2
        assert all(-1 <= r <= 1 for r in history[key]), history[key]
    evaluated = json.loads(
        _run("eval", "--adapter", str(out), "--data", str(data))
        .stdout.strip()
        .splitlines()[-1]
    )
    assert history["val_pearson"][-1] == pytest.approx(
        evaluated["pearson"], abs=1e-3
    )
    assert (out / "learning_curve.png").stat().st_size > 1000


def _train(tmp_path, name, data, label, task):
    out = tmp_path / name
    _run(
        "train",
        "--data",
        str(data),
        "--text-column",
        "review",
        "--label-column",
        label,
        "--task",
        task,
        "--rank",
        "2" if task == "regression" else "4",
        "--max-steps",
        "2",
        "--sequence-length",
        "16",
        "--out",
        str(out),
    )
    return out


def _predictions(*args):
    lines = _run("predict", *args).stdout.strip().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.end_to_end
@pytest.mark.slow
def test_compose_runs_then_eval_predict_export(tmp_path):
    data = tmp_path / "d.csv"
    _write_csv(data, 32, "train")
    rows = list(csv.DictReader(open(data)))
    with open(data, "w", newline="") as f:  # add a regression target
        writer = csv.DictWriter(f, ["review", "sentiment", "length"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "length": len(row["review"]) / 100})
    sentiment = _train(
        tmp_path, "sentiment", data, "sentiment", "classification"
    )
    length = _train(tmp_path, "len_run", data, "length", "regression")
    multi = tmp_path / "multi"
    composed = json.loads(
        _run(
            "compose",
            "--adapter",
            str(sentiment),
            "--adapter",
            f"length={length}",
            "--out",
            str(multi),
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert composed["tasks"] == ["sentiment", "length"]
    texts = ["a gorgeous, witty film", "a dull mess", "fine"]
    # One process per check keeps this test short (each loads MiniLM):
    # predictions alone vs composed for the regression task, eval alone vs
    # composed for the classifier; compose's numerics are tested on every
    # backend in tests/test_compose.py.
    for task, run in [("sentiment", sentiment), ("length", length)]:
        both = _predictions(
            "--adapter", str(multi), "--task", task, "--text", *texts
        )
        assert [p["task"] for p in both] == [task] * 3
        if task == "length":
            alone = _predictions("--adapter", str(run), "--text", *texts)
            for a, b in zip(alone, both):
                assert a["text"] == b["text"]
                assert a["prediction"] == pytest.approx(b["prediction"], 1e-4)
            continue
        own = json.loads(
            _run("eval", "--adapter", str(run), "--data", str(data))
            .stdout.strip()
            .splitlines()[-1]
        )
        via = json.loads(
            _run(
                "eval",
                "--adapter",
                str(multi),
                "--task",
                task,
                "--data",
                str(data),
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        assert via == pytest.approx(own, rel=1e-4)
    # Without --task, or with an unknown one, the error lists the tasks.
    missing = _run(
        "predict", "--adapter", str(multi), "--text", "x", check=False
    )
    assert missing.returncode == 2 and "sentiment, length" in missing.stderr
    # The composed run grows and shrinks by task (refusals such as repeated
    # names: tests/test_compose.py).
    grown = json.loads(
        _run(
            "compose",
            "--adapter",
            str(multi),
            "--adapter",
            f"again={sentiment}",
            "--drop",
            "length",
            "--out",
            str(tmp_path / "grown"),
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert grown["tasks"] == ["sentiment", "again"]
    if keras.backend.backend() != "torch":
        _run("export", "--adapter", str(multi), "--out", str(tmp_path / "sm"))
        import tensorflow as tf

        signatures = tf.saved_model.load(str(tmp_path / "sm")).signatures
        inputs = signatures["serving_default"].structured_input_signature[1]
        assert "task" in inputs and "task_id" not in inputs


def test_launcher_asks_for_the_quiet_start_unless_verbose(monkeypatch):
    import keras_adalink_launcher

    for argv, quiet in ((["--help"], "1"), (["--verbose", "--help"], None)):
        monkeypatch.delenv("KERAS_ADALINK_QUIET_START", raising=False)
        with pytest.raises(SystemExit):
            keras_adalink_launcher.main(argv)
        assert os.environ.get("KERAS_ADALINK_QUIET_START") == quiet
