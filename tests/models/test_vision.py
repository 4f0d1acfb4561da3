"""AdaLink on KerasHub's ViT: patch embeddings (with class token) adapted."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink import AdaLinkBackbone
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.vision import vit as _vit


def _images(batch=2):
    rng = np.random.default_rng(0)
    return rng.random((batch, 16, 16, 3)).astype("float32")


def test_vit_defaults_to_block_input_and_is_identity_at_init():
    backbone = _vit()
    adapted = keras_adalink.adapt(backbone, rank=2)
    assert isinstance(adapted, AdaLinkBackbone)
    assert adapted.insertion == "block_input"
    x = _images()
    np.testing.assert_allclose(
        to_numpy(adapted(x)), to_numpy(backbone(x)), atol=1e-6
    )
    randomize_adapter(adapted)
    assert not np.allclose(to_numpy(adapted(x)), to_numpy(backbone(x)))


def test_vit_adapter_acts_on_class_token_and_patches():
    backbone = _vit()
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    randomize_adapter(adapted)
    x = _images()
    embeddings = backbone.get_layer("vit_patching_and_embedding")(x)
    assert tuple(embeddings.shape) == (2, 17, 16)  # class token + 16 patches
    expected = backbone.get_layer("vit_encoder")(adapted.adapter(embeddings))
    np.testing.assert_allclose(
        to_numpy(adapted(x)), to_numpy(expected), atol=1e-5
    )


def test_vit_token_embedding_point_refused_clearly():
    with pytest.raises(ValueError, match="ViTBackbone.*block_input"):
        keras_adalink.adapt(_vit(), rank=2, insertion="token_embedding")


def test_vit_image_classifier_fit_save_load(tmp_path):
    classifier = keras_hub.models.ViTImageClassifier(
        _vit(), num_classes=3, preprocessor=None
    )
    x = _images(4)
    before = classifier.predict(x, verbose=0)
    adapted = keras_adalink.adapt(classifier, rank=2)
    np.testing.assert_allclose(adapted.predict(x, verbose=0), before, atol=1e-6)
    adapted.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    adapted.fit(x, np.array([0, 1, 2, 1]), epochs=2, verbose=0)
    assert not np.allclose(adapted.predict(x, verbose=0), before)
    adapted.save(str(tmp_path / "vit.keras"))
    restored = keras.saving.load_model(str(tmp_path / "vit.keras"))
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), adapted.predict(x, verbose=0), atol=1e-5
    )
    keras_adalink.save_adapter(adapted, tmp_path / "vit.safetensors")
    fresh = keras_hub.models.ViTImageClassifier(
        keras_adalink.adapt(restored.backbone.backbone, rank=2),
        num_classes=3,
        preprocessor=None,
    )
    keras_adalink.load_adapter(fresh, tmp_path / "vit.safetensors")
    np.testing.assert_allclose(
        fresh.predict(x, verbose=0), adapted.predict(x, verbose=0), atol=1e-5
    )
