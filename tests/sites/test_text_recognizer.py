"""PARSeq (keras_adalink/sites/text_recognizer.py), all three backends.

One tiny recogniser (tests/fixtures/text_recognizer.py), built once: its
backbone adapted at both sites, then its task (`PARSeqCausalLM`), whose
training and recognition call the backbone's parts directly.
"""

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink.sites import INSERTIONS
from keras_adalink.sites import find_insertion_sites
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.text_recognizer import LENGTH
from tests.fixtures.text_recognizer import parseq_data
from tests.fixtures.text_recognizer import parseq_inputs
from tests.fixtures.text_recognizer import parseq_lm


@pytest.fixture(scope="module")
def lm():
    return parseq_lm()


def _streams(backbone, x):
    """The image tokens and the text tokens, as the task's direct calls
    (`compute_loss`, `call_with_cache`) get them from `backbone`."""
    return {
        "image": to_numpy(backbone.image_encoder(x["images"])),
        "text": to_numpy(backbone.decoder.token_embedding(x["token_ids"])),
    }


def test_parseq_image_and_text_modules(lm, tmp_path):
    """Sites: the ViT's first block and the decoder's token lookup, at
    either insertion point. One module per modality by default: identity
    at init (also the decoder call of the task's training, under
    permutation masks); each module alone moves its own stream only, and
    the logits;
    only the adapter trains; task rows route to their own module; adapter
    file and `.keras` round trips."""
    backbone = lm.backbone
    for insertion in INSERTIONS:
        image, text = find_insertion_sites(backbone, insertion)
        vit_encoder = backbone.image_encoder.get_layer("vit_encoder")
        assert (image.modality, image.layer, image.where) == (
            "image",
            vit_encoder,
            "before",
        )
        assert (text.modality, text.layer, text.sublayer) == (
            "text",
            backbone.decoder,
            "token_embedding",
        )
    x = parseq_inputs(2, np.random.default_rng(0))
    before = to_numpy(backbone(x))
    streams = _streams(backbone, x)
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    assert adapted.adapter.modalities == ["image", "text"]
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    assert not backbone.trainable_weights
    np.testing.assert_allclose(to_numpy(adapted(x)), before, atol=1e-5)
    # Also the task's training call: the decoder under a permutation's
    # masks (here right-to-left), as `compute_loss` calls it.
    order = np.array([0, *range(LENGTH - 1, 0, -1), LENGTH], "int32")
    masks = [
        np.broadcast_to(to_numpy(m), (2, LENGTH, LENGTH))
        for m in lm.generate_attention_masks(order)
    ]
    args = (x["token_ids"], backbone.image_encoder(x["images"]))
    kwargs = dict(
        padding_mask=x["padding_mask"],
        query_mask=masks[0],
        content_mask=masks[1],
    )
    np.testing.assert_allclose(
        to_numpy(adapted.decoder(*args, **kwargs)),
        to_numpy(backbone.decoder(*args, **kwargs)),
        atol=1e-5,
    )
    for index, modality in enumerate(adapted.adapter.modalities):
        randomize_router_module(adapted.adapter, index, seed=index)
        moved = {
            name
            for name, have in _streams(adapted, x).items()
            if not np.allclose(have, streams[name], atol=1e-4)
        }
        assert moved == {modality}
        assert not np.allclose(to_numpy(adapted(x)), before, atol=1e-4)
    fresh = keras_adalink.adapt(backbone, rank=2, dropout=0.0)
    check_round_trips(adapted, fresh, x, tmp_path)
    # One module per task: changing row 0's task moves row 0 only.
    multi = keras_adalink.adapt(backbone, rank=2, num_tasks=2, dropout=0.0)
    randomize_adapter(multi)
    rows = [
        to_numpy(multi({**x, "task_id": np.array(ids, "int32")}))
        for ids in ([0, 1], [1, 1])
    ]
    assert not np.allclose(rows[0][0], rows[1][0], atol=1e-4)
    np.testing.assert_allclose(rows[0][1], rows[1][1], atol=1e-5)


def test_parseq_recognition_and_training_adapted(lm):
    """`PARSeqCausalLM` adapted: predict() equals the frozen task's at init
    and moves with nonzero adapters; greedy generate() (the image encoder
    and the cached decoder called from the task's own code) picks the
    adapted training path's argmax at every step; one fit step (its
    `compute_loss` calls the encoder and decoder directly) trains both
    modules and leaves every frozen weight bit-identical."""
    data = parseq_data()
    before = lm.predict(data, verbose=0)
    adapted = keras_adalink.adapt(lm, rank=2, dropout=0.0)
    assert type(adapted) is type(lm)
    np.testing.assert_allclose(
        adapted.predict(data, verbose=0), before, atol=1e-5
    )
    randomize_adapter(adapted, scale=1.0)
    assert not np.allclose(adapted.predict(data, verbose=0), before, atol=1e-4)

    preprocessor = adapted.preprocessor
    prompt = to_numpy(preprocessor.generate_preprocess(data["images"]))
    adapted.preprocessor = None  # Token ids out, not strings.
    try:
        out = adapted.generate(prompt, stop_token_ids=None)
    finally:
        adapted.preprocessor = preprocessor
    tokens = np.asarray(out["token_ids"])
    logits = to_numpy(
        adapted.backbone(
            {
                "images": prompt["images"],
                "token_ids": tokens,
                "padding_mask": np.ones_like(tokens),
            }
        )
    )
    np.testing.assert_array_equal(tokens[:, 1:], np.argmax(logits[:, :-1], -1))

    frozen = adapted.backbone.backbone.weights
    values = [np.array(v.numpy()) for v in frozen]
    router = adapted.backbone.adapter
    down = np.array(router.adalink_down.numpy())
    adapted.compile(optimizer=keras.optimizers.SGD(0.1))
    adapted.fit(data, batch_size=2, epochs=1, verbose=0)
    for value, v in zip(values, frozen):
        np.testing.assert_array_equal(value, v.numpy(), v.path)
    trained = np.array(router.adalink_down.numpy())
    for index, modality in enumerate(router.modalities):
        assert not np.array_equal(trained[index], down[index]), modality


def test_parseq_compute_loss_routes_rows_by_task(lm):
    """With a module per task, `compute_loss` (what fit() runs: direct
    encoder and decoder calls, outside the graph) routes by the batch's
    `task_id`: each task gets its own loss."""
    x, y, weight = to_numpy(lm.preprocessor(parseq_data()))
    multi = keras_adalink.adapt(lm, rank=2, num_tasks=2, dropout=0.0)
    randomize_adapter(multi)
    first, second = [
        float(multi.compute_loss({**x, "task_id": ids}, y, None, weight))
        for ids in (np.zeros(2, "int32"), np.ones(2, "int32"))
    ]
    assert first != pytest.approx(second)
