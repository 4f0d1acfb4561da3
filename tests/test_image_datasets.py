"""Offline image-text data: easy-vqa and Fashion-MNIST loaders."""

import gzip

import numpy as np
import pytest

from keras_adalink import image_datasets

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once


def test_easy_vqa_kinds_partition_the_split():
    yes_no = image_datasets.easy_vqa("test", kind="yes_no", image_size=32)
    open_ = image_datasets.easy_vqa("test", kind="open", image_size=32)
    assert len(yes_no["questions"]) + len(open_["questions"]) == 9673
    assert set(yes_no["answers"]) == {"yes", "no"}
    assert not {"yes", "no"} & set(open_["answers"])
    assert yes_no["images"].shape == (len(yes_no["answers"]), 32, 32, 3)
    assert yes_no["images"].dtype == np.float32
    assert 0.0 <= yes_no["images"].min() and yes_no["images"].max() <= 1.0


def test_easy_vqa_rows_match_their_images():
    full = image_datasets.easy_vqa("test", kind="open", image_size=64)
    half = image_datasets.easy_vqa("test", kind="open", image_size=32)
    np.testing.assert_array_equal(full["image_ids"], half["image_ids"])
    # Same image id -> same pixels; 32px is the 2x2 mean of 64px.
    first = np.flatnonzero(full["image_ids"] == full["image_ids"][0])
    assert len(first) > 1
    np.testing.assert_array_equal(
        full["images"][first[0]], full["images"][first[1]]
    )
    pooled = full["images"][0].reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(half["images"][0], pooled, atol=1e-6)


def test_question_kind_rejects_unknown_templates():
    assert image_datasets.question_kind("is there a red shape?") == "yes_no"
    assert image_datasets.question_kind("what color is the shape?") == "open"
    with pytest.raises(ValueError, match="not an easy-vqa"):
        image_datasets.question_kind("how many shapes?")


@pytest.mark.parametrize("bad", [{"split": "valid"}, {"kind": "counting"}])
def test_easy_vqa_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        image_datasets.easy_vqa(**bad)


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28))
    labels = np.array([9, 0, 3, 3, 1])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = image_datasets.fashion_mnist("test", 32, directory=str(tmp_path))
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(y, labels)
    # Zero-padded by 2 on each side, grey repeated over the channels.
    np.testing.assert_allclose(x[:, 2:30, 2:30, 1], images / 255.0, atol=1e-6)
    assert x[:, :2].max() == 0 and x[:, 30:].max() == 0
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install"):
        image_datasets.fashion_mnist("train", directory=str(tmp_path))
    with pytest.raises(ValueError, match="image_size"):
        image_datasets.fashion_mnist("train", image_size=16)
