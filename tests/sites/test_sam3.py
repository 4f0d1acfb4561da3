"""SAM3 (keras_adalink/sites/sam3.py): a site inside each encoder.

One tiny SAM3 per backend, built once for the module, and one compiled
predict per model: the encoders' streams (what the adapter reaches) on
every backend; the whole segmenter where KerasHub's own SAM3 runs (not on
torch without torchvision, see `_NO_TORCH`).
"""

import importlib.util

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from keras_adalink.graph import calls
from keras_adalink.sites import default_insertion
from keras_adalink.sites import default_modalities
from keras_adalink.sites import find_insertion_sites
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy
from tests.fixtures.sam3 import sam3
from tests.fixtures.sam3 import sam3_inputs

_NO_TORCH = (
    "KerasHub 0.32's own SAM3 segmenter does not run on torch here: with a "
    "box prompt `SAM3GeometryEncoder._encode_boxes` calls `roi_align`, "
    "which imports torchvision (not installed), and with no box its "
    "geometry encoder's `SAM3Attention` fails on its 2-D mask; the test "
    "runs on torch where torchvision is installed"
)


def _flat(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(to_numpy(outputs))]


def _predict(model, x):
    return _flat(model.predict(x, verbose=0))


def _moved(before, after):
    return not all(np.allclose(a, b, atol=1e-4) for a, b in zip(before, after))


@pytest.fixture(scope="module")
def frozen():
    """The segmenter (preprocessor-free) and its inputs."""
    keras.utils.set_random_seed(0)
    task = keras_hub.models.SAM3PromptableConceptImageSegmenter(sam3())
    return task, sam3_inputs()


def _streams(adapted):
    """A model of the adapted backbone's image stream (the FPN maps) and
    text stream (the text encoder's output): each encoder's replayed
    layers after its site, by the sub-model's name."""
    backbone = adapted.backbone
    outputs = []
    for encoder in (backbone.vision_encoder, backbone.text_encoder):
        ((_, _, stream),) = calls(adapted.get_layer(f"{encoder.name}_blocks"))
        outputs.append(list(stream))
    return keras.Model(adapted.input, outputs)


def _split(outputs):
    """`[image stream, text stream]`, each a list of arrays."""
    image, text = outputs
    return [_flat(image), _flat(text)]


def _own_streams(backbone, x):
    """The same streams from KerasHub's own encoder calls."""
    mask = np.asarray(x["padding_mask"], bool)
    image = backbone.vision_encoder(x["pixel_values"])
    return _split([image, backbone.text_encoder(x["token_ids"], mask)])


def test_sites_inside_both_encoders(frozen):
    """An image and a text site, inside the vision and text encoders; the
    text site after the token lookup by default, one module per modality
    (or one shared, `unified=True`)."""
    backbone = frozen[0].backbone
    for insertion in ("token_embedding", "block_input"):
        found = find_insertion_sites(backbone, insertion)
        assert [s.modality for s in found] == ["image", "text"]
        assert [s.layer for s in found] == [
            backbone.vision_encoder,
            backbone.text_encoder,
        ]
    assert default_insertion(backbone) == "token_embedding"
    assert default_modalities(backbone) == ["image", "text"]
    shared = keras_adalink.adapt(backbone, rank=2, unified=True)
    assert shared.adapter.unified


@pytest.mark.parametrize("insertion", ["token_embedding", "block_input"])
def test_each_module_moves_its_own_stream(frozen, insertion):
    """At init each replayed encoder equals KerasHub's own call; then the
    image module alone moves the image stream only, the text module the
    text stream only, in the graph and in direct calls of the encoder."""
    task, x = frozen
    adapted = keras_adalink.adapt(task.backbone, rank=2, insertion=insertion)
    own = _own_streams(task.backbone, x)
    streams = _streams(adapted)
    got = _split(streams.predict(x, verbose=0))
    for want, have in zip(own, got):
        for a, b in zip(want, have):
            np.testing.assert_allclose(b, a, atol=1e-5)
    router = adapted.adapter
    assert router.modalities == ["image", "text"] and not router.unified
    for index in range(2):
        randomize_router_module(router, index, seed=index)
        got = _split(streams.predict(x, verbose=0))
        moved = [_moved(want, have) for want, have in zip(own, got)]
        assert moved == [index == 0, index == 1], (index, moved)
    # Direct callers of the encoder (`adapted.text_encoder`) get the same.
    mask = np.asarray(x["padding_mask"], bool)
    direct = to_numpy(adapted.text_encoder(x["token_ids"], mask))
    np.testing.assert_allclose(direct, got[1][0], atol=1e-5)


def test_streams_round_trip(frozen, tmp_path):
    """The adapter file and the `.keras` file give back the adapted
    model's streams, with every module nonzero."""
    task, x = frozen
    adapted = keras_adalink.adapt(task, rank=2)
    randomize_adapter(adapted)
    check_round_trips(
        adapted,
        keras_adalink.adapt(task, rank=2),
        x,
        tmp_path,
        run=lambda model: _streams(model.backbone).predict(x, verbose=0),
    )


@pytest.mark.skipif(
    keras.backend.backend() == "torch"
    and importlib.util.find_spec("torchvision") is None,
    reason=_NO_TORCH,
)
def test_segmenter_predict_adapted(frozen):
    """The task adapted: same class, only the adapter trains, predict()
    equal to the frozen task's at init, moved by each module alone."""
    task, x = frozen
    before = _predict(task, x)
    adapted = keras_adalink.adapt(task, rank=2)
    assert type(adapted) is type(task)
    paths = [v.path for v in adapted.trainable_weights]
    assert paths == ["adalink/adalink_down", "adalink/adalink_up"]
    assert not task.backbone.trainable_weights
    for want, have in zip(before, _predict(adapted, x)):
        np.testing.assert_allclose(have, want, atol=1e-5)
    router = adapted.backbone.adapter
    for index in range(2):
        randomize_router_module(router, index, seed=index)
        assert _moved(before, _predict(adapted, x)), index


def test_task_rows_reach_both_encoders(frozen):
    """A module per task at both sites (both encoders 16 wide): changing
    row 0's task moves row 0's image and text streams only."""
    task, x = frozen
    multi = keras_adalink.adapt(task.backbone, rank=2, num_tasks=2)
    randomize_adapter(multi)
    streams = _streams(multi)
    rows = [
        _split(streams.predict({**x, "task_id": np.array(ids)}, verbose=0))
        for ids in ([0, 1], [1, 1])
    ]
    for stream in range(2):
        pairs = list(zip(rows[0][stream], rows[1][stream]))
        assert _moved([a[0] for a, _ in pairs], [b[0] for _, b in pairs])
        for a, b in pairs:
            np.testing.assert_allclose(a[1], b[1], atol=1e-6)
