"""Gemma3 with vision: image and text embeddings get their own modules."""

import keras
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.gemma3_vision import gemma3_vision_backbone as _backbone
from tests.fixtures.gemma3_vision import gemma3_vision_inputs as _inputs


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
