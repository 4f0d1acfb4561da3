"""Image paths adapted per modality where the image embeddings join the
text after the token lookup: T5Gemma2 (an encoder-decoder) and Qwen3.5
(dense and MoE decoders), each built with its vision encoder."""

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink import graph
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.qwen3_5_vision import (
    IMAGE_POSITIONS as QWEN_IMAGE_POSITIONS,
)
from tests.fixtures.qwen3_5_vision import SEQ as QWEN_SEQ
from tests.fixtures.qwen3_5_vision import qwen3_5_vision_inputs
from tests.fixtures.qwen3_5_vision import qwen3_5_vision_lm
from tests.fixtures.t5gemma2_vision import EOI
from tests.fixtures.t5gemma2_vision import EOI_POSITION
from tests.fixtures.t5gemma2_vision import IMAGE_POSITIONS
from tests.fixtures.t5gemma2_vision import SEQ
from tests.fixtures.t5gemma2_vision import t5gemma2_vision_inputs
from tests.fixtures.t5gemma2_vision import t5gemma2_vision_lm

PROMPT = 3


@pytest.fixture(scope="module")
def t5gemma2():
    return t5gemma2_vision_lm()


def _first_block_input(adapted, block):
    """The hidden states `block` (the first of the stack) reads in the graph
    of `adapted` (an `AdaLinkBackbone`, just made, so its call is the
    block's last): image and text embeddings, interleaved."""
    _, args, _ = graph.calls(block)[-1]
    return keras.Model(adapted.input, args[0])


def test_t5gemma2_image_and_text_modules(t5gemma2, tmp_path):
    """With a vision encoder: an image and a text module by default;
    identity at init; only the adapter trains; the image module alone moves
    exactly the image rows of the encoder's input, the text module exactly
    the text rows (not the end-of-image row, which the backbone replaces
    after the lookup); the decoder's module on request moves the decoder
    only; adapter-file and `.keras` round trips."""
    x = t5gemma2_vision_inputs()
    before = to_numpy(t5gemma2(x))
    lm = keras_adalink.adapt(t5gemma2, rank=2, dropout=0.0)
    router = lm.backbone.adapter
    assert router.modalities == ["image", "text"]
    np.testing.assert_allclose(to_numpy(lm(x)), before, atol=1e-5)
    frozen = {id(v) for v in t5gemma2.backbone.weights}
    assert not any(id(v) in frozen for v in lm.trainable_weights)
    assert [v.path for v in lm.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]

    backbone = keras_adalink.adapt(
        t5gemma2.backbone,
        rank=2,
        dropout=0.0,
        modalities=["image", "text", "decoder"],
    )
    embeddings = _first_block_input(
        backbone, t5gemma2.backbone.encoder_layers[0]
    )
    plain = to_numpy(embeddings(x))
    plain_out = to_numpy(backbone(x))
    text = sorted(set(range(SEQ)) - {*IMAGE_POSITIONS, EOI_POSITION})
    expected = {"image": IMAGE_POSITIONS, "text": text, "decoder": []}
    for index, modality in enumerate(backbone.adapter.modalities):
        randomize_router_module(backbone.adapter, index, seed=index)
        moved = ~np.isclose(to_numpy(embeddings(x)), plain, atol=1e-5).all(-1)
        for row in moved:
            assert np.flatnonzero(row).tolist() == expected[modality]
    # The decoder's module alone (the last one randomized) moves the
    # decoder's output only.
    out = to_numpy(backbone(x))
    np.testing.assert_allclose(
        out["encoder_sequence_output"],
        plain_out["encoder_sequence_output"],
        atol=1e-5,
    )
    assert not np.allclose(
        out["decoder_sequence_output"],
        plain_out["decoder_sequence_output"],
        atol=1e-4,
    )

    randomize_adapter(lm)
    fresh = keras_adalink.adapt(t5gemma2, rank=2, dropout=0.0)
    check_round_trips(lm, fresh, x, tmp_path)


def _compare_until_eoi(tokens, logits):
    """Generated tokens against the training path's argmax, up to and
    including the first generated end-of-image token: KerasHub's cached
    decoder (`call_decoder_with_cache`) does not replace that token's
    embedding with `decoder_eoi_embedding` as the backbone graph does, so
    after it KerasHub's own generate() leaves its forward pass, adapted or
    not."""
    generated = tokens[:, PROMPT:]
    argmax = np.argmax(logits[:, PROMPT - 1 : -1], -1)
    fed_before = np.cumsum(generated == EOI, axis=1) - (generated == EOI)
    checked = fed_before == 0
    np.testing.assert_array_equal(generated[checked], argmax[checked])
    return checked


