import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink import AdaLinkBackbone
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs

INSERTIONS = ["token_embedding", "block_input"]


@pytest.mark.parametrize("insertion", INSERTIONS)
def test_identity_at_init_every_family(family, insertion):
    backbone = BACKBONES[family]()
    adapted = keras_adalink.adapt(backbone, rank=2, insertion=insertion)
    assert isinstance(adapted, AdaLinkBackbone)
    x = backbone_inputs(backbone)
    expected, got = to_numpy(backbone(x)), to_numpy(adapted(x))
    for want, have in zip(
        keras.tree.flatten(expected), keras.tree.flatten(got)
    ):
        np.testing.assert_allclose(have, want, atol=1e-6)
    # The adapter really sits in the graph: nonzero weights change outputs.
    randomize_adapter(adapted)
    changed = keras.tree.flatten(to_numpy(adapted(x)))
    assert not any(
        np.allclose(a, b) for a, b in zip(changed, keras.tree.flatten(got))
    )


def test_weights_shared_frozen_and_named(family):
    backbone = BACKBONES[family]()
    adapted = keras_adalink.adapt(backbone, rank=2)
    ids = {id(v) for v in adapted.weights}
    assert all(id(v) in ids for v in backbone.weights)
    assert len(adapted.weights) == len(backbone.weights) + 2
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    assert not backbone.trainable_weights


def test_hyperparameters_forwarded():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2)
    assert adapted.hidden_dim == backbone.hidden_dim
    assert adapted.num_layers == backbone.num_layers
    # Direct callers of `token_embedding` (cached decoding) get the adapter;
    # the tied reverse projection keeps the original table.
    assert adapted.token_embedding.layer is backbone.token_embedding
    randomize_adapter(adapted)
    ids = np.array([[1, 2, 3]], "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(adapted.token_embedding(ids)),
        keras.ops.convert_to_numpy(
            adapted.adapter(backbone.token_embedding(ids))
        ),
        atol=1e-6,
    )
    hidden = np.ones((1, 3, 16), "float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(
            adapted.token_embedding(hidden, reverse=True)
        ),
        keras.ops.convert_to_numpy(
            backbone.token_embedding(hidden, reverse=True)
        ),
    )


def test_insertion_points_differ():
    """Same adapter weights, different places: different outputs."""
    backbone = BACKBONES["bert"]()
    x = backbone_inputs(backbone)
    outputs = []
    for insertion in INSERTIONS:
        adapted = keras_adalink.adapt(backbone, rank=2, insertion=insertion)
        randomize_adapter(adapted, seed=5)
        outputs.append(to_numpy(adapted(x))["sequence_output"])
    assert not np.allclose(outputs[0], outputs[1])


def test_token_embedding_insertion_acts_before_layer_norm():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    randomize_adapter(adapted)
    x = backbone_inputs(backbone)
    tokens = backbone.token_embedding(x["token_ids"])
    adapted_tokens = adapted.adapter(tokens)
    emb = backbone.embeddings_add(
        (
            adapted_tokens,
            backbone.position_embedding(adapted_tokens),
            backbone.segment_embedding(x["segment_ids"]),
        )
    )
    h = backbone.embeddings_layer_norm(emb)
    for layer in backbone.transformer_layers:
        h = layer(h, padding_mask=x["padding_mask"])
    np.testing.assert_allclose(
        to_numpy(adapted(x))["sequence_output"],
        keras.ops.convert_to_numpy(h),
        atol=1e-5,
    )


def test_task_router_inputs_and_routing():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, num_tasks=3, dropout=0.0)
    assert list(adapted.input) == [
        "token_ids",
        "segment_ids",
        "padding_mask",
        "task_id",
    ]
    randomize_adapter(adapted)
    x = backbone_inputs(backbone)
    mixed = to_numpy(adapted({**x, "task_id": np.array([2, 0, 1], "int32")}))
    for b, task in enumerate([2, 0, 1]):
        single = {k: v[b : b + 1] for k, v in x.items()}
        single["task_id"] = np.array([task], "int32")
        np.testing.assert_allclose(
            to_numpy(adapted(single))["sequence_output"][0],
            mixed["sequence_output"][b],
            atol=1e-5,
        )


