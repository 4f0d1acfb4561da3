"""Per-modality AdaLink on BLIP-2: Q-Former query tokens and text tokens.

One tiny BLIP2CausalLM (OPT language model) per module, all three
backends: the image module acts on the query tokens at the LM width, the
text module after the token lookup; generate() (which calls the language
model's layers directly) goes through both.
"""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink.sites import find_insertion_sites
from keras_adalink.sites.query_tokens import image_and_text
from tests.fixtures.blip2 import PROMPT
from tests.fixtures.blip2 import QUERIES
from tests.fixtures.blip2 import M
from tests.fixtures.blip2 import blip2_inputs
from tests.fixtures.blip2 import blip2_lm
from tests.fixtures.blip2 import text_only_blip2_lm
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy


@pytest.fixture(scope="module")
def lm():
    return blip2_lm()


def test_sites_identity_and_one_module_per_stream(lm, tmp_path):
    """Two sites in the language model: the projected query tokens
    (image) and the looked-up text tokens (text). At init the model is
    unchanged; the image module alone moves the query positions of the
    LM's output; the text module alone moves the text positions only
    (causal attention: queries come first). Only the adapter trains; the
    adapter file and `.keras` round trips give the same outputs."""
    backbone = lm.backbone
    opt = backbone.language_model
    for insertion in ("token_embedding", "block_input"):
        found = find_insertion_sites(backbone, insertion)
        assert [(s.modality, s.layer) for s in found] == [
            ("image", opt.language_projection),
            ("text", opt.embeddings_layer),
        ]
    x = blip2_inputs()
    hidden = to_numpy(backbone(x))
    logits = to_numpy(lm(x))
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    router = adapted.backbone.adapter
    assert router.modalities == ["image", "text"] and not router.unified
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    np.testing.assert_allclose(to_numpy(adapted(x)), logits, atol=1e-5)
    np.testing.assert_allclose(to_numpy(adapted.backbone(x)), hidden, atol=1e-5)
    for index, modality in enumerate(router.modalities):
        randomize_router_module(router, index, seed=index)
        moved = ~np.isclose(to_numpy(adapted.backbone(x)), hidden, atol=1e-4)
        moved = moved.any(-1).any(0)  # Per position.
        assert moved[QUERIES:].all(), modality
        queries = moved[:QUERIES]
        assert queries.all() if modality == "image" else not queries.any()

    # One fit step: both modules change, the frozen model is bit-identical.
    randomize_adapter(adapted)  # So both W_down get gradients.
    adapted.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    frozen = [np.array(v.numpy()) for v in backbone.weights]
    start = np.array(router.adalink_down.numpy())
    y = np.roll(x["token_ids"], -1, axis=1)
    adapted.fit(x, y, batch_size=2, epochs=1, verbose=0)
    for value, v in zip(frozen, backbone.weights):
        np.testing.assert_array_equal(v.numpy(), value, v.path)
    trained = router.adalink_down.numpy()
    for module in range(2):
        assert not np.allclose(trained[module], start[module]), module
    fresh = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    check_round_trips(adapted, fresh, x, tmp_path)


def _generate_follows_teacher_forcing(adapted, extra):
    """Greedy generate() picks the training path's argmax at every step."""
    prompt = blip2_inputs(seed=1)
    prompt["token_ids"][:, PROMPT:] = 0
    prompt["padding_mask"][:, PROMPT:] = 0
    adapted.compile(sampler="greedy")
    out = adapted.generate({**prompt, **extra}, stop_token_ids=None)
    tokens = np.asarray(out["token_ids"])
    full = {**prompt, "token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    logits = to_numpy(adapted({**full, **extra}))
    np.testing.assert_array_equal(
        tokens[:, PROMPT:], np.argmax(logits[:, PROMPT - 1 : -1], -1)
    )
    return full


def test_generate_runs_both_modules(lm):
    """With the default image and text modules, both nonzero, generate()
    (the task's `_encode_images` and `call_with_cache`, which call the
    language model's projection and embeddings directly) follows the
    adapted training path, not the frozen one."""
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    randomize_adapter(adapted, scale=1.0)
    full = _generate_follows_teacher_forcing(adapted, {})
    frozen = to_numpy(lm(full))
    assert not np.array_equal(
        np.argmax(frozen[:, PROMPT - 1 : -1], -1), full["token_ids"][:, PROMPT:]
    )


def test_mixed_task_generate_follows_teacher_forcing(lm):
    """A module per task at both sites (rows are examples): generate() with
    per-row tasks follows each row's own task's training path."""
    adapted = keras_adalink.adapt(lm, rank=2, num_tasks=2, dropout=0.0)
    randomize_adapter(adapted, scale=1.0)
    task_id = np.array([1, 0], "int32")
    full = _generate_follows_teacher_forcing(adapted, {"task_id": task_id})
    other = to_numpy(adapted({**full, "task_id": 1 - task_id}))
    assert not np.array_equal(
        np.argmax(other[:, PROMPT - 1 : -1], -1), full["token_ids"][:, PROMPT:]
    )


def test_text_only_mode_has_the_text_site_alone():
    """Built without a vision encoder, BLIP-2's LM reads text alone: one
    site, one AdaLink, identity at init, then it acts. (Its generate() is
    not compared with teacher forcing: KerasHub 0.32's text-only
    `call_with_cache` gives every prompt token one position, so even the
    frozen model's greedy tokens differ from its own forward pass.)"""
    lm = text_only_blip2_lm()
    x = blip2_inputs()
    del x["images"]
    (site,) = find_insertion_sites(lm.backbone, "token_embedding")
    assert site.layer is lm.backbone.language_model.embeddings_layer
    before = to_numpy(lm(x))
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    assert isinstance(adapted.backbone.adapter, keras_adalink.AdaLink)
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    randomize_adapter(adapted)
    assert not np.allclose(to_numpy(adapted(x)), before, atol=1e-4)


@pytest.mark.once
def test_flan_t5_language_model_is_refused():
    """BLIP-2 with Flan-T5: refused, naming the methods its generate() runs
    around the graph (a stand-in backbone: nothing is built)."""
    backbone = SimpleNamespace(
        language_model=object.__new__(M.BLIP2FlanT5), qformer=None
    )
    with pytest.raises(ValueError, match="call_encoder.*t5.token_embedding"):
        image_and_text(backbone)