def test_t5gemma2_generate_with_images_follows_teacher_forcing(t5gemma2):
    """Greedy generate() with images and per-row tasks (one image per
    example: the image rows are the examples) picks, at every step and for
    every row's own task, the training path's argmax; the task's
    `call_encoder` calls the vision encoder and the token table directly,
    and both get the row's module."""
    lm = keras_adalink.adapt(t5gemma2, rank=2, dropout=0.0, num_tasks=2)
    randomize_adapter(lm, scale=1.0)
    lm.compile(sampler="greedy")
    x = t5gemma2_vision_inputs(batch=3, seed=1)
    x["decoder_token_ids"][:, PROMPT:] = 0
    x["decoder_padding_mask"][:, PROMPT:] = 0
    task_id = np.array([1, 0, 1], "int32")
    out = lm.generate({**x, "task_id": task_id}, stop_token_ids=None)
    tokens = np.asarray(out["decoder_token_ids"])
    full = {
        **x,
        "decoder_token_ids": tokens,
        "decoder_padding_mask": np.ones_like(tokens),
    }
    checked = _compare_until_eoi(
        tokens, to_numpy(lm({**full, "task_id": task_id}))
    )
    assert checked.sum() >= checked.size // 2
    # The same rows under the other tasks decode otherwise.
    other = to_numpy(lm({**full, "task_id": 1 - task_id}))
    assert not np.array_equal(
        np.argmax(other[:, PROMPT - 1 : -1], -1), tokens[:, PROMPT:]
    )


@pytest.mark.parametrize("name", ["Qwen3_5Backbone", "Qwen3_5MoeBackbone"])
def test_qwen3_5_image_and_text_modules(name, tmp_path):
    """With a vision encoder: an image and a text module by default;
    identity at init; only the adapter trains; the image module alone moves
    exactly the image rows of the first block's input, the text module the
    others; one module at the block input is the identity at init too; a
    TaskRouter is refused (the encoder puts every image of the batch in one
    row); adapter-file and `.keras` round trips."""
    lm = qwen3_5_vision_lm(name)
    frozen = lm.backbone
    x = qwen3_5_vision_inputs()
    before = to_numpy(frozen(x))
    adapted = keras_adalink.adapt(frozen, rank=2, dropout=0.0)
    router = adapted.adapter
    assert router.modalities == ["image", "text"]
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    assert not frozen.trainable_weights
    embeddings = _first_block_input(adapted, frozen.transformer_layers[0])
    plain = to_numpy(embeddings(x))
    text = sorted(set(range(QWEN_SEQ)) - set(QWEN_IMAGE_POSITIONS))
    expected = {"image": QWEN_IMAGE_POSITIONS, "text": text}
    for index, modality in enumerate(router.modalities):
        randomize_router_module(router, index, seed=index)
        moved = ~np.isclose(to_numpy(embeddings(x)), plain, atol=1e-5).all(-1)
        for row in moved:
            assert np.flatnonzero(row).tolist() == expected[modality]
    with pytest.raises(ValueError, match="not examples"):
        keras_adalink.adapt(frozen, rank=2, num_tasks=2)
    block = keras_adalink.adapt(frozen, rank=2, insertion="block_input")
    np.testing.assert_allclose(to_numpy(block(x)), before, atol=1e-5)
    randomize_adapter(adapted)
    check_round_trips(adapted, keras_adalink.adapt(frozen, rank=2), x, tmp_path)


def test_qwen3_5_generate_with_images_follows_teacher_forcing():
    """Greedy generate() with images and nonzero image and text modules
    (the task calls the vision encoder and the token table directly) picks
    the training path's argmax. KerasHub's vision encoder needs
    `image_grid_thw` as Python ints, so, as unadapted, generate() with
    images runs eagerly: it does on torch; jax and tensorflow need
    `run_eagerly=True`, and compiled they fail in that encoder call."""
    lm = keras_adalink.adapt(qwen3_5_vision_lm(), rank=2, dropout=0.0)
    randomize_adapter(lm, scale=1.0)
    x = qwen3_5_vision_inputs(seed=1)
    x["token_ids"][:, 7:] = 0
    x["padding_mask"][:, 7:] = 0
    if keras.backend.backend() != "torch":
        lm.compile(sampler="greedy")
        keras.config.disable_traceback_filtering()
        try:
            with pytest.raises(Exception) as info:
                lm.generate(x, stop_token_ids=None)
        finally:
            keras.config.enable_traceback_filtering()
        assert any(
            entry.name == "_fast_pos_embed_interpolate"
            for entry in info.traceback
        ), info.value
    lm.compile(sampler="greedy", run_eagerly=True)
    tokens = np.asarray(lm.generate(x, stop_token_ids=None)["token_ids"])
    full = {**x, "token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    np.testing.assert_array_equal(
        tokens[:, 7:], np.argmax(to_numpy(lm(full))[:, 6:-1], -1)
    )
