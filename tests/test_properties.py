"""Property-based checks over shapes, ranks, masks, modality lengths, ids."""

import keras
import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_adalink import AdaLink
from keras_adalink import ModalityRouter
from keras_adalink import TaskRouter

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def shapes(draw):
    batch = draw(st.integers(1, 4))
    seq = draw(st.integers(1, 9))
    dim = draw(st.integers(2, 12))
    rank = draw(st.integers(1, dim))
    return batch, seq, dim, rank


def _x(batch, seq, dim, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, seq, dim)).astype("float32")


def _randomize(layer, seed):
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))


def _np(x):
    return keras.ops.convert_to_numpy(x)


@SETTINGS
@given(shapes(), st.integers(0, 1000), st.sampled_from([None, "relu"]))
def test_identity_at_init(shape, seed, activation):
    batch, seq, dim, rank = shape
    x = _x(batch, seq, dim, seed)
    np.testing.assert_array_equal(
        _np(AdaLink(rank=rank, activation=activation)(x)), x
    )
    ids = np.random.default_rng(seed).integers(0, 3, size=batch)
    np.testing.assert_array_equal(
        _np(TaskRouter(3, rank=rank)(x, task_id=ids)), x
    )
    modality = np.random.default_rng(seed).integers(-1, 2, size=(batch, seq))
    np.testing.assert_array_equal(
        _np(ModalityRouter(["a", "b"], rank=rank)(x, modality_ids=modality)), x
    )


@SETTINGS
@given(shapes(), st.integers(0, 1000))
def test_token_mask_selects_exactly(shape, seed):
    batch, seq, dim, rank = shape
    x = _x(batch, seq, dim, seed)
    mask = np.random.default_rng(seed).random((batch, seq)) < 0.5
    layer = AdaLink(rank=rank, dropout=0.0)
    layer(x)
    _randomize(layer, seed)
    out = _np(layer(x, token_mask=mask))
    full = _np(layer(x))
    np.testing.assert_array_equal(out[~mask], x[~mask])
    np.testing.assert_allclose(out[mask], full[mask], rtol=1e-5, atol=1e-5)


@SETTINGS
@given(shapes(), st.integers(0, 1000), st.integers(1, 4), st.booleans())
def test_modality_router_equals_per_token_adalink(shape, seed, m, unified):
    batch, seq, dim, rank = shape
    x = _x(batch, seq, dim, seed)
    names = [f"m{i}" for i in range(m)]
    ids = np.random.default_rng(seed).integers(-1, m, size=(batch, seq))
    router = ModalityRouter(names, rank=rank, unified=unified, dropout=0.0)
    router(x, modality_ids=ids)
    _randomize(router, seed)
    out = _np(router(x, modality_ids=ids))
    expected = x.copy()
    for i in range(m):
        single = AdaLink(rank=rank, dropout=0.0)
        single(x)
        module = 0 if unified else i
        single.adalink_down.assign(router.adalink_down[module])
        single.adalink_up.assign(router.adalink_up[module])
        expected[ids == i] = _np(single(x))[ids == i]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(shapes(), st.integers(0, 1000), st.integers(1, 5))
def test_task_router_equals_per_example_adalink(shape, seed, tasks):
    batch, seq, dim, rank = shape
    x = _x(batch, seq, dim, seed)
    ids = np.random.default_rng(seed).integers(0, tasks, size=batch)
    router = TaskRouter(tasks, rank=rank, dropout=0.0)
    router(x, task_id=ids)
    _randomize(router, seed)
    out = _np(router(x, task_id=ids))
    for b, t in enumerate(ids):
        single = AdaLink(rank=rank, dropout=0.0)
        single(x[b : b + 1])
        single.adalink_down.assign(router.adalink_down[t])
        single.adalink_up.assign(router.adalink_up[t])
        np.testing.assert_allclose(
            out[b], _np(single(x[b : b + 1]))[0], rtol=1e-4, atol=1e-4
        )


@SETTINGS
@given(
    st.integers(1, 3),
    st.lists(st.integers(0, 5), min_size=1, max_size=3),
    st.booleans(),
    st.integers(0, 1000),
)
def test_static_lengths_equal_explicit_ids(batch, lengths, rest, seed):
    static = list(lengths) + [None] if rest else list(lengths)
    names = [f"m{i}" for i in range(len(static))]
    seq = sum(lengths) + 2
    x = _x(batch, seq, 6, seed)
    router = ModalityRouter(names, rank=2, modality_lengths=static, dropout=0.0)
    router(x)
    _randomize(router, seed)
    ids = np.full(seq, -1)
    start = 0
    for i, n in enumerate(lengths):
        ids[start : start + n] = i
        start += n
    if rest:
        ids[start:] = len(lengths)
    ids = np.broadcast_to(ids, (batch, seq)).astype("int32")
    np.testing.assert_allclose(
        _np(router(x)), _np(router(x, modality_ids=ids)), rtol=1e-5, atol=1e-5
    )


@settings(max_examples=6, deadline=None)
@given(
    st.integers(1, 8),
    st.floats(0.1, 2.0),
    st.sampled_from(["bert", "roberta", "electra"]),
    st.integers(0, 1000),
)
def test_fold_equals_unfolded(rank, scale, family, seed):
    import keras_adalink
    from tests.fixtures.checks import randomize_adapter
    from tests.fixtures.checks import to_numpy
    from tests.fixtures.encoders import BACKBONES
    from tests.fixtures.encoders import backbone_inputs

    backbone = BACKBONES[family]()
    adapted = keras_adalink.adapt(backbone, rank=rank, scale=scale)
    randomize_adapter(adapted, seed=seed, scale=0.2)
    folded = keras_adalink.fold(adapted)
    x = backbone_inputs(backbone, seed=seed)
    for a, b in zip(
        keras.tree.flatten(to_numpy(folded(x))),
        keras.tree.flatten(to_numpy(adapted(x))),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
