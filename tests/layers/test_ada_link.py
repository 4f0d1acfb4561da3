import keras
import numpy as np
import pytest

from keras_adalink import AdaLink
from tests.fixtures.checks import run_layer_checks


def _x(shape=(4, 6, 8), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_standard_checks():
    run_layer_checks(AdaLink, {"rank": 2}, _x())


@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_formula(activation, scale):
    layer = AdaLink(rank=3, activation=activation, scale=scale, dropout=0.0)
    x = _x()
    layer(x)
    rng = np.random.default_rng(1)
    down = rng.normal(size=(8, 3)).astype("float32")
    up = rng.normal(size=(3, 8)).astype("float32")
    layer.adalink_down.assign(down)
    layer.adalink_up.assign(up)
    hidden = x @ down
    if activation == "gelu":
        hidden = keras.ops.convert_to_numpy(keras.activations.gelu(hidden))
    expected = x + scale * hidden @ up
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_token_mask_leaves_unselected_tokens_unchanged():
    layer = AdaLink(rank=2, dropout=0.0, activation="sigmoid")
    x = _x()
    layer(x)
    layer.adalink_up.assign(np.ones((2, 8), "float32"))
    mask = np.random.default_rng(2).random((4, 6)) > 0.5
    out = keras.ops.convert_to_numpy(layer(x, token_mask=mask))
    np.testing.assert_array_equal(out[~mask], x[~mask])
    assert not np.allclose(out[mask], x[mask])


def test_dropout_only_in_training():
    layer = AdaLink(rank=2, dropout=0.5)
    x = _x()
    layer(x)
    layer.adalink_up.assign(np.ones((2, 8), "float32"))
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(
        inference, keras.ops.convert_to_numpy(layer(x, training=False))
    )
    training = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(training, inference)


def test_mixed_precision_keeps_float32_weights():
    layer = AdaLink(rank=2, dtype="mixed_bfloat16")
    out = layer(_x())
    assert layer.adalink_down.dtype == "float32"
    assert layer.adalink_up.dtype == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"


def test_pure_bfloat16_policy_still_float32_weights():
    layer = AdaLink(rank=2, dtype="bfloat16")
    out = layer(_x().astype("float32"))
    assert layer.adalink_down.dtype == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"


def test_compute_output_shape():
    assert AdaLink(rank=2).compute_output_shape((None, 5, 8)) == (None, 5, 8)


@pytest.mark.parametrize("rank", [0, -1, 2.5, "4", True])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match="rank"):
        AdaLink(rank=rank)


def test_rank_larger_than_width():
    with pytest.raises(ValueError, match="rank.*width 8.*rank=9"):
        AdaLink(rank=9)(_x())


def test_width_mismatch_after_build():
    layer = AdaLink(rank=2)
    layer(_x())
    with pytest.raises(ValueError, match="expected axis -1.*value 8"):
        layer(_x((2, 3, 5)))


@pytest.mark.parametrize("dropout", [-0.1, 1.0, "x"])
def test_bad_dropout(dropout):
    with pytest.raises(ValueError, match="dropout"):
        AdaLink(rank=2, dropout=dropout)
