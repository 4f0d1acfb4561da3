"""Per-modality AdaLink on PaliGemma: image and text tokens, fit + generate."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.pali_gemma import PROMPT
from tests.fixtures.pali_gemma import SEQ
from tests.fixtures.pali_gemma import pali_gemma_inputs as _inputs
from tests.fixtures.pali_gemma import pali_gemma_lm as _lm


def _manual_forward(backbone, image_module, text_module, x):
    """The PaliGemma forward pass written out, adapters at both sites."""
    images = image_module(backbone.vit_encoder(x["images"]))
    text = text_module(backbone.token_embedding(x["token_ids"]))
    text = text * keras.ops.sqrt(float(backbone.hidden_dim))
    h = keras.ops.concatenate([images, text], axis=1)
    for layer in backbone.transformer_layers:
        h = layer(
            h, padding_mask=x["padding_mask"], response_mask=x["response_mask"]
        )
    return to_numpy(backbone.layer_norm(h))


@pytest.mark.parametrize("unified", [False, True])
def test_image_and_text_tokens_use_their_own_module(unified):
    lm = _lm()
    x = _inputs()
    before = to_numpy(lm(x))
    adapted = keras_adalink.adapt(
        lm, rank=2, modalities=["image", "text"], unified=unified, dropout=0.0
    )
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    randomize_adapter(adapted)
    router = adapted.backbone.adapter

    def module(i):
        return router_module(router, i)

    image_module = module(0)
    text_module = module(0 if unified else 1)
    np.testing.assert_allclose(
        to_numpy(adapted.backbone(x)),
        _manual_forward(lm.backbone, image_module, text_module, x),
        rtol=1e-4,
        atol=1e-4,
    )


def test_greedy_generate_runs_both_modules():
    lm = _lm()
    adapted = keras_adalink.adapt(
        lm, rank=2, modalities=["image", "text"], dropout=0.0
    )
    randomize_adapter(adapted, scale=1.0)
    prompt = _inputs()
    del prompt["response_mask"]
    prompt["padding_mask"][:, PROMPT:] = 0
    prompt["token_ids"][:, PROMPT:] = 0
    adapted.compile(sampler="greedy")
    tokens = np.asarray(
        adapted.generate(prompt, stop_token_ids=None)["token_ids"]
    )
    full = {
        "images": prompt["images"],
        "token_ids": tokens,
        "padding_mask": np.ones_like(tokens),
        # Prefix LM: the prompt attends bidirectionally, the answer causally.
        "response_mask": (np.arange(SEQ) >= PROMPT)[None].repeat(2, 0),
    }
    logits = to_numpy(adapted(full))
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )


def test_only_adapter_trains_and_files_round_trip(tmp_path):
    adapted = keras_adalink.adapt(_lm(), rank=2, modalities=["image", "text"])
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    x = _inputs()
    before = np.array(adapted.backbone.adapter.adalink_up.numpy())
    frozen = [np.array(v.numpy()) for v in adapted.backbone.backbone.weights]
    adapted.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    y = np.roll(x["token_ids"], -1, axis=1)
    adapted.fit(x, y, sample_weight=np.ones_like(y), epochs=2, verbose=0)
    after = adapted.backbone.adapter.adalink_up.numpy()
    assert not np.array_equal(before[0], after[0])  # image module trained
    assert not np.array_equal(before[1], after[1])  # text module trained
    for value, v in zip(frozen, adapted.backbone.backbone.weights):
        np.testing.assert_array_equal(value, v.numpy(), v.path)
    adapted.save(str(tmp_path / "pg.keras"))
    restored = keras.saving.load_model(str(tmp_path / "pg.keras"))
    np.testing.assert_allclose(
        to_numpy(restored(x)), to_numpy(adapted(x)), atol=1e-5
    )
    keras_adalink.save_adapter(adapted, tmp_path / "pg.safetensors")
    fresh = keras_hub.models.PaliGemmaCausalLM(
        backbone=keras_adalink.adapt(
            restored.backbone.backbone, rank=2, modalities=["image", "text"]
        ),
        preprocessor=None,
    )
    keras_adalink.load_adapter(fresh, tmp_path / "pg.safetensors")
    np.testing.assert_allclose(
        to_numpy(fresh(x)), to_numpy(adapted(x)), atol=1e-5
    )


def test_wrong_modality_names_refused():
    with pytest.raises(ValueError, match="'image' tokens.*\\['img', 'txt'\\]"):
        keras_adalink.adapt(_lm(), rank=2, modalities=["img", "txt"])


def test_default_is_one_module_per_modality():
    """The paper's method for a multimodal model: separate image and text
    modules, with no argument; `unified=True` is one shared module."""
    adapted = keras_adalink.adapt(_lm(), rank=2, dropout=0.0)
    router = adapted.backbone.adapter
    assert isinstance(router, keras_adalink.ModalityRouter)
    assert router.modalities == ["image", "text"] and not router.unified
    assert router.adalink_down.shape[0] == 2
    shared = keras_adalink.adapt(_lm(), rank=2, unified=True).backbone.adapter
    assert shared.unified and shared.modalities == ["image", "text"]
