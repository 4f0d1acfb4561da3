"""AdaLink on decoder-only LMs: training path and generate() agree."""

import inspect

import keras
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.decoders import CAUSAL_LMS
from tests.fixtures.decoders import PROMPT
from tests.fixtures.decoders import SEQ
from tests.fixtures.decoders import VOCAB
from tests.fixtures.decoders import lm_inputs as _inputs


@pytest.fixture(params=sorted(CAUSAL_LMS))
def lm_family(request):
    return request.param


@pytest.mark.parametrize("insertion", ["token_embedding", "block_input"])
def test_identity_at_init_and_adapter_acts(lm_family, insertion):
    lm = CAUSAL_LMS[lm_family]()
    x = _inputs()
    before = to_numpy(lm(x))
    adapted = keras_adalink.adapt(lm, rank=2, insertion=insertion)
    assert type(adapted) is type(lm)
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    randomize_adapter(adapted)
    assert not np.allclose(to_numpy(adapted(x)), before, atol=1e-3)


@pytest.mark.parametrize("insertion", ["token_embedding", "block_input"])
def test_cached_path_equals_training_path(lm_family, insertion):
    """`call_with_cache` (generate's path) gets the adapter too."""
    adapted = keras_adalink.adapt(
        CAUSAL_LMS[lm_family](), rank=2, insertion=insertion, dropout=0.0
    )
    randomize_adapter(adapted)
    x = _inputs()
    teacher_forced = to_numpy(adapted(x))
    # `_build_cache` runs `call_with_cache` over the whole sequence at once.
    if "img_embeddings" in inspect.signature(adapted._build_cache).parameters:
        _, cache = adapted._build_cache(  # Gemma3: text only here.
            x["token_ids"], None, None, x["padding_mask"], None
        )
    else:
        _, cache = adapted._build_cache(x["token_ids"])
    cached_logits, _, _ = adapted.call_with_cache(
        x["token_ids"], keras.tree.map_structure(keras.ops.zeros_like, cache), 0
    )
    np.testing.assert_allclose(
        to_numpy(cached_logits), teacher_forced, rtol=1e-4, atol=1e-4
    )


def test_greedy_generate_follows_training_argmax(lm_family):
    if lm_family == "gemma3":
        pytest.skip(
            "KerasHub's Gemma3CausalLM.generate() without a preprocessor "
            "fails on text-only inputs even unadapted ('None is not a valid "
            "value'); its cached path is covered by "
            "test_cached_path_equals_training_path."
        )
    lm = CAUSAL_LMS[lm_family]()
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=1.0)
    prompt = _inputs()
    prompt["padding_mask"][:, PROMPT:] = 0
    prompt["token_ids"][:, PROMPT:] = 0
    adapted.compile(sampler="greedy")
    out = adapted.generate(prompt, stop_token_ids=None)
    tokens = np.asarray(out["token_ids"])
    logits = to_numpy(
        adapted({"token_ids": tokens, "padding_mask": np.ones_like(tokens)})
    )
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )
    # The same prompt through the unadapted model decodes differently:
    # generate() really ran the adapter.
    lm.compile(sampler="greedy")
    plain = np.asarray(lm.generate(prompt, stop_token_ids=None)["token_ids"])
    assert not np.array_equal(plain, tokens)


def test_tied_output_projection_keeps_original_table():
    lm = CAUSAL_LMS["gemma"]()
    assert lm.backbone.token_embedding.tie_weights
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted)
    x = _inputs()
    hidden = adapted.backbone(x)
    expected = lm.backbone.token_embedding(hidden, reverse=True)
    np.testing.assert_allclose(
        to_numpy(adapted(x)), to_numpy(expected), rtol=1e-5, atol=1e-5
    )


def test_fit_trains_only_the_adapter():
    adapted = keras_adalink.adapt(CAUSAL_LMS["gemma"](), rank=2)
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    frozen = [np.array(v.numpy()) for v in adapted.backbone.backbone.weights]
    x = _inputs(batch=4)
    y = np.roll(x["token_ids"], -1, axis=1)
    adapted.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    adapted.fit(x, y, epochs=2, verbose=0)
    for value, v in zip(frozen, adapted.backbone.backbone.weights):
        np.testing.assert_array_equal(value, v.numpy(), v.path)


