"""Offline image-text data for the multimodal evidence (docs/data.md).

easy-vqa (PyPI `easy-vqa`, installed by `make setup`) and Fashion-MNIST
(Debian package `dataset-fashion-mnist`, which `make setup` installs when it
can). Images come back as float32 `[N, size, size, 3]` in `[0, 1]`, the
layout KerasHub's image backbones take.
"""

import gzip
import os

import numpy as np

from keras_adalink.datasets import check_split

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
# easy-vqa's question templates, by the kind of answer they expect.
_VQA_KINDS = {
    "yes_no": ("is there", "does the", "is a", "is no"),
    "open": ("what is", "what shape", "what color"),
}


def _resize(images, size):
    """Area-averages or zero-pads square images to `size` (integer ratios)."""
    height = images.shape[1]
    if height > size:
        if height % size:
            raise ValueError(f"can't shrink {height}px images to {size}px")
        k = height // size
        shape = (len(images), size, k, size, k, images.shape[-1])
        return images.reshape(shape).mean(axis=(2, 4))
    pad = size - height
    before = pad // 2
    widths = ((0, 0), (before, pad - before), (before, pad - before), (0, 0))
    return np.pad(images, widths)


def question_kind(question):
    """`"yes_no"` or `"open"`: the kind of an easy-vqa question."""
    for kind, starts in _VQA_KINDS.items():
        if question.startswith(starts):
            return kind
    raise ValueError(f"not an easy-vqa question template: {question!r}")


def easy_vqa(split="train", kind=None, image_size=64):
    """easy-vqa questions with their images: a dict of numpy arrays.

    Keys: `images` (float32 `[N, image_size, image_size, 3]`, one row per
    question), `questions`, `answers` (str), `image_ids` (int). The package's
    own split: 4,000 train / 1,000 test images, 38,575 / 9,673 questions.

    Args:
        split: `"train"` or `"test"`.
        kind: `None` (every question), `"yes_no"` (`is there ...`,
            `does the image contain ...`, `is a/no ... present?`) or
            `"open"` (`what is the ... shape?`, `what shape/color ...`).
        image_size: int. Side in pixels: 64 (the originals) or a divisor.

    Example:
    >>> data = easy_vqa("test", kind="yes_no", image_size=32)
    >>> data["images"].shape[1:], sorted(set(data["answers"]))
    ((32, 32, 3), ['no', 'yes'])
    """
    try:
        import easy_vqa as package
    except ImportError:
        raise ImportError(
            "easy-vqa is not installed. Run `make setup` "
            "(pip install --no-deps easy-vqa==1.0)."
        ) from None
    from PIL import Image

    check_split(split, ("train", "test"))
    if kind not in (None, *_VQA_KINDS):
        raise ValueError(
            f"`kind` must be None or one of {list(_VQA_KINDS)}. "
            f"Received: kind={kind!r}"
        )
    questions, answers, image_ids = getattr(package, f"get_{split}_questions")()
    paths = getattr(package, f"get_{split}_image_paths")()
    keep = [
        i
        for i, q in enumerate(questions)
        if kind is None or question_kind(q) == kind
    ]
    image_ids = np.array([image_ids[i] for i in keep], dtype="int64")
    unique = np.unique(image_ids)
    pixels = np.stack(
        [np.asarray(Image.open(paths[i]).convert("RGB")) for i in unique]
    )
    pixels = _resize(pixels.astype("float32") / 255.0, image_size)
    return {
        "images": pixels[np.searchsorted(unique, image_ids)],
        "questions": np.array([questions[i] for i in keep], dtype=object),
        "answers": np.array([answers[i] for i in keep], dtype=object),
        "image_ids": image_ids,
    }


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)
    ]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split="train", image_size=32, directory=None):
    """Fashion-MNIST as `(images, labels)`, names in `FASHION_MNIST_CLASSES`.

    28x28 greyscale images, zero-padded to `image_size` and repeated over 3
    channels (float32 in `[0, 1]`); 60,000 train / 10,000 test.

    Args:
        split: `"train"` or `"test"`.
        image_size: int, at least 28.
        directory: folder with the four idx `.gz` files. Defaults to
            `$KERAS_ADALINK_FASHION_MNIST` or the Debian package's folder.

    Example:
    >>> images, labels = fashion_mnist("test")
    >>> images.shape, FASHION_MNIST_CLASSES[labels[0]]
    ((10000, 32, 32, 3), 'ankle boot')
    """
    check_split(split, ("train", "test"))
    if image_size < 28:
        raise ValueError(
            f"`image_size` must be >= 28. Received: image_size={image_size}"
        )
    directory = directory or os.environ.get(
        "KERAS_ADALINK_FASHION_MNIST", FASHION_MNIST_DIR
    )
    prefix = "train" if split == "train" else "t10k"
    paths = [
        os.path.join(directory, f"{prefix}-{part}-idx{n}-ubyte.gz")
        for part, n in (("images", 3), ("labels", 1))
    ]
    if not all(os.path.isfile(p) for p in paths):
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {directory}. Install it with "
            "`apt-get install dataset-fashion-mnist` (or point "
            "KERAS_ADALINK_FASHION_MNIST at the idx .gz files)."
        )
    images = _read_idx(paths[0]).astype("float32")[..., None] / 255.0
    images = np.repeat(_resize(images, image_size), 3, axis=-1)
    return images, _read_idx(paths[1]).astype("int32")
