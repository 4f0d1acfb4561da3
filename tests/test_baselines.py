"""The comparison methods: prompt tuning and Keras LoRA."""

import keras
import numpy as np
import pytest

from keras_adalink import baselines
from keras_adalink.heads import mean_pooled_classifier
from tests.fixtures.checks import to_numpy
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs


def _fit_changes_only_trainable(model, x):
    before = {v.path: np.array(to_numpy(v)) for v in model.weights}
    trainable = {v.path for v in model.trainable_weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    y = np.ones((len(x["padding_mask"]), 2), "float32")
    model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    for v in model.weights:
        changed = not np.array_equal(before[v.path], to_numpy(v))
        assert changed == (v.path in trainable), v.path


@pytest.mark.parametrize("bottleneck", [None, 8])
def test_prompt_tuning_keeps_length_and_trains_only_the_prompt(bottleneck):
    backbone = BACKBONES["bert"]()
    prompted = baselines.prompt_tuning(backbone, 5, bottleneck=bottleneck)
    x = backbone_inputs(backbone)
    out, ref = to_numpy(prompted(x)), to_numpy(backbone(x))
    assert out["sequence_output"].shape == ref["sequence_output"].shape
    # The prompt changes the outputs; the backbone is frozen.
    assert not np.allclose(out["sequence_output"], ref["sequence_output"])
    assert not backbone.trainable_weights
    assert all("soft_prompt" in v.path for v in prompted.trainable_weights)
    expected = 5 * 16 + (16 * 8 + 8 + 8 * 16 + 16 + 2 * 16 if bottleneck else 0)
    assert sum(int(np.prod(v.shape)) for v in prompted.trainable_weights) == (
        expected
    )
    model = mean_pooled_classifier(prompted, 2)
    _fit_changes_only_trainable(model, x)


def test_prompt_tokens_are_attended_and_padding_stays_masked():
    backbone = BACKBONES["bert"]()
    prompted = baselines.prompt_tuning(backbone, 3, bottleneck=None)
    x = backbone_inputs(backbone, batch=1)
    x["padding_mask"][:, 6:] = 0
    other = {k: v.copy() for k, v in x.items()}
    other["token_ids"][:, 6:] = 7  # Different ids under the padding.
    a = to_numpy(prompted(x))["sequence_output"][:, :6]
    b = to_numpy(prompted(other))["sequence_output"][:, :6]
    np.testing.assert_allclose(a, b, atol=1e-5)
    # The (extended) mask lets real tokens attend to the prompt.
    prompted.prompt.prompt.assign(np.zeros((3, 16), "float32"))
    c = to_numpy(prompted(x))["sequence_output"][:, :6]
    assert not np.allclose(a, c, atol=1e-4)


def test_prompt_tuning_round_trips_as_keras(tmp_path):
    backbone = BACKBONES["bert"]()
    prompted = baselines.prompt_tuning(backbone, 4, bottleneck=8)
    x = backbone_inputs(backbone)
    prompted.save(tmp_path / "p.keras")
    loaded = keras.saving.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(
        to_numpy(loaded(x))["sequence_output"],
        to_numpy(prompted(x))["sequence_output"],
        atol=1e-6,
    )


@pytest.mark.parametrize("targets,per_block", [("query_value", 2), ("all", 6)])
def test_lora_targets(targets, per_block):
    backbone = BACKBONES["bert"]()
    baselines.lora(backbone, rank=2, targets=targets)
    lora_weights = backbone.trainable_weights
    assert all("lora" in v.path for v in lora_weights)
    assert len(lora_weights) == 2 * per_block * 2  # blocks * layers * (A, B)
    model = mean_pooled_classifier(backbone, 2)
    _fit_changes_only_trainable(model, backbone_inputs(backbone))


def test_lora_unknown_targets_rejected():
    with pytest.raises(ValueError, match="query_value"):
        baselines.lora(BACKBONES["bert"](), rank=2, targets="mlp")
