import numpy as np
import pytest

from keras_adalink import datasets

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once


def test_rotten_tomatoes_split_fixed_disjoint_stratified():
    splits = {s: datasets.rotten_tomatoes(s) for s in datasets.RT_FRACTIONS}
    sizes = {s: len(texts) for s, (texts, _) in splits.items()}
    assert sizes == {"train": 10201, "validation": 1275, "test": 1276}
    seen = [set(texts.tolist()) for texts, _ in splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    for _texts, labels in splits.values():
        assert set(np.unique(labels)) == {0, 1}
        assert abs(labels.mean() - 0.578) < 0.005
    again_texts, again_labels = datasets.rotten_tomatoes("test")
    np.testing.assert_array_equal(again_texts, splits["test"][0])
    np.testing.assert_array_equal(again_labels, splits["test"][1])


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        datasets.rotten_tomatoes("dev")


def test_minilm_is_installed():
    path = datasets.minilm_path()
    assert open(f"{path}/config.json").read().count('"model_type": "bert"') == 1


@pytest.mark.parametrize(
    "corpus,total", [("movie_reviews", 10605), ("tweets", 4200)]
)
def test_vader_split_fixed_disjoint_complete(corpus, total):
    splits = {s: datasets.vader(corpus, s) for s in datasets.RT_FRACTIONS}
    sizes = [len(texts) for texts, _ in splits.values()]
    assert sum(sizes) == total
    assert sizes[0] == round(total * 0.8) and sizes[1] == round(total * 0.1)
    ids = [set(map(str, t)) for t, _ in splits.values()]
    assert not ids[1] & ids[2]
    for _texts, scores in splits.values():
        assert scores.dtype == np.float32
        assert -4 <= scores.min() < 0 < scores.max() <= 4
    again = datasets.vader(corpus, "test")
    np.testing.assert_array_equal(again[0], splits["test"][0])
    np.testing.assert_array_equal(again[1], splits["test"][1])


def test_vader_missing_archive_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.sys, "prefix", str(tmp_path))
    monkeypatch.setenv("KERAS_ADALINK_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip download"):
        datasets.vader("tweets")


def test_load_table_csv_tsv_jsonl(tmp_path):
    rows = [("good film", "pos", "1.5"), ("bad, long film", "neg", "-2")]
    (tmp_path / "d.csv").write_text(
        "text,label,score\n" + "\n".join(f'"{a}",{b},{c}' for a, b, c in rows)
    )
    (tmp_path / "d.tsv").write_text(
        "text\tlabel\tscore\n" + "\n".join("\t".join(r) for r in rows)
    )
    (tmp_path / "d.jsonl").write_text(
        "\n".join(
            f'{{"text": "{a}", "label": "{b}", "score": {c}}}'
            for a, b, c in rows
        )
    )
    for name in ("d.csv", "d.tsv", "d.jsonl"):
        texts, labels = datasets.load_table(tmp_path / name, "text", "label")
        assert texts.tolist() == ["good film", "bad, long film"]
        assert labels.tolist() == ["pos", "neg"]
        _, scores = datasets.load_table(
            tmp_path / name, "text", "score", task="regression"
        )
        np.testing.assert_array_equal(scores, np.float32([1.5, -2]))
    (firsts, seconds), _ = datasets.load_table(
        tmp_path / "d.csv", "text", "label", text_pair_column="label"
    )
    assert (firsts[0], seconds[0]) == ("good film", "pos")
    with pytest.raises(ValueError, match="available: text, label, score"):
        datasets.load_table(tmp_path / "d.csv", "review", "label")
    with pytest.raises(ValueError, match="not numeric"):
        datasets.load_table(tmp_path / "d.csv", "text", "label", "regression")


def test_load_table_tfds_names(monkeypatch):
    calls = []

    class FakeTfds:
        @staticmethod
        def load(name, split):
            calls.append((name, split))
            return [{"text": np.array(b"fine"), "label": np.array(1)}]

        @staticmethod
        def as_numpy(data):
            return data

    monkeypatch.setitem(datasets.sys.modules, "tensorflow_datasets", FakeTfds)
    texts, labels = datasets.load_table(
        "tfds:imdb_reviews", "text", "label", split="test"
    )
    assert calls == [("imdb_reviews", "test")]
    assert texts.tolist() == ["fine"] and labels.tolist() == ["1"]
    monkeypatch.setitem(datasets.sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="tensorflow-datasets"):
        datasets.load_table("tfds:imdb_reviews", "text", "label")


def test_featurize_pairs_use_the_preprocessors_pair_input():
    import keras_hub

    # BERT (MiniLM's own vocabulary): [CLS] a [SEP] b [SEP], segments 0/1.
    path = datasets.minilm_path()
    bert = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer.from_preset(path), sequence_length=10
    )
    x = datasets.featurize(bert, (["good film"], ["pos"]))
    # [CLS]=101 good=2204 film=2143 [SEP]=102 po=13433 ##s=2015 [SEP]=102
    assert x["token_ids"][0].tolist() == [
        101, 2204, 2143, 102, 13433, 2015, 102, 0, 0, 0,
    ]  # fmt: skip
    assert x["segment_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert x["padding_mask"][0].tolist() == [1] * 7 + [0] * 3
    # RoBERTa: <s> a </s></s> b </s>, no segment ids.
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<mask>": 3}
    vocabulary.update({"a": 4, "b": 5, "Ġ": 6, "Ġb": 7})
    roberta = keras_hub.models.RobertaTextClassifierPreprocessor(
        keras_hub.models.RobertaTokenizer(
            vocabulary=vocabulary, merges=["Ġ b"]
        ),
        sequence_length=10,
    )
    x = datasets.featurize(roberta, (["a"], ["b a"]))
    assert x["token_ids"][0].tolist() == [0, 4, 2, 2, 5, 6, 4, 2, 1, 1]
    assert "segment_ids" not in x
    with pytest.raises(ValueError, match="two equally long"):
        datasets.featurize(bert, (["a", "b"], ["c"]))
