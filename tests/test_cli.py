"""The `keras-adalink` console script, driven as a user would."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_adalink import datasets

CLI = os.path.join(os.path.dirname(sys.executable), "keras-adalink")


def _run(*args, check=True):
    result = subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _write_csv(path, n, split):
    texts, labels = datasets.rotten_tomatoes(split)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for text, label in zip(texts[:n], labels[:n]):
            writer.writerow([text, ["rotten", "fresh"][label]])


@pytest.mark.parametrize(
    "command", ["train", "eval", "predict", "export", "demo"]
)
def test_help_with_examples(command):
    out = _run(command, "--help").stdout
    assert "usage: keras-adalink" in out
    assert "--" in out


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
        "--text-column",
        "text",
        "--label-column",
        "score",
        "--task",
        "regression",
        "--max-steps",
        "2",
        "--sequence-length",
        "16",
        "--learning-rate",
        "0.003",
        "--decay",
        "cosine",
        "--out",
        str(out),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["learning_rate"] == 0.003
    assert metrics["decay"] == "cosine"
    assert len(metrics["history"]["pearson"]) == 1
    assert -1 <= metrics["train"]["pearson"] <= 1
    assert (out / "learning_curve.png").stat().st_size > 1000
