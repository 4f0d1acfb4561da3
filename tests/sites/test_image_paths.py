"""Image paths of encoder-decoder and decoder families: T5Gemma2 with its
vision encoder adapted per modality; Qwen3.5's image path refused with its
reason."""

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink import graph
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy
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


def _first_block_input(adapted):
    """The hidden states the encoder's first block reads in the graph of
    `adapted` (an `AdaLinkBackbone`, just made): image and text embeddings
    interleaved, end-of-image rows replaced."""
    _, args, _ = graph.calls(adapted.backbone.encoder_layers[0])[-1]
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
    embeddings = _first_block_input(backbone)
    plain = to_numpy(embeddings(x))
    plain_out = to_numpy(backbone(x))
    text = sorted(set(range(SEQ)) - {*IMAGE_POSITIONS, EOI_POSITION})
    expected = {"image": IMAGE_POSITIONS, "text": text, "decoder": []}
    for index, modality in enumerate(backbone.adapter.modalities):
        randomize_router_module(backbone.adapter, index, seed=index)
        moved = ~np.isclose(to_numpy(embeddings(x)), plain, atol=1e-5).all(-1)
        for row in moved:
            assert np.flatnonzero(row).tolist() == expected[modality]
        out = to_numpy(backbone(x))
        encoder_moved = not np.allclose(
            out["encoder_sequence_output"],
            plain_out["encoder_sequence_output"],
            atol=1e-5,
        )
        assert encoder_moved == (modality != "decoder"), modality
        assert not np.allclose(
            out["decoder_sequence_output"],
            plain_out["decoder_sequence_output"],
            atol=1e-5,
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


@pytest.mark.parametrize("routing", ["modalities", "tasks"])
def test_t5gemma2_generate_with_images_follows_teacher_forcing(
    t5gemma2, routing
):
    """Greedy generate() with images (the task's `call_encoder` calls the
    vision encoder and the token table directly) picks the training path's
    argmax, with nonzero image and text modules, or with per-row tasks (one
    image per example: the image rows are the examples)."""
    tasks = routing == "tasks"
    lm = keras_adalink.adapt(
        t5gemma2, rank=2, dropout=0.0, num_tasks=2 if tasks else None
    )
    randomize_adapter(lm, scale=1.0)
    lm.compile(sampler="greedy")
    x = t5gemma2_vision_inputs(batch=3, seed=1)
    x["decoder_token_ids"][:, PROMPT:] = 0
    x["decoder_padding_mask"][:, PROMPT:] = 0
    task_id = {"task_id": np.array([1, 0, 1], "int32")} if tasks else {}
    out = lm.generate({**x, **task_id}, stop_token_ids=None)
    tokens = np.asarray(out["decoder_token_ids"])
    full = {
        **x,
        "decoder_token_ids": tokens,
        "decoder_padding_mask": np.ones_like(tokens),
    }
    checked = _compare_until_eoi(tokens, to_numpy(lm({**full, **task_id})))
    assert checked.sum() >= checked.size // 2
    if tasks:  # The same rows under the other tasks decode otherwise.
        other = to_numpy(lm({**full, "task_id": 1 - task_id["task_id"]}))
        assert not np.array_equal(
            np.argmax(other[:, PROMPT - 1 : -1], -1), tokens[:, PROMPT:]
        )
