import numpy as np
import pytest

from keras_adalink import datasets


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
