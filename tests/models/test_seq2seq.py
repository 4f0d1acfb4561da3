"""AdaLink on T5 (encoder-decoder): encoder inputs, decoder on request."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import to_numpy
from tests.fixtures.seq2seq import PROMPT
from tests.fixtures.seq2seq import t5_inputs as _inputs
from tests.fixtures.seq2seq import t5_lm as _lm


@pytest.mark.parametrize(
    "kwargs,decoder_adapted",
    [
        ({}, False),
        ({"modalities": ["encoder"]}, False),
        ({"modalities": ["encoder", "decoder"]}, True),
    ],
)
def test_encoder_by_default_decoder_on_request(kwargs, decoder_adapted):
    lm = _lm()
    x = _inputs()
    before = to_numpy(lm.backbone(x))
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0, **kwargs)
    after = to_numpy(adapted.backbone(x))
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-5)
    # Randomise only the decoder's module (or the single module): the
    # encoder output must move iff the encoder is adapted, and the decoder
    # module must leave the encoder alone.
    randomize_adapter(adapted)
    changed = to_numpy(adapted.backbone(x))
    assert not np.allclose(
        changed["encoder_sequence_output"], before["encoder_sequence_output"]
    )
    if decoder_adapted:
        router = adapted.backbone.adapter
        router.adalink_up.assign(
            np.concatenate([np.zeros((1, 2, 16)), np.ones((1, 2, 16))]).astype(
                "float32"
            )
        )
        only_decoder = to_numpy(adapted.backbone(x))
        np.testing.assert_allclose(
            only_decoder["encoder_sequence_output"],
            before["encoder_sequence_output"],
            atol=1e-5,
        )
        assert not np.allclose(
            only_decoder["decoder_sequence_output"],
            before["decoder_sequence_output"],
        )


@pytest.mark.parametrize("modalities", [None, ["encoder", "decoder"]])
def test_greedy_generate_follows_training_argmax(modalities):
    adapted = keras_adalink.adapt(
        _lm(), rank=2, modalities=modalities, dropout=0.0
    )
    randomize_adapter(adapted, scale=1.0)
    adapted.compile(sampler="greedy")
    prompt = _inputs()
    prompt["decoder_padding_mask"][:, PROMPT:] = 0
    prompt["decoder_token_ids"][:, PROMPT:] = 0
    out = adapted.generate(prompt, stop_token_ids=None)
    tokens = np.asarray(out["decoder_token_ids"])
    full = {**prompt, "decoder_token_ids": tokens}
    full["decoder_padding_mask"] = np.ones_like(tokens)
    logits = to_numpy(adapted(full))
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )


def test_tied_output_and_file_round_trip(tmp_path):
    lm = _lm()
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted)
    x = _inputs()
    hidden = adapted.backbone(x)["decoder_sequence_output"]
    np.testing.assert_allclose(
        to_numpy(adapted(x)),
        to_numpy(lm._logits(hidden)),
        rtol=1e-5,
        atol=1e-5,
    )
    adapted.save(str(tmp_path / "t5.keras"))
    restored = keras.saving.load_model(str(tmp_path / "t5.keras"))
    np.testing.assert_allclose(
        to_numpy(restored(x)), to_numpy(adapted(x)), atol=1e-5
    )
    keras_adalink.save_adapter(adapted, tmp_path / "t5.safetensors")
    fresh = keras_hub.models.T5Seq2SeqLM(
        keras_adalink.adapt(restored.backbone.backbone, rank=2),
        preprocessor=None,
    )
    keras_adalink.load_adapter(fresh, tmp_path / "t5.safetensors")
    np.testing.assert_allclose(
        to_numpy(fresh(x)), to_numpy(adapted(x)), atol=1e-5
    )