def test_modality_router_options():
    backbone = BACKBONES["bert"]()
    with_ids = keras_adalink.adapt(backbone, rank=2, modalities=["a", "b"])
    assert "modality_ids" in with_ids.input
    static = keras_adalink.adapt(
        backbone, rank=2, modalities=["a", "b"], modality_lengths=[4, None]
    )
    assert "modality_ids" not in static.input
    with pytest.warns(DeprecationWarning, match="modality_lengths"):
        old_name = keras_adalink.adapt(
            backbone, rank=2, modalities=["a", "b"], layout=[4, None]
        )
    assert old_name.adapter.modality_lengths == [4, None]
    assert "modality_ids" not in old_name.input
    with pytest.raises(ValueError, match="`modality_lengths` only"):
        keras_adalink.adapt(
            backbone,
            rank=2,
            modalities=["a", "b"],
            modality_lengths=[4, None],
            layout=[4, None],
        )
    unified = keras_adalink.adapt(
        backbone, rank=2, modalities=["a", "b"], unified=True
    )
    assert tuple(unified.adapter.adalink_down.shape) == (1, 16, 2)


def _tiny_classifier():
    backbone = BACKBONES["bert"]()
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + [f"w{i}" for i in range(45)],
        lowercase=True,
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=8
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=preprocessor
    )


def test_task_keeps_class_preprocessor_and_head():
    task = _tiny_classifier()
    texts = np.array(["w1 w2 w3", "w4 w5"])
    before = task.predict(texts, verbose=0)
    adapted = keras_adalink.adapt(task, rank=2)
    assert type(adapted) is type(task)
    assert adapted.preprocessor is task.preprocessor
    assert isinstance(adapted.backbone, AdaLinkBackbone)
    np.testing.assert_allclose(
        adapted.predict(texts, verbose=0), before, atol=1e-6
    )
    trainable = {v.path for v in adapted.trainable_weights}
    assert {"adalink/adalink_down", "adalink/adalink_up"} <= trainable
    assert len(trainable) == 4  # adapter + logits kernel and bias
    adapted.fit(texts, np.array([1, 0]), epochs=1, verbose=0)


def test_task_head_can_stay_frozen():
    adapted = keras_adalink.adapt(_tiny_classifier(), rank=2, train_head=False)
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]


def test_fit_changes_only_the_adapter():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2)
    inputs = adapted.input
    pooled = keras.layers.GlobalAveragePooling1D()(
        adapted(inputs)["sequence_output"]
    )
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(pooled))
    # Copies: jax's fit donates buffers that numpy views would share.
    frozen = [np.array(v.numpy()) for v in backbone.weights]
    adapter_before = np.array(adapted.adapter.adalink_up.numpy())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = backbone_inputs(backbone, batch=8)
    model.fit(x, np.ones((8, 1)), epochs=3, batch_size=4, verbose=0)
    for value, variable in zip(frozen, backbone.weights):
        np.testing.assert_array_equal(value, variable.numpy(), variable.path)
    assert not np.array_equal(
        adapter_before, adapted.adapter.adalink_up.numpy()
    )


@pytest.mark.parametrize("num_tasks", [None, 3])
def test_keras_file_round_trip_stays_frozen(tmp_path, num_tasks):
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, num_tasks=num_tasks)
    randomize_adapter(adapted)
    x = backbone_inputs(adapted, num_tasks=num_tasks)
    path = str(tmp_path / "adapted.keras")
    adapted.save(path)
    # safe_mode=True (the default, explicit here): nothing to deserialize
    # as Python code, so adapted models load where lambdas would be refused.
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, AdaLinkBackbone)
    np.testing.assert_allclose(
        to_numpy(restored(x))["sequence_output"],
        to_numpy(adapted(x))["sequence_output"],
        atol=1e-6,
    )
    assert [v.path for v in restored.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]


