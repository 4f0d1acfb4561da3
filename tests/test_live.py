"""A live model: add_task / remove_task write free slots in place."""

import functools
import threading

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink.heads import mean_pooled_classifier
from keras_adalink.layers import TaskRouter
from keras_adalink.models import find_adalink_backbone
from tests.fixtures.checks import to_numpy
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.encoders import backbone_inputs


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return BACKBONES["bert"]()


def _task_model(backbone, rank, width, seed):
    """A single-task classifier with nonzero adapter and head weights."""
    model = mean_pooled_classifier(
        keras_adalink.adapt(backbone, rank=rank), width
    )
    rng = np.random.default_rng(seed)
    for v in model.trainable_weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def tasks(backbone):
    """Four 3-way classifiers of ranks 4, 2, 3, 1."""
    return {
        name: _task_model(backbone, rank, 3, seed)
        for seed, (name, rank) in enumerate(zip("abcd", (4, 2, 3, 1)))
    }


def _router(model):
    return find_adalink_backbone(model).adapter


def _weights(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def _predict(model, x, ids):
    out = model.predict({**x, "task_id": np.asarray(ids, "int32")}, verbose=0)
    return to_numpy(out)


class _TraceCounter:
    """Counts `TaskRouter.call` runs on one router: in a compiled predict
    (jax, tensorflow) the Python call runs only while tracing."""

    def __init__(self, monkeypatch, router):
        self.count = 0
        call = TaskRouter.call

        @functools.wraps(call)
        def counted(layer, *args, **kwargs):
            if layer is router:
                self.count += 1
            return call(layer, *args, **kwargs)

        monkeypatch.setattr(TaskRouter, "call", counted)


def test_capacity_leaves_free_slots(backbone, tasks, tmp_path):
    live = keras_adalink.compose({"a": tasks["a"], "b": tasks["b"]}, capacity=4)
    router = _router(live)
    assert router.task_names == ["a", "b", None, None]
    assert router.free_slots == [2, 3]
    assert live.get_layer("head").widths == [3, 3, 3, 3]
    x = backbone_inputs(backbone, batch=4)
    out = _predict(live, x, [0, 1, 2, 3])
    np.testing.assert_array_equal(out["outputs"][2:], 0)  # free: zeros
    assert np.abs(out["outputs"][:2]).min() > 0
    with pytest.raises(ValueError, match="capacity=1"):
        keras_adalink.compose({"a": tasks["a"], "b": tasks["b"]}, capacity=1)
    # A live model is a compose source: only its named tasks come along.
    again = keras_adalink.compose([live])
    assert _router(again).task_names == ["a", "b"]
    # Saved free slots stay free; the loaded model takes new tasks.
    live.save(tmp_path / "live.keras")
    loaded = keras.saving.load_model(tmp_path / "live.keras")
    assert _router(loaded).task_names == ["a", "b", None, None]
    assert keras_adalink.add_task(loaded, "c", tasks["c"]) == 2
    scratch = keras_adalink.compose(
        {"a": tasks["a"], "b": tasks["b"], "c": tasks["c"]}
    )
    np.testing.assert_allclose(
        _predict(loaded, x, [2, 0, 2, 1])["outputs"],
        _predict(scratch, x, [2, 0, 2, 1])["outputs"],
        atol=1e-5,
    )


def test_add_and_remove_without_retracing(backbone, tasks, monkeypatch):
    live = keras_adalink.compose({"a": tasks["a"]}, capacity=2)
    traces = _TraceCounter(monkeypatch, _router(live))
    x = backbone_inputs(backbone, batch=4)
    ids = [1, 0, 1, 0]
    before = _predict(live, x, ids)
    predict_function = live.predict_function
    assert keras_adalink.add_task(live, "c", tasks["c"]) == 1
    added = _predict(live, x, ids)
    assert keras_adalink.remove_task(live, "c") == 1
    removed = _predict(live, x, ids)
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert traces.count == 1
        assert live.predict_function is predict_function
    # torch predicts eagerly: every predict runs `call`, nothing to retrace.
    scratch = keras_adalink.compose({"a": tasks["a"], "c": tasks["c"]})
    expected = _predict(scratch, x, ids)
    np.testing.assert_allclose(
        added["outputs"], expected["outputs"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(added["num_outputs"], 3)
    assert np.abs(added["outputs"][[0, 2]]).min() > 0
    for out in (before, removed):
        np.testing.assert_array_equal(out["outputs"][[0, 2]], 0)
        np.testing.assert_allclose(
            out["outputs"][[1, 3]], expected["outputs"][[1, 3]], atol=1e-5
        )
    assert _router(live).task_names == ["a", None]


def test_add_from_file_with_smaller_rank(backbone, tasks, tmp_path):
    keras_adalink.save_adapter(tasks["d"], tmp_path / "d.safetensors")
    live = keras_adalink.compose({"a": tasks["a"]}, capacity=3)
    assert keras_adalink.add_task(live, "d", tmp_path / "d.safetensors") == 1
    assert keras_adalink.task_ids(live, ["d"]).tolist() == [1]
    scratch = keras_adalink.compose({"a": tasks["a"], "d": tasks["d"]})
    x = backbone_inputs(backbone, batch=3)
    np.testing.assert_allclose(
        _predict(live, x, [1, 0, 1])["outputs"],
        _predict(scratch, x, [1, 0, 1])["outputs"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_inputs_leave_the_model_unchanged(backbone, tasks):
    live = keras_adalink.compose({"a": tasks["b"], "b": tasks["c"]}, capacity=3)
    keras.utils.set_random_seed(7)
    other_base = _task_model(BACKBONES["bert"](), 2, 3, 9)
    cases = [
        (lambda: keras_adalink.add_task(live, "b", tasks["d"]), "already in"),
        (lambda: keras_adalink.remove_task(live, "zz"), "Unknown task 'zz'"),
        (
            lambda: keras_adalink.add_task(live, "o", other_base),
            "backbone weights",
        ),
        (
            lambda: keras_adalink.add_task(live, "r", tasks["a"]),
            "rank 4 exceeds the model's rank 3",
        ),
        (
            lambda: keras_adalink.add_task(
                live, "w", _task_model(backbone, 2, 2, 5)
            ),
            "its head has 2 outputs",
        ),
        (lambda: keras_adalink.add_task(live, "m", live), "composed tasks"),
        (lambda: keras_adalink.add_task(live, "", tasks["d"]), "non-empty"),
    ]
    before = _weights(live)
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)
        assert _router(live).task_names == ["a", "b", None]
        for old, new in zip(before, _weights(live)):
            np.testing.assert_array_equal(old, new)
    keras_adalink.add_task(live, "d", tasks["d"])
    with pytest.raises(ValueError, match="larger capacity"):
        keras_adalink.add_task(live, "e", tasks["d"])
    with pytest.raises(ValueError, match="no named task slots"):
        keras_adalink.add_task(tasks["a"], "e", tasks["d"])


def test_requests_never_see_a_half_written_slot(backbone, tasks):
    """A thread predicts while another swaps the tasks of slot 1; every
    prediction sees slot 1 wholly empty, wholly `c` or wholly `d`."""
    live = keras_adalink.compose({"a": tasks["a"]}, capacity=2)
    x = backbone_inputs(backbone, batch=4)
    ids = [1, 0, 1, 1]
    states = {
        name: _predict(
            keras_adalink.compose({"a": tasks["a"], name: tasks[name]}),
            x,
            ids,
        )["outputs"]
        for name in "cd"
    }
    states["empty"] = np.where(np.asarray(ids)[:, None] == 1, 0, states["c"])
    errors, stop, cycles = [], threading.Event(), []

    def write():
        try:
            while not stop.is_set():
                for name in "cd":
                    keras_adalink.add_task(live, name, tasks[name])
                    keras_adalink.remove_task(live, name)
                cycles.append(1)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    batch = {**x, "task_id": np.asarray(ids, "int32")}
    live.predict_on_batch(batch)  # compiled before the writes start
    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    try:
        for _ in range(150):
            out = to_numpy(live.predict_on_batch(batch))["outputs"]
            match = [
                name
                for name, expected in states.items()
                if np.allclose(out, expected, rtol=1e-5, atol=1e-5)
            ]
            assert match, f"a mix of states: {out}"
            seen.append(match[0])
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert cycles and len(set(seen)) >= 2, seen  # slot 1 changed meanwhile
    # Every write landed: the slot is free again, and a last add is whole.
    assert _router(live).task_names == ["a", None]
    np.testing.assert_allclose(
        _predict(live, x, ids)["outputs"], states["empty"]
    )
    keras_adalink.add_task(live, "d", tasks["d"])
    np.testing.assert_allclose(
        _predict(live, x, ids)["outputs"], states["d"], rtol=1e-5, atol=1e-5
    )
