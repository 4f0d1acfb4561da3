import keras
import numpy as np
import pytest

from keras_adalink import AdaLink
from keras_adalink import TaskRouter
from tests.fixtures.checks import run_layer_checks


def _x(shape=(5, 6, 8), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_standard_checks():
    run_layer_checks(
        TaskRouter,
        {"num_tasks": 3, "rank": 2},
        _x(),
        {"task_id": np.array([0, 1, 2, 1, 0], "int32")},
    )


def test_weights_are_stacked():
    router = TaskRouter(num_tasks=3, rank=2)
    router(_x(), task_id=np.zeros(5, "int32"))
    assert tuple(router.adalink_down.shape) == (3, 8, 2)
    assert tuple(router.adalink_up.shape) == (3, 2, 8)


@pytest.mark.parametrize("shape", [(5, 6, 8), (5, 2, 3, 8)])
def test_mixed_batch_equals_per_example_adalink(shape):
    """Rank 3, and rank 4 (Gemma4's image embeddings: batch, items,
    tokens, d)."""
    router = TaskRouter(num_tasks=3, rank=2, dropout=0.0, activation="relu")
    x = _x(shape)
    task_id = np.array([2, 0, 1, 2, 0], "int32")
    router(x, task_id=task_id)
    rng = np.random.default_rng(3)
    router.adalink_down.assign(rng.normal(size=(3, 8, 2)).astype("float32"))
    router.adalink_up.assign(rng.normal(size=(3, 2, 8)).astype("float32"))
    mixed = keras.ops.convert_to_numpy(router(x, task_id=task_id))
    for b, t in enumerate(task_id):
        single = AdaLink(rank=2, dropout=0.0, activation="relu")
        single(x[b : b + 1])
        single.adalink_down.assign(router.adalink_down[t])
        single.adalink_up.assign(router.adalink_up[t])
        expected = keras.ops.convert_to_numpy(single(x[b : b + 1]))[0]
        np.testing.assert_allclose(mixed[b], expected, rtol=1e-5, atol=1e-5)


def test_task_id_column_shape_accepted():
    router = TaskRouter(num_tasks=2, rank=2)
    out = router(_x(), task_id=np.zeros((5, 1), "int32"))
    assert tuple(out.shape) == (5, 6, 8)


@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_task_id_eager(bad):
    router = TaskRouter(num_tasks=3, rank=2)
    with pytest.raises(ValueError, match=rf"\[0, 3\).*\[{bad}\]"):
        router(_x(), task_id=np.array([0, 1, bad, 0, 0], "int32"))


def test_float_task_id_rejected():
    router = TaskRouter(num_tasks=3, rank=2)
    with pytest.raises(TypeError, match="int tensor"):
        router(_x(), task_id=np.zeros(5, "float32"))


def test_bad_num_tasks():
    with pytest.raises(ValueError, match="num_tasks=0"):
        TaskRouter(num_tasks=0, rank=2)
