"""Gemma3n (keras_adalink/sites/gemma3n.py): the embedding processor's
call is the site, each token adapted by its modality's module.

One tiny text-only `Gemma3nCausalLM` and one tiny backbone with both
encoders, each built once for the module, all three backends.
"""

import numpy as np
import pytest

import keras_adalink
from keras_adalink.sites import INSERTIONS
from keras_adalink.sites import find_insertion_sites
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.gemma3n import VOCAB
from tests.fixtures.gemma3n import M
from tests.fixtures.gemma3n import gemma3n_lm
from tests.fixtures.gemma3n import gemma3n_with_image_and_audio

PROMPT, SEQ = 3, 8


@pytest.fixture(scope="module")
def lm():
    return gemma3n_lm()


@pytest.fixture(scope="module")
def multimodal():
    return gemma3n_with_image_and_audio()


def _text(batch):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(batch, SEQ)).astype("int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def test_text_identity_only_adapter_trains_round_trips(lm, tmp_path):
    """Text-only: one site (the processor's call) at either insertion; the
    model is unchanged at init and moves once the adapter acts; only the
    adapter trains; fold refuses (no plain table); adapter-file and
    `.keras` round trips."""
    backbone, x = lm.backbone, _text(2)
    before = to_numpy(backbone(x))
    for insertion in INSERTIONS:
        (site,) = find_insertion_sites(backbone, insertion)
        assert site.layer is backbone.embedding_processor
        assert site.streams == ("text",)
        adapted = keras_adalink.adapt(backbone, rank=2, insertion=insertion)
        np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
        assert [v.path for v in adapted.trainable_weights] == [
            "adalink/adalink_down",
            "adalink/adalink_up",
        ]
        randomize_adapter(adapted)
        assert not np.allclose(to_numpy(adapted(x)), before, atol=1e-4)
    task = keras_adalink.adapt(lm, rank=2)
    frozen = {id(v) for v in backbone.weights}
    assert not any(id(v) in frozen for v in task.trainable_weights)
    assert [v.path for v in task.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    with pytest.raises(ValueError, match="vocabulary table"):
        keras_adalink.fold(task)
    # The last model adapted (block_input).
    fresh = keras_adalink.adapt(backbone, rank=2, insertion="block_input")
    check_round_trips(adapted, fresh, x, tmp_path)


def test_mixed_task_generate_follows_teacher_forcing(lm):
    """Greedy generate() (the task's cached decoding, which calls the
    embedding processor itself) picks, at every step and for every row's
    own task, the argmax of the training path; nonzero adapters."""
    task = keras_adalink.adapt(lm, rank=2, num_tasks=2, dropout=0.0)
    randomize_adapter(task, scale=1.0)
    task.compile(sampler="greedy")
    prompt = _text(3)
    prompt["token_ids"][:, PROMPT:] = 0
    prompt["padding_mask"][:, PROMPT:] = 0
    task_id = np.array([1, 0, 1], "int32")
    out = task.generate({**prompt, "task_id": task_id}, stop_token_ids=None)
    tokens = np.asarray(out["token_ids"])
    full = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    logits = to_numpy(task({**full, "task_id": task_id}))
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )
    other = to_numpy(task({**full, "task_id": 1 - task_id}))
    assert not np.array_equal(
        np.argmax(other[:, PROMPT - 1 : -1], -1), tokens[:, PROMPT:]
    )


def _processor_inputs(x):
    return {
        "token_ids": x["token_ids"],
        "pixel_values": x["images"],
        "input_features": x["input_features"],
        "input_features_mask": x["input_features_mask"],
    }


def test_image_audio_and_text_modules(multimodal, tmp_path):
    """With both encoders: three modules by default; unchanged at init;
    each module alone moves exactly its own tokens' embeddings (image 2-5,
    audio 7-10, text the rest) and per-layer inputs where the processor
    merges them (the task's direct call, generate()'s path; the graph's
    call runs the same site); one shared module with `unified=True`; a
    module per task; adapter-file and `.keras` round trips."""
    backbone, x = multimodal
    before = to_numpy(backbone(x))
    merged = to_numpy(backbone.embedding_processor(_processor_inputs(x)))
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    router = adapted.adapter
    assert router.modalities == ["image", "audio", "text"]
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    own = {"image": [2, 3, 4, 5], "audio": [7, 8, 9, 10]}
    own["text"] = [i for i in range(16) if i not in own["image"] + own["audio"]]
    for index, modality in enumerate(router.modalities):
        randomize_router_module(router, index, seed=index)
        embeddings, per_layer = to_numpy(
            adapted.embedding_processor(_processor_inputs(x))
        )
        moved = ~np.isclose(embeddings, merged[0], atol=1e-6).all(-1)[0]
        assert np.flatnonzero(moved).tolist() == own[modality], modality
        # The per-layer inputs are projected from the adapted embeddings.
        moved = ~np.isclose(per_layer, merged[1], atol=1e-6).all((-2, -1))
        assert np.flatnonzero(moved[0]).tolist() == own[modality], modality
    # The graph's call (text, the last module, acts from the first token).
    assert not np.allclose(to_numpy(adapted(x))[0, 0], before[0, 0], atol=1e-4)
    fresh = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    check_round_trips(adapted, fresh, x, tmp_path)
    shared = keras_adalink.adapt(backbone, rank=2, unified=True)
    assert shared.adapter.unified
    np.testing.assert_allclose(to_numpy(shared(x)), before, atol=1e-5)
    multi = keras_adalink.adapt(backbone, rank=2, num_tasks=2)
    np.testing.assert_allclose(
        to_numpy(multi({**x, "task_id": np.array([1])})), before, atol=1e-5
    )


def test_image_audio_generate_follows_teacher_forcing(multimodal):
    """`Gemma3nCausalLM` with images and audio, its three modules nonzero:
    greedy generate() (the cached path, which calls the processor itself)
    picks the training path's argmax at every step, which the frozen
    model's differs from."""
    backbone, x = multimodal
    frozen = M.Gemma3nCausalLM(backbone=backbone, preprocessor=None)
    lm = keras_adalink.adapt(frozen, rank=2, dropout=0.0)
    assert lm.backbone.adapter.modalities == ["image", "audio", "text"]
    randomize_adapter(lm, scale=1.0)
    lm.compile(sampler="greedy")
    start = 12  # Text at 11, after the image and audio tokens.
    mask = (np.arange(16) < start).astype("int32")[None]
    prompt = {**x, "token_ids": x["token_ids"] * mask, "padding_mask": mask}
    tokens = np.asarray(lm.generate(prompt, stop_token_ids=None)["token_ids"])
    # The task's own inputs (the preprocessor's; the backbone reads none).
    full = {
        **x,
        "token_ids": tokens,
        "padding_mask": np.ones_like(tokens),
        "vision_indices": np.zeros((1, 4), "int32"),
        "vision_mask": np.zeros((1, 16), bool),
        "audio_indices": np.zeros((1, 4), "int32"),
        "audio_mask": np.zeros((1, 16), bool),
    }
    chosen = [
        np.argmax(to_numpy(m(full))[:, start - 1 : -1], -1)
        for m in (lm, frozen)
    ]
    np.testing.assert_array_equal(tokens[:, start:], chosen[0])
    assert not np.array_equal(tokens[:, start:], chosen[1])


def test_router_missing_a_stream_is_refused(multimodal):
    backbone, _ = multimodal
    with pytest.raises(ValueError, match="modalities are"):
        keras_adalink.adapt(backbone, rank=2, modalities=["image", "text"])
