"""`tfds:NAME` on a dataset built by tensorflow-datasets' own tooling.

A tiny `GeneratorBasedBuilder` is prepared with `download_and_prepare` into
a temporary data dir (no network); `read_rows` and the console script then
find it through `TFDS_DATA_DIR`, the console script in a process that never
defines the builder class (tfds reads the prepared files).
"""

import importlib.resources
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from keras_adalink import datasets

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once

tfds = pytest.importorskip(
    "tensorflow_datasets",
    reason="tensorflow-datasets is not installed (the `cv` extra)",
)

CLI = os.path.join(os.path.dirname(sys.executable), "keras-adalink")
NAME = "adalink_tiny_reviews"  # tfds' snake_case of the class name
SUBJECTS = ["the film", "the story", "the acting", "the music"]
GOOD = ["wonderful", "moving", "funny", "clever", "beautiful"]
BAD = ["dull", "clumsy", "boring", "tedious", "awful"]


def _examples(start, stop):
    """`(review, label)` pairs: label 1 for praise, 0 for complaint."""
    pairs = []
    for i in range(start, stop):
        label = i % 2
        adjective = (GOOD if label else BAD)[(i // 2) % 5]
        pairs.append((f"{SUBJECTS[i % 4]} was {adjective}", label))
    return pairs


SPLITS = {"train": _examples(0, 40), "test": _examples(40, 56)}


class AdalinkTinyReviews(tfds.core.GeneratorBasedBuilder):
    """Short English reviews, negative or positive."""

    VERSION = tfds.core.Version("1.0.0")
    built = False  # set once prepared: a reader must find the files

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "review": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(
                        names=["negative", "positive"]
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        if self.built:
            raise RuntimeError(
                f"{NAME} is being built again in {self.data_dir}: "
                "the reader did not find the prepared files"
            )
        return {
            split: self._generate_examples(pairs)
            for split, pairs in SPLITS.items()
        }

    def _generate_examples(self, pairs):
        for i, (review, label) in enumerate(pairs):
            yield i, {"review": review, "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    builder = AdalinkTinyReviews(data_dir=path)
    assert builder.name == NAME
    with pytest.MonkeyPatch.context() as patch:
        if importlib.util.find_spec("importlib_resources") is None:
            # tfds 4.9.10 imports the importlib_resources backport to build
            # a dataset without declaring it (tensorflow/datasets#11212);
            # the standard library's importlib.resources is the same API.
            # Reading a prepared dataset does not need it.
            stdlib = importlib.resources
            patch.setitem(sys.modules, "importlib_resources", stdlib)
        builder.download_and_prepare()
    AdalinkTinyReviews.built = True
    return path


def _sorted(rows):
    return sorted((row["review"], row["label"]) for row in rows)


def test_read_rows_decodes_text_and_labels(data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    for split, pairs in SPLITS.items():
        rows = datasets.read_rows(f"tfds:{NAME}", split)
        assert all(set(row) == {"review", "label"} for row in rows)
        assert all(type(row["review"]) is str for row in rows)
        assert all(type(row["label"]) is int for row in rows)
        assert _sorted(rows) == sorted(pairs)
    texts, labels = datasets.load_table(
        f"tfds:{NAME}", "review", "label", split="test"
    )
    assert sorted(zip(texts, labels)) == [
        (text, str(label)) for text, label in sorted(SPLITS["test"])
    ]


def test_unknown_name_names_the_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    with pytest.raises(
        ValueError, match="'adalink_no_such_set' not found"
    ) as error:
        datasets.read_rows("tfds:adalink_no_such_set")
    assert data_dir in str(error.value)


@pytest.mark.end_to_end
@pytest.mark.slow
def test_train_from_tfds_name(data_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TFDS_DATA_DIR": data_dir}

    def run(*args):
        result = subprocess.run(
            [CLI, *args], capture_output=True, text=True, timeout=900, env=env
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run(
        "train", "--data", f"tfds:{NAME}", "--val-data", f"tfds:{NAME}",
        "--val-split", "test", "--text-column", "review",
        "--label-column", "label", "--task", "classification",
        "--rank", "2", "--max-steps", "2", "--sequence-length", "16",
        "--batch-size", "8", "--out", str(out),
    )  # fmt: skip
    assert (out / "adapter.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 2
    spec = json.loads((out / "run.json").read_text())
    assert spec["labels"] == ["0", "1"]
    # `eval` reads the test split by default: the 16 validation rows.
    evaluated = run("eval", "--adapter", str(out), "--data", f"tfds:{NAME}")
    accuracy = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert accuracy == pytest.approx(metrics["validation"], abs=1e-6)
    assert len(metrics["history"]["val_accuracy"]) == 1
