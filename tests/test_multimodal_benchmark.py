"""The multimodal benchmark's model: adapters sit where the issue says."""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

# The benchmark script runs on jax (its committed results are jax runs); the
# library pieces it uses are tested on every backend elsewhere.
pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="benchmarks/multimodal.py is run and checked on jax",
    ),
]

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


@pytest.fixture(scope="module")
def multimodal():
    sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(
        "multimodal_benchmark", os.path.join(BENCHMARKS, "multimodal.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(BENCHMARKS)


BERT = dict(
    vocabulary_size=50,
    num_layers=2,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
    max_sequence_length=32,
)


def _parts(module, tmp_path):
    import keras_hub

    config = keras_hub.models.BertBackbone(**BERT).get_config()
    keras.utils.set_random_seed(0)
    parts = module.Parts(config)
    path = str(tmp_path / "base.npz")
    parts.save(path)
    return config, path


def _inputs(module, batch=3, seq=6):
    rng = np.random.default_rng(0)
    size = module.IMAGE_SIZE
    return {
        "images": rng.random((batch, size, size, 3)).astype("float32"),
        "token_ids": rng.integers(1, 50, (batch, seq)).astype("int32"),
        "padding_mask": np.ones((batch, seq), "int32"),
    }


@pytest.mark.parametrize(
    "kind, options, adapter_params",
    [
        ("modality", {"rank": 4}, 2 * 2 * 16 * 4),
        ("unified", {"rank": 8}, 2 * 16 * 8),
        ("head", {}, 0),
    ],
)
def test_adapters_start_at_the_base_model_and_train_alone(
    multimodal, tmp_path, kind, options, adapter_params
):
    config, path = _parts(multimodal, tmp_path)
    x = _inputs(multimodal)
    base = multimodal.Parts(config)
    base.load(path)
    reference = multimodal.build_model(base, 2)
    parts = multimodal.Parts(config)
    parts.load(path)
    model = multimodal.adapted_model(parts, kind, options)
    head = reference.get_layer("head").get_weights()
    model.get_layer("head").set_weights(head)
    # Zero-initialised up-projections: the adapted model is the base model.
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        reference.predict(x, verbose=0),
        atol=1e-5,
    )
    head = 16 * 2 + 2
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == adapter_params + head
    frozen = [np.array(w) for w in parts.bert.weights + parts.vit.weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1, 0]), epochs=2, verbose=0)
    for before, after in zip(frozen, parts.bert.weights + parts.vit.weights):
        np.testing.assert_array_equal(before, np.array(after))


def test_modality_router_sees_image_tokens_first(multimodal, tmp_path):
    config, path = _parts(multimodal, tmp_path)
    parts = multimodal.Parts(config)
    parts.load(path)
    model = multimodal.adapted_model(parts, "modality", {"rank": 2})
    router = model.get_layer("adalink")
    assert router.modality_lengths == [multimodal.IMAGE_TOKENS, None]
    assert router.modalities == ["image", "text"]
