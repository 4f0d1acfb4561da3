"""A live model: tasks written into and cleared from free slots in place.

`compose(..., capacity=N)` leaves spare `TaskRouter`/`TaskHeads` slots
free. `add_task` and `remove_task` replace whole variables with values of
the same shape and dtype (`variable.assign`), so the compiled `predict` and
`generate` functions, which take variables as state, are neither retraced
nor recompiled.
"""

import numpy as np
from keras import ops

from keras_adalink.compose import mismatches
from keras_adalink.compose import model_layout
from keras_adalink.compose import read_source
from keras_adalink.compose_sources import head_layer
from keras_adalink.layers import TaskHeads
from keras_adalink.layers import TaskRouter
from keras_adalink.models import find_adalink_backbone
from keras_adalink.slot_lock import guard


def _live_layers(model):
    adalink_backbone = find_adalink_backbone(model)
    router = adalink_backbone.adapter
    if not isinstance(router, TaskRouter) or router.task_names is None:
        raise ValueError(
            f"{model.name} has no named task slots; add_task and remove_task "
            "take models made by `keras_adalink.compose`."
        )
    heads = head_layer(model, adalink_backbone)
    return router, heads if isinstance(heads, TaskHeads) else None


def _write(router, heads, slot, down, up, kernel, bias):
    """Replaces slot `slot`'s weights, each variable whole, same shape."""
    writes = [
        (router.adalink_down, (slot, 0, 0), down[None]),
        (router.adalink_up, (slot, 0, 0), up[None]),
    ]
    if heads is not None:
        row = int(heads.offsets[slot])
        writes += [(heads.kernel, (row, 0), kernel), (heads.bias, (row,), bias)]
    for variable, start, value in writes:
        variable.assign(ops.slice_update(variable.value, start, value))


def _rename(router, slot, name):
    names = list(router.task_names)
    names[slot] = name
    # A new list (configs handed out before keep theirs), set as a plain
    # attribute: Keras' tracking would walk every name on each write.
    object.__setattr__(router, "task_names", names)


def _fit(model, router, heads, name, source):
    """The padded weights of `source`'s one task, and its head width;
    raises unless it fits the model."""
    if source.composed:
        raise ValueError(
            f"add_task() adds one task; {source.origin} holds composed tasks "
            f"{[t.name for t in source.tasks][:10]}. Add them one at a time."
        )
    problems = mismatches(model_layout(model, {}), source)
    if problems:
        raise ValueError(
            f"Cannot add task '{name}': {source.origin} does not fit "
            f"{model.name}: " + "; ".join(problems)
        )
    (task,) = source.tasks
    dim, rank = task.down.shape
    if rank > router.rank:
        raise ValueError(
            f"Cannot add task '{name}': its rank {rank} exceeds the model's "
            f"rank {router.rank}; compose a model that includes it."
        )
    down = np.zeros((dim, router.rank), "float32")
    down[:, :rank] = task.down
    up = np.zeros((router.rank, dim), "float32")
    up[:rank] = task.up / router.scale
    if heads is None:
        return (down, up, None, None), None
    kernel = np.ascontiguousarray(task.kernel.T, "float32")
    return (down, up, kernel, task.bias.astype("float32")), kernel.shape[0]


