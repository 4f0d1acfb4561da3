import keras
import numpy as np
import pytest

from keras_adalink import AdaLink
from keras_adalink import ModalityRouter
from tests.fixtures.checks import run_layer_checks


def _x(shape=(3, 7, 8), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomize(router, seed=4):
    rng = np.random.default_rng(seed)
    for v in (router.adalink_down, router.adalink_up):
        v.assign(rng.normal(size=v.shape).astype("float32"))


def _per_token_reference(router, x, ids):
    """Each token through the AdaLink of its modality, one at a time."""
    out = x.copy()
    for m in range(len(router.modalities)):
        single = AdaLink(rank=router.rank, dropout=0.0)
        single(x)
        module = 0 if router.unified else m
        single.adalink_down.assign(router.adalink_down[module])
        single.adalink_up.assign(router.adalink_up[module])
        adapted = keras.ops.convert_to_numpy(single(x))
        out[ids == m] = adapted[ids == m]
    return out


def test_standard_checks_with_ids():
    run_layer_checks(
        ModalityRouter,
        {"modalities": ["image", "text"], "rank": 2},
        _x(),
        {"modality_ids": np.array([[0, 0, 1, 1, 1, -1, -1]] * 3, "int32")},
    )


def test_standard_checks_with_lengths():
    run_layer_checks(
        ModalityRouter,
        {
            "modalities": ["image", "text"],
            "rank": 2,
            "modality_lengths": [3, None],
        },
        _x(),
    )


def test_old_layout_name_is_accepted_with_a_warning():
    """Configs saved by 0.1.0 carry `layout`; they load, with a warning."""
    config = ModalityRouter(["a", "b"], rank=2).get_config()
    del config["modality_lengths"]
    config["layout"] = [3, None]
    with pytest.warns(DeprecationWarning, match="modality_lengths"):
        router = ModalityRouter.from_config(config)
    assert router.modality_lengths == [3, None]
    assert router.get_config()["modality_lengths"] == [3, None]
    assert "layout" not in router.get_config()


@pytest.mark.parametrize("unified", [False, True])
def test_equals_per_token_adalink(unified):
    router = ModalityRouter(
        ["image", "text", "audio"], rank=2, unified=unified, dropout=0.0
    )
    x = _x()
    ids = np.random.default_rng(1).integers(-1, 3, size=(3, 7)).astype("int32")
    router(x, modality_ids=ids)
    _randomize(router)
    out = keras.ops.convert_to_numpy(router(x, modality_ids=ids))
    np.testing.assert_allclose(
        out, _per_token_reference(router, x, ids), rtol=1e-5, atol=1e-5
    )
    # Padding (-1) passes through bit-exactly.
    np.testing.assert_array_equal(out[ids == -1], x[ids == -1])


@pytest.mark.parametrize("unified", [False, True])
@pytest.mark.parametrize("shape", [(3, 7, 8), (3, 2, 7, 8)])
def test_fixed_modality_is_that_module_at_any_rank(unified, shape):
    """`modality="text"`: every token through the text module (the one
    module when unified), for rank 3 and rank 4 inputs."""
    router = ModalityRouter(["image", "text"], rank=2, unified=unified)
    x = _x(shape)
    router(x, modality="text")
    _randomize(router)
    flat = x.reshape(-1, 1, 8)
    ids = np.ones(flat.shape[:2], "int32")
    expected = _per_token_reference(router, flat, ids).reshape(shape)
    out = keras.ops.convert_to_numpy(router(x, modality="text"))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_narrower_modality_uses_leading_rows_and_columns():
    """Built at the widest modality (64), a 16-wide text input goes through
    `down[text][:16]` and `up[text][:, :16]`: a module of its own width.
    Routing by ids needs the built width."""
    router = ModalityRouter(["image", "text"], rank=2, dropout=0.0)
    router.build((None, None, 64))
    _randomize(router)
    x = _x((3, 5, 16))
    single = AdaLink(rank=2, dropout=0.0)
    single(x)
    single.adalink_down.assign(router.adalink_down[1][:16])
    single.adalink_up.assign(router.adalink_up[1][:, :16])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(router(x, modality="text")),
        keras.ops.convert_to_numpy(single(x)),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="width 64.*width 16"):
        router(x, modality_ids=np.zeros((3, 5), "int32"))
    with pytest.raises(ValueError, match="width 64.*width 80"):
        router(_x((3, 5, 80)), modality="image")


def test_unified_has_one_module():
    router = ModalityRouter(["image", "text"], rank=4, unified=True)
    router(_x(), modality_ids=np.zeros((3, 7), "int32"))
    assert tuple(router.adalink_down.shape) == (1, 8, 4)


@pytest.mark.parametrize(
    "lengths,expected",
    [
        ([3, None], [0, 0, 0, 1, 1, 1, 1]),
        ([2, 4], [0, 0, 1, 1, 1, 1, -1]),
        ([0, None], [1] * 7),
    ],
)
def test_static_lengths_match_ids(lengths, expected):
    router = ModalityRouter(["image", "text"], rank=2, modality_lengths=lengths)
    x = _x()
    router(x)
    _randomize(router)
    ids = np.array([expected] * 3, "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(router(x)),
        keras.ops.convert_to_numpy(router(x, modality_ids=ids)),
        rtol=1e-6,
    )


def test_out_of_range_modality_id_eager():
    router = ModalityRouter(["image", "text"], rank=2)
    with pytest.raises(ValueError, match=r"< 2.*\[5\]"):
        router(_x(), modality_ids=np.full((3, 7), 5, "int32"))


def test_ids_required_without_lengths():
    with pytest.raises(ValueError, match="modality_ids"):
        ModalityRouter(["image", "text"], rank=2)(_x())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modalities": "image"},
        {"modalities": []},
        {"modalities": ["a", "a"]},
        {"modalities": ["a", "b"], "modality_lengths": [3]},
        {"modalities": ["a", "b"], "modality_lengths": [None, 3]},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="modalities|modality_lengths"):
        ModalityRouter(rank=2, **kwargs)
