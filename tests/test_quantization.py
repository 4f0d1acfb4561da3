"""Quantized frozen backbones and rematerialised blocks (`adapt(quantize=,
remat=)`): only the adapter (and head) trains, the quantized weights stay
bit-identical, files round-trip, generate() follows teacher forcing, and
remat trains exactly like no remat."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink import graph
from keras_adalink.heads import mean_pooled_classifier
from keras_adalink.quantization import quantization_modes
from keras_adalink.sites.rule import blocks
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import VOCAB
from tests.fixtures.encoders import backbone_inputs
from tests.fixtures.families import build

MODES = ["int8", "int4", "float8"]
# One family per kind: encoder, decoder LM, seq2seq LM, vision, multimodal.
KINDS = ["BertBackbone", "LlamaBackbone", "BartBackbone", "ViTBackbone"]
KINDS += ["PaliGemmaBackbone"]


def _flat(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(to_numpy(outputs))]


def _inputs(model, batch=2, seq=8, seed=0):
    rng = np.random.default_rng(seed)
    spec = model.input
    if not isinstance(spec, dict):
        return rng.uniform(size=(batch, *spec.shape[1:])).astype("float32")
    x = {}
    for name, tensor in spec.items():
        shape = (batch, *[d or seq for d in tensor.shape[1:]])
        if name.endswith("token_ids"):
            x[name] = rng.integers(1, 40, size=shape).astype("int32")
        elif name.endswith("padding_mask"):
            x[name] = np.ones(shape, "int32")
        elif "float" in str(tensor.dtype):
            x[name] = rng.uniform(size=shape).astype("float32")
        else:
            x[name] = np.zeros(shape, "int32")
    return x


def _frozen_values(model):
    return {v.path: np.array(to_numpy(v)) for v in model.weights}


# Every mode on the encoder, int8 on one family of each other kind (the CI
# budget: each case compiles a train step and two round trips).
CASES = [("BertBackbone", mode) for mode in MODES]
CASES += [(name, "int8") for name in KINDS[1:]]
# Modes that calibrate on text, on a tiny GPT-2 from a preset folder.
CALIBRATED = ("GPT2Backbone", ["gptq", "awq"])


def tested_modes():
    """`{family: [modes]}` the adapter alone trains with here, on the
    family's quantized backbone (the coverage page's "quantized" column)."""
    found = {}
    for name, mode in CASES:
        found.setdefault(name, []).append(mode)
    found.setdefault(CALIBRATED[0], []).extend(CALIBRATED[1])
    return found


@pytest.mark.parametrize("name,mode", CASES)
def test_quantized_base_trains_the_adapter_alone(name, mode, tmp_path):
    model = build(name)
    backbone = getattr(model, "backbone", model)
    x = _inputs(model)
    adapted = keras_adalink.adapt(model, rank=2, quantize=mode, dropout=0.0)
    assert mode in quantization_modes(backbone)
    inner = _adalink_backbone(adapted)
    # Identity at init: the adapted model is the quantized model.
    for want, have in zip(_flat(backbone(x)), _flat(inner(x))):
        np.testing.assert_allclose(have, want, atol=1e-5)
    frozen = _frozen_values(backbone)
    assert {v.path for v in inner.trainable_weights} == {
        "adalink/adalink_down",
        "adalink/adalink_up",
    } or all("adalink" in v.path for v in inner.trainable_weights)
    # Train the adapter through Keras' own `fit`, on every float output.
    randomize_adapter(inner, scale=0.1)
    variables = inner.trainable_weights
    before = [np.array(to_numpy(v)) for v in variables]
    fit_on_every_output(inner, x)
    after = [np.array(to_numpy(v)) for v in variables]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    for path, value in _frozen_values(backbone).items():
        np.testing.assert_array_equal(value, frozen[path], err_msg=path)
    fresh = keras_adalink.adapt(model, rank=2, dropout=0.0)
    check_round_trips(inner, _adalink_backbone(fresh), x, tmp_path)


def _adalink_backbone(model):
    if isinstance(model, keras_adalink.AdaLinkBackbone):
        return model
    return model.backbone


def fit_on_every_output(model, x, epochs=2):
    """SGD steps of `model.fit` on every float output."""
    outputs = [
        o for o in keras.tree.flatten(model.output) if "float" in str(o.dtype)
    ]
    # The first feature only: a LayerNorm's output has a constant mean
    # (and mean square) over its features, which no adapter could move.
    means = [
        keras.ops.mean(
            keras.ops.cast(o[..., 0], "float32"), tuple(range(1, o.ndim - 1))
        )
        if o.ndim > 2
        else keras.ops.cast(o[..., 0], "float32")
        for o in outputs
    ]
    trainer = keras.Model(model.input, keras.ops.stack(means, axis=1))
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    batch = len(keras.tree.flatten(x)[0])
    target = np.ones((batch, len(means)), "float32")
    trainer.fit(x, target, batch_size=batch, epochs=epochs, verbose=0)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_lm_generate_follows_teacher_forcing(mode):
    prompt_length = 3
    lm = keras_adalink.adapt(
        build("LlamaBackbone"), rank=2, num_tasks=2, dropout=0.0, quantize=mode
    )
    randomize_adapter(lm, scale=1.0)
    lm.compile(sampler="greedy")
    x = _inputs(lm, batch=2)
    x["token_ids"][:, prompt_length:] = 0
    x["padding_mask"][:, prompt_length:] = 0
    task_id = np.array([1, 0], "int32")
    x.pop("task_id", None)
    out = lm.generate({**x, "task_id": task_id}, stop_token_ids=None)
    tokens = np.asarray(out["token_ids"])
    full = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    logits = to_numpy(lm({**full, "task_id": task_id}))
    np.testing.assert_array_equal(
        tokens[:, prompt_length:],
        np.argmax(logits[:, prompt_length - 1 : -1], -1),
    )


def test_adapter_file_of_a_quantized_base_refuses_a_float_base(tmp_path):
    backbone = BACKBONES["bert"]()
    twin = BACKBONES["bert"]()
    twin.set_weights(backbone.get_weights())
    adapted = keras_adalink.adapt(backbone, rank=2, quantize="int8")
    path = tmp_path / "a.safetensors"
    keras_adalink.save_adapter(adapted, path)
    with pytest.raises(ValueError, match="quantization"):
        keras_adalink.load_adapter(keras_adalink.adapt(twin, rank=2), path)


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_remat_trains_exactly_like_without(quantize):
    """`fit` with remat gives the same losses and adapter/head weights after
    three steps as without (1e-5), on a float and an int8 base."""
    runs = []
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=VOCAB,
            max_sequence_length=12,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            dropout=0.0,  # remat runs frozen blocks without dropout
        )
        x = backbone_inputs(backbone, batch=8)
        y = np.arange(8) % 2
        adapted = keras_adalink.adapt(
            backbone, rank=2, dropout=0.0, quantize=quantize, remat=remat
        )
        found = blocks(backbone)
        assert len(found) == 2
        assert all(graph.is_rematerialized(b) == remat for b in found)
        model = mean_pooled_classifier(adapted, 2)
        frozen = _frozen_values(backbone)
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(
            x, y, batch_size=4, epochs=3, shuffle=False, verbose=0
        )
        # `fit` trains the adapter and head; the base (quantized kernels and
        # scales included) stays bit-identical.
        assert sorted(v.path for v in model.trainable_weights) == [
            "adalink/adalink_down",
            "adalink/adalink_up",
            "head/bias",
            "head/kernel",
        ]
        for path, value in _frozen_values(backbone).items():
            np.testing.assert_array_equal(value, frozen[path], err_msg=path)
        weights = [np.array(to_numpy(v)) for v in model.trainable_weights]
        runs.append((history.history["loss"], weights))
    (loss, weights), (remat_loss, remat_weights) = runs
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-5)
    assert not np.allclose(weights[0], 0)  # W_down moved.
    for want, have in zip(weights, remat_weights):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


def test_bad_quantize_arguments_leave_the_model_unchanged():
    backbone = BACKBONES["bert"]()
    with pytest.raises(ValueError, match="must be one of"):
        keras_adalink.adapt(backbone, quantize="int3")
    with pytest.raises(ValueError, match="GPTQConfig"):
        keras_adalink.adapt(backbone, quantize="gptq")
    assert not quantization_modes(backbone) and backbone.trainable
    backbone.quantize("int8")
    with pytest.raises(ValueError, match="already quantized"):
        keras_adalink.adapt(backbone, quantize="int4")
    assert set(quantization_modes(backbone)) == {"int8"}
    assert backbone.trainable
    # Quantized by the user: adapted as it is.
    adapted = keras_adalink.adapt(backbone, rank=2)
    assert isinstance(adapted, keras_adalink.AdaLinkBackbone)


@pytest.mark.parametrize("mode", CALIBRATED[1])
def test_calibrated_modes_train_the_adapter_alone(mode, tmp_path):
    """GPTQ and AWQ (Keras' LoRA has no term for either) calibrate block by
    block on text through the structure keras_adalink reads off the
    backbone; then only the adapter trains and every quantized weight stays
    bit-identical."""
    from tests.fixtures import presets

    keras.utils.set_random_seed(0)
    lm = keras_hub.models.GPT2CausalLM.from_preset(
        presets.gpt2(str(tmp_path / "gpt2"))
    )
    config = {
        "gptq": keras.quantizers.GPTQConfig,
        "awq": keras.quantizers.AWQConfig,
    }
    config = config[mode](
        dataset=["good film is red", "bad plot no blue", "yes good film"] * 2,
        tokenizer=lm.preprocessor.tokenizer,
        num_samples=4,
        sequence_length=8,
        group_size=8,
    )
    adapted = keras_adalink.adapt(lm, rank=2, quantize=config)
    frozen = adapted.backbone.backbone
    assert set(quantization_modes(frozen)) == {mode}
    randomize_adapter(adapted)
    before = _frozen_values(frozen)
    adapter = [np.array(to_numpy(v)) for v in adapted.trainable_weights]
    assert {v.path for v in adapted.trainable_weights} == {
        "adalink/adalink_down",
        "adalink/adalink_up",
    }
    adapted.preprocessor = None
    adapted.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ids = np.array([[1, 2, 3, 4, 5, 6]], "int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    adapted.fit(x, np.roll(ids, -1, axis=1), epochs=1, verbose=0)
    for path, value in _frozen_values(frozen).items():
        np.testing.assert_array_equal(before[path], value, path)
    after = [np.array(to_numpy(v)) for v in adapted.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(adapter, after))


def test_calibrated_mode_on_a_model_without_token_lookup_is_refused():
    vit = build("ViTBackbone")
    config = keras.quantizers.GPTQConfig(dataset=["a"], tokenizer=lambda t: t)
    with pytest.raises(ValueError, match="calibrate on token ids"):
        keras_adalink.adapt(vit, quantize=config)
    assert not quantization_modes(vit)
