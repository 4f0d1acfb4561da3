"""Adapted models as presets: whole (`save_to_preset`) and adapter-only
(`save_adapter_preset`), loaded back with `keras_adalink.from_preset`."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures import presets
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy

TEXTS = ["good film", "bad plot is red"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny BERT preset folder (tokenizer, preprocessor, backbone)."""
    return presets.bert(str(tmp_path_factory.mktemp("base") / "bert"))


def _classifier(base):
    keras.utils.set_random_seed(0)
    model = keras_hub.models.BertTextClassifier.from_preset(
        base, num_classes=3, dropout=0.0
    )
    model.preprocessor.sequence_length = 8
    adapted = keras_adalink.adapt(model, rank=2, num_tasks=2, dropout=0.0)
    randomize_adapter(adapted)
    head = adapted.get_layer("logits")
    head.kernel.assign(np.random.default_rng(1).normal(size=head.kernel.shape))
    return adapted


def _out(model, x):
    return to_numpy(model(x))  # The model alone (predict would preprocess).


def _features(model):
    x = to_numpy(model.preprocessor(TEXTS))
    return {**x, "task_id": np.array([0, 1], "int32")}


def test_whole_adapted_task_round_trips(base, tmp_path):
    adapted = _classifier(base)
    x = _features(adapted)
    expected = _out(adapted, x)
    adapted.save_to_preset(str(tmp_path / "whole"))
    loaded = keras_adalink.from_preset(str(tmp_path / "whole"))
    assert type(loaded) is keras_hub.models.BertTextClassifier
    assert isinstance(loaded.backbone, keras_adalink.AdaLinkBackbone)
    np.testing.assert_allclose(_out(loaded, x), expected, atol=1e-5)
    # Its preprocessor came back too.
    assert loaded.preprocessor.sequence_length == 8
    trainable = {v.path for v in loaded.trainable_weights}
    assert trainable and not any("transformer" in p for p in trainable)


def test_whole_adapted_backbone_round_trips(base, tmp_path):
    backbone = keras_hub.models.BertBackbone.from_preset(base)
    adapted = keras_adalink.adapt(backbone, rank=2)
    randomize_adapter(adapted)
    x = {
        k: v for k, v in _features(_classifier(base)).items() if k != "task_id"
    }
    expected = to_numpy(adapted(x))
    adapted.save_to_preset(str(tmp_path / "backbone"))
    for loaded in (
        keras_adalink.from_preset(str(tmp_path / "backbone")),
        keras_hub.models.Backbone.from_preset(str(tmp_path / "backbone")),
    ):
        assert isinstance(loaded, keras_adalink.AdaLinkBackbone)
        got = to_numpy(loaded(x))
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


def test_adapter_only_preset_rebuilds_from_the_base(base, tmp_path):
    adapted = _classifier(base)
    x = _features(adapted)
    expected = _out(adapted, x)
    folder = tmp_path / "adapter_only"
    keras_adalink.save_adapter_preset(adapted, str(folder), base=base)
    assert sorted(os.listdir(folder)) == [
        "adalink_preset.json",
        "adapter.safetensors",
    ]
    size = sum(os.path.getsize(folder / f) for f in os.listdir(folder))
    base_size = os.path.getsize(os.path.join(base, "model.weights.h5"))
    assert size < base_size / 2
    loaded = keras_adalink.from_preset(str(folder))
    assert type(loaded) is keras_hub.models.BertTextClassifier
    np.testing.assert_allclose(_out(loaded, x), expected, atol=1e-5)
    # base= overrides the recorded handle (a local copy, say).
    metadata = json.loads((folder / "adalink_preset.json").read_text())
    metadata["base"] = "hf://nobody/not-here"
    (folder / "adalink_preset.json").write_text(json.dumps(metadata))
    again = keras_adalink.from_preset(str(folder), base=base)
    np.testing.assert_allclose(_out(again, x), expected, atol=1e-5)
    # Offline, the recorded handle cannot load, and the error says so.
    with pytest.raises(ValueError, match="Could not load the base preset"):
        keras_adalink.from_preset(str(folder))


def test_adapter_preset_refuses_another_base(base, tmp_path):
    adapted = _classifier(base)
    folder = tmp_path / "adapter_only"
    keras_adalink.save_adapter_preset(adapted, str(folder), base=base)
    other = str(tmp_path / "other_base")
    keras.utils.set_random_seed(7)  # Same config, other weights.
    presets.bert(other)
    with pytest.raises(ValueError, match="another checkpoint"):
        keras_adalink.from_preset(str(folder), base=other)


def test_bad_input_writes_nothing(base, tmp_path):
    adapted = _classifier(base)
    plain = keras_hub.models.BertBackbone.from_preset(base)
    with pytest.raises(ValueError):
        keras_adalink.save_adapter_preset(plain, str(tmp_path / "a"), base=base)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="needs no base"):
        adapted.save_to_preset(str(tmp_path / "whole"))
        keras_adalink.from_preset(str(tmp_path / "whole"), base=base)
    with pytest.raises(ValueError, match="holds no adapted model"):
        keras_adalink.from_preset(base)
    # A handle goes through KerasHub's download path; offline it fails
    # with one error naming it.
    with pytest.raises(ValueError, match="Could not fetch the preset"):
        keras_adalink.from_preset("hf://nobody/not-here")


def test_composed_causal_lm_round_trips(tmp_path):
    """A composed model (a TaskRouter of separately trained adapters) is a
    KerasHub task too: whole-preset round trip, per-row tasks intact."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=40,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
    )
    lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    tasks = {}
    for seed, name in enumerate(("a", "b")):
        tasks[name] = keras_adalink.adapt(lm, rank=2, dropout=0.0)
        randomize_adapter(tasks[name], seed=seed)
    composed = keras_adalink.compose(tasks)
    ids = np.array([[1, 2, 3, 4], [1, 2, 3, 4]], "int32")  # Same tokens.
    x = {
        "token_ids": ids,
        "padding_mask": np.ones_like(ids, bool),
        "task_id": np.array([0, 1], "int32"),
    }
    expected = _out(composed, x)
    composed.save_to_preset(str(tmp_path / "composed"))
    loaded = keras_adalink.from_preset(str(tmp_path / "composed"))
    assert type(loaded) is keras_hub.models.GPT2CausalLM
    assert loaded.backbone.adapter.task_names == ["a", "b"]
    np.testing.assert_allclose(_out(loaded, x), expected, atol=1e-5)
    # Only the task differs between the rows, and it changes the output.
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
