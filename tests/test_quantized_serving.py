"""Serving adapters trained on quantized frozen backbones: `fold` into the
quantized table (Keras' own re-quantization), SavedModel export served by
TensorFlow, and `compose` of adapters trained on one quantized base."""

import re

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink.quantization import quantization_modes
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.composed import check_equal as _check_equal
from tests.fixtures.composed import task_model as _task_model
from tests.fixtures.decoders import CAUSAL_LMS
from tests.fixtures.decoders import lm_inputs
from tests.fixtures.decoders import tied_llama_lm
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs

# One tiny BERT quantized with every data-free mode Keras offers (Keras
# quantizes layer by layer): the token table and block 0 int4, block 1
# float8, the other tables and the pooler int8. One export, compose and fold
# then go through each mode's kernels (the CI budget: one model each).
_MODES = {
    "int4": r"token_embedding|transformer_layer_0",
    "float8": r"transformer_layer_1",
    "int8": r"position_embedding|segment_embedding|pooled_dense",
}
_TABLE = ("embeddings", "embeddings_scale", "embeddings_zero", "g_idx")


def mixed_backbone():
    backbone = BACKBONES["bert"]()
    for mode, paths in _MODES.items():
        # Keras' filters see leaf names (`query` in every block): by path.
        backbone.quantize(
            mode,
            filters=lambda layer, p=paths: any(
                re.match(p, v.path) for v in layer.weights
            ),
        )
    assert set(quantization_modes(backbone)) == set(_MODES)
    return backbone


def _max_abs(a, b):
    pairs = zip(
        keras.tree.flatten(to_numpy(a)), keras.tree.flatten(to_numpy(b))
    )
    return max(float(np.max(np.abs(u - v))) for u, v in pairs)


def _values(model):
    return [np.array(to_numpy(w)) for w in model.weights]


@pytest.mark.once
def test_fold_into_a_quantized_table():
    """An int4 table: fold refuses unless `requantize=True` (model
    unchanged); then the table is Keras' own quantization of the float
    fold, every other weight is the base's, and the folded model is far
    closer to the adapted one than the base is."""
    backbone = mixed_backbone()
    adapted = keras_adalink.adapt(backbone, rank=2)
    randomize_adapter(adapted, scale=0.3)
    x = backbone_inputs(backbone)
    expected = to_numpy(adapted(x))
    before = _values(adapted)
    with pytest.raises(ValueError, match="cannot be exact on this int4"):
        keras_adalink.fold(adapted)
    for want, have in zip(before, _values(adapted)):
        np.testing.assert_array_equal(have, want)
    folded = keras_adalink.fold(adapted, requantize=True)
    assert quantization_modes(folded) == quantization_modes(backbone)
    # Keras' own quantization of the table folded in float.
    table = backbone.token_embedding
    dequantized = to_numpy(table(np.arange(table.input_dim)))
    down, up = (to_numpy(w) for w in adapted.trainable_weights)
    reference = keras.layers.Embedding(table.input_dim, table.output_dim)
    reference.build()
    reference.embeddings.assign(
        dequantized + adapted.adapter.scale * (dequantized @ down) @ up
    )
    reference.quantize("int4", config=table.quantization_config)
    ours = {v.name: to_numpy(v) for v in folded.token_embedding.weights}
    assert len(reference.weights) == len(ours) == len(_TABLE)
    for v in reference.weights:
        np.testing.assert_array_equal(ours[v.name], to_numpy(v), v.name)
    base = {w.path: w for w in backbone.weights}
    assert sorted(base) == sorted(v.path for v in folded.weights)
    for v in folded.weights:
        if not v.path.startswith("token_embedding/"):
            np.testing.assert_array_equal(
                to_numpy(v), to_numpy(base[v.path]), v.path
            )
    error = _max_abs(folded(x), expected)
    assert error < 0.5 * _max_abs(backbone(x), expected)