def test_task_keras_file_round_trip(tmp_path):
    adapted = keras_adalink.adapt(_tiny_classifier(), rank=2)
    randomize_adapter(adapted)
    texts = np.array(["w1 w2 w3", "w4 w5"])
    path = str(tmp_path / "task.keras")
    adapted.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.backbone, AdaLinkBackbone)
    np.testing.assert_allclose(
        restored.predict(texts, verbose=0),
        adapted.predict(texts, verbose=0),
        atol=1e-6,
    )
    assert len(restored.trainable_weights) == 4


def test_already_adapted_is_refused():
    adapted = keras_adalink.adapt(BACKBONES["bert"](), rank=2)
    with pytest.raises(ValueError, match="already adapted"):
        keras_adalink.adapt(adapted, rank=2)


def test_unsupported_backbone_named():
    class HomeMadeBackbone(keras_hub.models.Backbone):
        def __init__(self, **kwargs):
            inputs = keras.Input(shape=(None, 4))
            super().__init__(inputs, keras.layers.Dense(4)(inputs), **kwargs)

    with pytest.raises(ValueError, match="no block stack in HomeMadeBackbone"):
        keras_adalink.adapt(HomeMadeBackbone(), rank=2)


def test_not_a_keras_hub_model():
    with pytest.raises(ValueError, match="Backbone or Task.*Dense"):
        keras_adalink.adapt(keras.layers.Dense(2), rank=2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rank": 0}, "rank"),
        ({"rank": 2, "insertion": "middle"}, "insertion"),
        ({"rank": 2, "num_tasks": 2, "modalities": ["a"]}, "not both"),
        ({"rank": 2, "unified": True}, "need `modalities`"),
        ({"rank": 99}, "width 16"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_adalink.adapt(BACKBONES["bert"](), **kwargs)


def test_task_id_out_of_range_eager():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, num_tasks=2)
    x = backbone_inputs(backbone)
    with pytest.raises(ValueError, match=r"\[0, 2\).*\[5\]"):
        adapted({**x, "task_id": np.array([0, 5, 1], "int32")})


_CLASSIFIERS = {
    "bert": "BertTextClassifier",
    "distil_bert": "DistilBertTextClassifier",
    "roberta": "RobertaTextClassifier",
    "xlm_roberta": "XLMRobertaTextClassifier",
    "albert": "AlbertTextClassifier",
    "deberta_v3": "DebertaV3TextClassifier",
}


@pytest.mark.parametrize("family_name", sorted(_CLASSIFIERS))
def test_text_classifier_of_every_family(family_name):
    backbone = BACKBONES[family_name]()
    cls = getattr(keras_hub.models, _CLASSIFIERS[family_name])
    task = cls(backbone, num_classes=3, preprocessor=None)
    x = backbone_inputs(backbone)
    before = task.predict(x, verbose=0)
    adapted = keras_adalink.adapt(task, rank=2, insertion="block_input")
    assert type(adapted) is cls
    np.testing.assert_allclose(adapted.predict(x, verbose=0), before, atol=1e-6)
    randomize_adapter(adapted)
    assert not np.allclose(adapted.predict(x, verbose=0), before)


def test_keras_and_adapter_files_every_encoder_family(family, tmp_path):
    backbone = BACKBONES[family]()
    adapted = keras_adalink.adapt(backbone, rank=2)
    randomize_adapter(adapted)
    x = backbone_inputs(backbone)
    adapted.save(str(tmp_path / "enc.keras"))
    restored = keras.saving.load_model(str(tmp_path / "enc.keras"))
    for a, b in zip(
        keras.tree.flatten(to_numpy(restored(x))),
        keras.tree.flatten(to_numpy(adapted(x))),
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
    keras_adalink.save_adapter(adapted, tmp_path / "enc.safetensors")
    fresh = keras_adalink.adapt(restored.backbone, rank=2)
    keras_adalink.load_adapter(fresh, tmp_path / "enc.safetensors")
    for a, b in zip(
        keras.tree.flatten(to_numpy(fresh(x))),
        keras.tree.flatten(to_numpy(adapted(x))),
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