@pytest.mark.parametrize("lm_name", ["gpt2", "gemma"])
def test_multi_task_generate_mixed_batch(lm_name, tmp_path):
    adapted = keras_adalink.adapt(
        CAUSAL_LMS[lm_name](), rank=2, num_tasks=3, dropout=0.0
    )
    randomize_adapter(adapted, scale=1.0)
    adapted.compile(sampler="greedy")
    prompt = _inputs(batch=3)
    prompt["padding_mask"][:, PROMPT:] = 0
    prompt["token_ids"][:, PROMPT:] = 0
    task_id = np.array([2, 0, 1], "int32")
    mixed = adapted.generate(
        {**prompt, "task_id": task_id}, stop_token_ids=None
    )
    tokens = np.asarray(mixed["token_ids"])
    # Each row follows the training path's argmax under its own task...
    logits = to_numpy(
        adapted(
            {
                "token_ids": tokens,
                "padding_mask": np.ones_like(tokens),
                "task_id": task_id,
            }
        )
    )
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )
    # ...and equals generating that row alone with its task id.
    for b, task in enumerate(task_id):
        single = {k: v[b : b + 1] for k, v in prompt.items()}
        single["task_id"] = np.array([task], "int32")
        alone = adapted.generate(single, stop_token_ids=None)["token_ids"]
        np.testing.assert_array_equal(np.asarray(alone)[0], tokens[b])
    # The routing survives a .keras reload once reattach is applied.
    adapted.save(str(tmp_path / "mt.keras"))
    restored = keras_adalink.reattach(
        keras.saving.load_model(str(tmp_path / "mt.keras"))
    )
    restored.compile(sampler="greedy")
    again = restored.generate(
        {**prompt, "task_id": task_id}, stop_token_ids=None
    )
    np.testing.assert_array_equal(np.asarray(again["token_ids"]), tokens)


def test_multi_task_generate_needs_task_id():
    adapted = keras_adalink.adapt(CAUSAL_LMS["gpt2"](), rank=2, num_tasks=2)
    with pytest.raises(ValueError, match="pass `task_id`"):
        adapted.generate(_inputs(), stop_token_ids=None)


def test_per_token_modality_ids_generate_refused_clearly():
    adapted = keras_adalink.adapt(
        CAUSAL_LMS["gpt2"](), rank=2, modalities=["a", "b"]
    )
    prompt = {**_inputs(), "modality_ids": np.zeros((2, SEQ), "int32")}
    assert tuple(adapted(prompt).shape) == (2, SEQ, VOCAB)
    with pytest.raises(NotImplementedError, match="ModalityRouter.*per-token"):
        adapted.generate(_inputs(), stop_token_ids=None)


@pytest.mark.parametrize("lm_name", sorted(CAUSAL_LMS))
def test_keras_and_adapter_files_every_family(lm_name, tmp_path):
    adapted = keras_adalink.adapt(CAUSAL_LMS[lm_name](), rank=2)
    randomize_adapter(adapted)
    x = _inputs()
    adapted.save(str(tmp_path / "lm.keras"))
    restored = keras.saving.load_model(str(tmp_path / "lm.keras"))
    np.testing.assert_allclose(
        to_numpy(restored(x)), to_numpy(adapted(x)), atol=1e-5
    )
    assert len(restored.trainable_weights) == 2
    keras_adalink.save_adapter(adapted, tmp_path / "lm.safetensors")
    keras_adalink.load_adapter(restored, tmp_path / "lm.safetensors")
    # Into a task rebuilt from scratch around the restored backbone.
    fresh = type(adapted)(
        backbone=keras_adalink.adapt(restored.backbone.backbone, rank=2),
        preprocessor=None,
    )
    keras_adalink.load_adapter(fresh, tmp_path / "lm.safetensors")
    np.testing.assert_allclose(
        to_numpy(fresh(x)), to_numpy(adapted(x)), atol=1e-5
    )


def test_multi_task_fit_mixed_batches():
    adapted = keras_adalink.adapt(CAUSAL_LMS["qwen"](), rank=2, num_tasks=3)
    x = {**_inputs(batch=6), "task_id": np.array([0, 1, 2, 0, 1, 2], "int32")}
    y = np.roll(x["token_ids"], -1, axis=1)
    before = np.array(adapted.backbone.adapter.adalink_up.numpy())
    adapted.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    adapted.fit(x, y, batch_size=3, epochs=2, verbose=0)
    after = adapted.backbone.adapter.adalink_up.numpy()
    # Every task's module trained (each appears in every batch of 3).
    for task in range(3):
        assert not np.array_equal(before[task], after[task])