@pytest.mark.once
def test_fold_unties_a_quantized_tied_lm_through_its_config():
    """A tied int8 Llama: the folded LM gets its own output table, Keras'
    quantization of the original table, which reproduces the original's
    int8 values and scales; logits stay close to the adapted LM's."""
    lm = tied_llama_lm()
    backbone = lm.backbone
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0, quantize="int8")
    randomize_adapter(adapted, scale=0.3)
    folded = keras_adalink.fold(adapted, requantize=True)
    embedding = folded.backbone.token_embedding
    original = backbone.token_embedding
    assert not embedding.tie_weights and embedding.quantization_mode == "int8"
    np.testing.assert_array_equal(
        to_numpy(embedding.reverse_embeddings), to_numpy(original._embeddings).T
    )
    np.testing.assert_allclose(
        to_numpy(embedding.reverse_embeddings_scale),
        to_numpy(original.embeddings_scale),
        rtol=1e-5,
    )
    x = lm_inputs()
    expected = to_numpy(adapted(x))
    assert _max_abs(folded(x), expected) < 0.5 * _max_abs(lm(x), expected)


@pytest.mark.once
@pytest.mark.parametrize("mode", ["int8", "float8"])
def test_fold_on_a_hard_tied_quantized_lm(mode):
    """Gemma ties its tables in its constructor: a float8 base keeps a float
    table, so the fold unties in place and is exact; an int8 table cannot
    be untied in place and is refused, the model unchanged."""
    lm = CAUSAL_LMS["gemma"]()
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0, quantize=mode)
    randomize_adapter(adapted, scale=0.3)
    if mode == "int8":
        with pytest.raises(ValueError, match="fold on the float backbone"):
            keras_adalink.fold(adapted, requantize=True)
        assert lm.backbone.token_embedding.tie_weights
        return
    folded = keras_adalink.fold(adapted)
    assert quantization_modes(folded) == quantization_modes(lm)
    assert not folded.backbone.token_embedding.tie_weights
    x = lm_inputs()
    assert _max_abs(folded(x), adapted(x)) < 1e-5


needs_saved_model = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="SavedModel export runs on jax and tensorflow (torch: ONNX)",
)


@needs_saved_model
def test_quantized_base_exports_a_saved_model(tmp_path):
    """Reloaded by TensorFlow, the SavedModel of a classifier adapted on the
    int4/int8/float8 base serves its outputs (dynamic batch and length)."""
    import tensorflow as tf

    task = keras_hub.models.BertTextClassifier(
        mixed_backbone(), num_classes=3, preprocessor=None
    )
    adapted = keras_adalink.adapt(task, rank=2, num_tasks=2)
    randomize_adapter(adapted)
    keras_adalink.export_saved_model(adapted, tmp_path / "m")
    serve = tf.saved_model.load(str(tmp_path / "m")).signatures[
        "serving_default"
    ]
    for batch, seq in [(3, 12), (2, 7)]:
        x = backbone_inputs(adapted, batch=batch, seq=seq, num_tasks=2)
        (served,) = serve(**{k: tf.constant(v) for k, v in x.items()}).values()
        np.testing.assert_allclose(
            served.numpy(), to_numpy(adapted(x)), rtol=1e-5, atol=1e-5
        )


@pytest.mark.end_to_end
def test_adapters_of_a_quantized_base_compose():
    """Two adapters (and heads) on one int4/int8/float8 backbone: each
    example of a mixed batch gets its own single-task model's output.
    jax only (CI budget): compose shares the backbone and never touches
    its quantized layers, whose forward pass test_quantization.py checks
    on every backend."""
    backbone = mixed_backbone()
    singles = [
        _task_model(backbone, 2, width, seed)
        for seed, width in [(0, 2), (1, 3)]
    ]
    multi = keras_adalink.compose({"a": singles[0], "b": singles[1]})
    assert set(quantization_modes(multi)) == set(_MODES)
    x = backbone_inputs(backbone, batch=6)
    _check_equal(multi, singles, x, np.array([1, 0, 0, 1, 1, 0], "int32"))
