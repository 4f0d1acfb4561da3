"""fold(): the adapter folded into the vocabulary table, outputs unchanged."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.decoders import CAUSAL_LMS
from tests.fixtures.decoders import lm_inputs
from tests.fixtures.decoders import tied_llama_lm
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs


def _close(a, b):
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_fold_equals_unfolded_every_encoder_family(family):
    backbone = BACKBONES[family]()
    adapted = keras_adalink.adapt(backbone, rank=3, scale=0.7)
    randomize_adapter(adapted, scale=0.3)
    folded = keras_adalink.fold(adapted)
    assert type(folded) is type(backbone)
    assert not any("adalink" in v.path for v in folded.weights)
    assert len(folded.weights) == len(backbone.weights)
    x = backbone_inputs(backbone)
    _close(to_numpy(folded(x)), to_numpy(adapted(x)))
    # The original backbone is untouched.
    assert not np.allclose(
        to_numpy(folded.token_embedding.embeddings),
        to_numpy(backbone.token_embedding.embeddings),
    )


def test_fold_task_keeps_class_preprocessor_and_head():
    task = keras_hub.models.BertTextClassifier(
        BACKBONES["bert"](), num_classes=3, preprocessor=None
    )
    adapted = keras_adalink.adapt(task, rank=2)
    randomize_adapter(adapted)
    head = adapted.get_layer("logits")
    head.kernel.assign(np.full(head.kernel.shape, 0.1, "float32"))
    folded = keras_adalink.fold(adapted)
    assert type(folded) is type(task)
    x = backbone_inputs(task.backbone)
    _close(folded.predict(x, verbose=0), adapted.predict(x, verbose=0))


@pytest.mark.parametrize(
    "lm_name", ["llama", "llama3", "qwen", "qwen3", "mistral", "gemma3"]
)
def test_fold_causal_lm_logits(lm_name):
    lm = CAUSAL_LMS[lm_name]()
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=0.3)
    folded = keras_adalink.fold(adapted)
    assert type(folded) is type(lm)
    x = lm_inputs()
    _close(to_numpy(folded(x)), to_numpy(adapted(x)))


def test_tied_lm_is_untied_when_config_allows():
    lm = tied_llama_lm()
    backbone = lm.backbone
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=0.3)
    folded = keras_adalink.fold(adapted)
    assert not folded.backbone.token_embedding.tie_weights
    x = lm_inputs()
    _close(to_numpy(folded(x)), to_numpy(adapted(x)))
    # A naive fold (tied table replaced) would change the logits.
    naive = keras_hub.models.LlamaCausalLM(
        keras_hub.models.LlamaBackbone.from_config(
            # KerasHub leaves tie_word_embeddings out of get_config().
            {**backbone.get_config(), "tie_word_embeddings": True}
        ),
        preprocessor=None,
    )
    naive.backbone.set_weights(backbone.get_weights())
    naive.backbone.token_embedding.embeddings.assign(
        folded.backbone.token_embedding.embeddings
    )
    assert not np.allclose(to_numpy(naive(x)), to_numpy(adapted(x)), atol=1e-3)


@pytest.mark.parametrize("lm_name", ["gemma", "gpt2"])
def test_hard_tied_lm_is_untied_in_place(lm_name, tmp_path):
    lm = CAUSAL_LMS[lm_name]()
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=0.3)
    folded = keras_adalink.fold(adapted)
    assert type(folded) is type(lm)
    embedding = folded.backbone.token_embedding
    assert not embedding.tie_weights
    np.testing.assert_array_equal(
        to_numpy(embedding.reverse_embeddings),
        to_numpy(lm.backbone.token_embedding.embeddings).T,
    )
    x = lm_inputs()
    _close(to_numpy(folded(x)), to_numpy(adapted(x)))
    prompt = {k: v[:, :4] for k, v in x.items()}
    generated = [
        to_numpy(m.generate(prompt, max_length=8, stop_token_ids=None))
        for m in (folded, adapted)
    ]
    np.testing.assert_array_equal(
        generated[0]["token_ids"], generated[1]["token_ids"]
    )
    with pytest.raises(ValueError, match="save_adapter"):
        folded.save(str(tmp_path / "folded.keras"))
    # A naive fold (the tied table replaced) would change the logits.
    naive = type(lm)(
        type(lm.backbone).from_config(lm.backbone.get_config()),
        preprocessor=None,
    )
    naive.set_weights([np.array(w) for w in lm.get_weights()])
    naive.backbone.token_embedding.embeddings.assign(
        to_numpy(embedding.embeddings)
    )
    assert not np.allclose(to_numpy(naive(x)), to_numpy(adapted(x)), atol=1e-3)


def test_task_router_folds_one_task():
    backbone = BACKBONES["bert"]()
    adapted = keras_adalink.adapt(backbone, rank=2, num_tasks=3)
    randomize_adapter(adapted)
    x = backbone_inputs(backbone)
    for task in range(3):
        folded = keras_adalink.fold(adapted, task_id=task)
        routed = adapted({**x, "task_id": np.full(3, task, "int32")})
        _close(to_numpy(folded(x)), to_numpy(routed))
    with pytest.raises(ValueError, match="task_id"):
        keras_adalink.fold(adapted)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"insertion": "block_input"}, "token lookup"),
        ({"activation": "relu"}, "activation"),
        ({"modalities": ["a", "b"]}, "ModalityRouter"),
    ],
)
def test_unfoldable_configurations_refused(kwargs, match):
    adapted = keras_adalink.adapt(BACKBONES["bert"](), rank=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        keras_adalink.fold(adapted)


def test_folded_model_saves_as_plain_keras_hub_model(tmp_path):
    adapted = keras_adalink.adapt(BACKBONES["roberta"](), rank=2)
    randomize_adapter(adapted)
    folded = keras_adalink.fold(adapted)
    folded.save(str(tmp_path / "folded.keras"))
    restored = keras.saving.load_model(str(tmp_path / "folded.keras"))
    assert type(restored) is type(folded)
    x = backbone_inputs(folded)
    _close(to_numpy(restored(x)), to_numpy(adapted(x)))


def test_fold_user_model_with_head():
    from keras_adalink.heads import mean_pooled_classifier

    backbone = BACKBONES["bert"]()
    model = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=2), 3)
    randomize_adapter(model)
    folded = keras_adalink.fold(model)
    assert not any("adalink" in v.path for v in folded.weights)
    x = backbone_inputs(backbone)
    _close(folded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_fold_user_model_with_task_router_refused():
    from keras_adalink.heads import mean_pooled_classifier

    adapted = keras_adalink.adapt(BACKBONES["bert"](), rank=2, num_tasks=2)
    model = mean_pooled_classifier(adapted, 3)
    with pytest.raises(ValueError, match="task_id"):
        keras_adalink.fold(model, task_id=0)
