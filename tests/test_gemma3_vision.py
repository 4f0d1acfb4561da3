"""Gemma3 with vision: image and text embeddings get their own modules."""

import keras
import keras_hub
import numpy as np
import pytest
from keras_hub.src.models.gemma3.gemma3_vision_encoder import (
    Gemma3VisionEncoder,
)

import keras_adalink
from tests.conftest import randomize_adapter
from tests.conftest import router_module
from tests.conftest import to_numpy

SEQ, IMAGE_TOKENS = 10, 4


def _backbone():
    vision = Gemma3VisionEncoder(
        image_size=16,
        patch_size=4,
        num_heads=2,
        hidden_dim=8,
        num_layers=1,
        intermediate_dim=16,
        output_dim=16,
        pool_size=2,
    )
    return keras_hub.models.Gemma3Backbone(
        vocabulary_size=40,
        image_size=16,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
        sliding_window_size=8,
        vision_encoder=vision,
    )


def _inputs(batch=2):
    rng = np.random.default_rng(0)
    start = 3  # image tokens at positions 3..6
    vision_mask = np.zeros((batch, SEQ), bool)
    vision_mask[:, start : start + IMAGE_TOKENS] = True
    return {
        "images": rng.random((batch, 1, 16, 16, 3)).astype("float32"),
        "token_ids": rng.integers(1, 40, (batch, SEQ)).astype("int32"),
        "padding_mask": np.ones((batch, SEQ), "int32"),
        "vision_indices": np.tile(
            np.arange(start, start + IMAGE_TOKENS), (batch, 1)
        ).astype("int32"),
        "vision_mask": vision_mask,
    }


def _manual(backbone, image_module, text_module, x):
    images = image_module(backbone.vision_encoder(x["images"]))
    text = text_module(backbone.token_embedding(x["token_ids"]))
    text = text * keras.ops.sqrt(float(backbone.hidden_dim))
    h = backbone.interleave_embeddings(
        image_embeddings=images,
        text_embeddings=text,
        vision_indices=x["vision_indices"],
    )
    for layer in backbone.transformer_layers:
        h = layer(
            h, padding_mask=x["padding_mask"], vision_mask=x["vision_mask"]
        )
    return to_numpy(backbone.layer_norm(h))


@pytest.mark.parametrize("unified", [False, True])
def test_image_and_text_modules(unified, tmp_path):
    backbone = _backbone()
    x = _inputs()
    before = to_numpy(backbone(x))
    adapted = keras_adalink.adapt(
        backbone,
        rank=2,
        modalities=["image", "text"],
        unified=unified,
        dropout=0.0,
    )
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    randomize_adapter(adapted, scale=0.3)
    router = adapted.adapter

    def module(i):
        return router_module(router, i)

    np.testing.assert_allclose(
        to_numpy(adapted(x)),
        _manual(backbone, module(0), module(0 if unified else 1), x),
        rtol=1e-4,
        atol=1e-4,
    )
    adapted.save(str(tmp_path / "g3.keras"))
    restored = keras.saving.load_model(str(tmp_path / "g3.keras"))
    np.testing.assert_allclose(
        to_numpy(restored(x)), to_numpy(adapted(x)), atol=1e-5
    )