def add_task(model, name: str, adapter) -> int:
    """Writes a task into a free slot of a live model, in place.

    The model must come from `keras_adalink.compose(..., capacity=N)` (or be
    loaded from its `.keras` file). The adapter is checked as `compose`
    checks its sources (same frozen backbone class, config and weights
    fingerprint, insertion point, activation and head layer); its rank may
    be smaller than the model's (zero-padded, exact), and its head must be
    as wide as a free slot's head. The first such free slot is then written
    whole with `variable.assign`: the compiled `predict` and `generate` are
    not retraced or recompiled, and the task's outputs equal those of a
    model composed with it from scratch. On any error a one-line
    `ValueError` says why and the model is unchanged.

    Writes are atomic for requests: `add_task`, `remove_task` and the
    model's `predict`, `predict_on_batch` and `generate` hold one lock (a
    slot is four variables written one after another), so a request sees a
    slot wholly before or wholly after a write. A model gets the lock from
    `compose` or, once loaded from a file, from its first `add_task` or
    `remove_task`. Direct calls `model(x)` do not take it: do not run them
    while another thread writes.

    Args:
        model: a live model (a composed model with free slots).
        name: str. The new task's name, not already in the model.
        adapter: an adapter file path written by `save_adapter`, or an
            adapted single-task model (from `adapt`, with its head if any).

    Returns:
        int, the task's slot: its `task_id`.

    Example:
    >>> live = keras_adalink.compose({"sentiment": sst}, capacity=4)
    >>> keras_adalink.add_task(live, "sentiment_v2", sst)  # or a file path
    1
    >>> ids = keras_adalink.task_ids(live, ["sentiment_v2", "sentiment"] * 2)
    >>> out = live.predict({**features, "task_id": ids[:3]}, verbose=0)
    """
    router, heads = _live_layers(model)
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"`name` must be a non-empty string. Received: name={name!r}"
        )
    # Reading and checking happen under the lock too: jax's predict
    # detaches the model's variables while it runs, and an adapted source
    # model shares the frozen backbone's.
    with guard(model):
        if name in router.slots:
            raise ValueError(
                f"Task '{name}' is already in {model.name} (slot "
                f"{router.slots[name]}); remove_task it first or pick "
                "another name."
            )
        source = read_source(name, adapter, {}, caller="add_task()")
        weights, width = _fit(model, router, heads, name, source)
        free = router.free_slots
        fitting = [k for k in free if width is None or heads.widths[k] == width]
        if not fitting:
            detail = (
                f"all {router.num_tasks} slots hold tasks"
                if not free
                else f"its head has {width} outputs, the free slots' heads "
                f"{sorted({heads.widths[k] for k in free})}"
            )
            raise ValueError(
                f"No free slot for task '{name}' in {model.name} ({detail}); "
                "compose with a larger capacity, e.g. "
                "`keras_adalink.compose([model], capacity=...)`."
            )
        _write(router, heads, fitting[0], *weights)
        _rename(router, fitting[0], name)
    return fitting[0]


def remove_task(model, name: str) -> int:
    """Clears a task's slot of a live model in place and frees it.

    The slot's adapter and head are set to zeros (whole-variable
    `variable.assign`, no recompilation), so its `task_id` then leaves
    inputs unchanged and outputs zeros, and `add_task` may reuse it. Holds
    the same lock as `add_task` (see there). An unknown name raises a
    `ValueError` and changes nothing.

    Args:
        model: a composed model (from `keras_adalink.compose`).
        name: str. The task to remove.

    Returns:
        int, the freed slot.

    Example:
    >>> live = keras_adalink.compose({"sentiment": sst}, capacity=4)
    >>> keras_adalink.add_task(live, "sentiment_v2", sst)
    1
    >>> keras_adalink.remove_task(live, "sentiment_v2")
    1
    >>> keras_adalink.task_ids(live, ["sentiment"]).tolist()  # untouched
    [0]
    """
    router, heads = _live_layers(model)
    with guard(model):
        slot = router.slots.get(name)
        if slot is None:
            raise ValueError(
                f"Unknown task {name!r}; {model.name} serves "
                f"{len(router.slots)} tasks: {list(router.slots)[:10]}"
            )
        dim = router.adalink_down.shape[1]
        zeros = [
            np.zeros((dim, router.rank), "float32"),
            np.zeros((router.rank, dim), "float32"),
            None,
            None,
        ]
        if heads is not None:
            width = heads.widths[slot]
            zeros[2:] = [
                np.zeros((width, heads.kernel.shape[1]), "float32"),
                np.zeros((width,), "float32"),
            ]
        _write(router, heads, slot, *zeros)
        _rename(router, slot, None)
    return slot
