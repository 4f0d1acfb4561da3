"""One multi-task model from adapters trained separately on one backbone.

Task `k`'s AdaLink module goes to slot `k` of a `TaskRouter` (smaller ranks
zero-padded, which is exact) and its linear head to slot `k` of a
`TaskHeads` layer, so every example of a mixed batch gets exactly what its
own single-task model gives. The frozen backbone is shared, never copied.
"""

import collections
import dataclasses
import os

import keras
import numpy as np
from keras_hub.models import Task

from keras_adalink import graph
from keras_adalink.adapt import reattach
from keras_adalink.adapter_file import backbone_differences
from keras_adalink.compose_sources import default_name
from keras_adalink.compose_sources import from_file
from keras_adalink.compose_sources import from_model
from keras_adalink.compose_sources import head_layer
from keras_adalink.layers import TaskHeads
from keras_adalink.layers import TaskRouter
from keras_adalink.models import AdaLinkBackbone
from keras_adalink.models import find_adalink_backbone
from keras_adalink.models.tasks import rebuild_task
from keras_adalink.slot_lock import guard


def _check_same(template, source):
    """Raises naming everything in which `source` differs from `template`."""
    problems = mismatches(template, source)
    if problems:
        raise ValueError(
            f"Cannot compose {source.origin} with {template.origin}; they "
            "must adapt the same frozen backbone the same way. Differences:"
            "\n  " + "\n  ".join(problems)
        )


def mismatches(template, source):
    """Everything in which `source` differs from `template` (backbone
    fingerprint, insertion, activation, head layer, widths), as lines."""
    problems = backbone_differences(template.backbone, source.backbone)
    for field in ("insertion", "activation", "head"):
        mine, theirs = getattr(template, field), getattr(source, field)
        if mine != theirs:
            problems.append(f"{field}: {theirs!r}, the first has {mine!r}")
    dims = {
        (t.down.shape[0], None if t.kernel is None else t.kernel.shape[0])
        for t in template.tasks + source.tasks
    }
    if len(dims) > 1:
        problems.append(f"(embedding width, head input width): {sorted(dims)}")
    return problems


def _entries(adapters):
    if isinstance(adapters, dict):
        return list(adapters.items())
    entries = []
    for item in adapters:
        if isinstance(item, tuple) and len(item) == 2:
            entries.append(item)
        else:
            entries.append((None, item))
    return entries


def read_source(name, source, fingerprints, caller="compose()"):
    """The `Source` of an adapted model or an adapter file path."""
    if isinstance(source, (str, os.PathLike)):
        return from_file(source, name or default_name(source))
    if isinstance(source, keras.Model):
        return from_model(source, name, fingerprints)
    raise ValueError(
        f"{caller} takes adapted Keras models and adapter file paths. "
        f"Received: {type(source).__name__}"
    )


def _read(entries, base):
    fingerprints = {}
    sources = []
    for name, source in entries:
        read = read_source(name, source, fingerprints)
        if read.composed and name is not None:
            raise ValueError(
                f"{read.origin} is a composed model that carries its own "
                f"task names; pass it without a name (received '{name}')."
            )
        if any(t.name is None for t in read.tasks):
            raise ValueError(
                f"{read.origin} needs a task name: pass "
                "`{name: model}` or `(name, model)`."
            )
        sources.append(read)
    for (_, source), read in zip(entries, sources):
        if isinstance(source, keras.Model):  # the first model: read already
            return source, read, sources
    if base is None:
        raise ValueError(
            "Composing adapter files needs `base`: a model built like the "
            "ones that were saved (for example the single-task model before "
            "`load_adapter`), whose backbone and head layout it reuses."
        )
    return base, model_layout(base, fingerprints), sources


def model_layout(template, fingerprints):
    """The template's `Source` (its tasks unused: it may be untrained)."""
    layout = from_model(template, "base", fingerprints)
    return dataclasses.replace(
        layout, origin=f"the base model '{template.name}'"
    )


def compose(
    adapters,
    base: keras.Model | None = None,
    drop=(),
    capacity: int | None = None,
) -> keras.Model:
    """One model serving many separately trained tasks on one backbone.

    Each task's AdaLink module fills one slot of a `TaskRouter` (named by
    `task_names`) and its linear head one slot of a `TaskHeads` layer; the
    model takes an extra int `task_id` input (`[batch]`) and one batch may
    mix tasks. Example `b` gets exactly its own task's output: for models
    with heads the output is `{"outputs": [batch, W], "num_outputs":
    [batch]}` (the first `num_outputs[b]` values of row `b` are its task's
    logits or values, the rest zero padding). Models without a head
    (backbones, causal LMs) keep their outputs; a causal LM keeps
    `generate()`, which routes a mixed batch by `task_id` in its inputs.

    Sources must adapt the same frozen backbone (class, config and weights
    fingerprint) at the same insertion point, with the same activation and
    head layer; a `ModalityRouter`, a jointly trained `TaskRouter` and
    repeated task names are refused, naming what differs. A composed model
    is itself a source: `compose([multi, ("new", model)])` adds a task and
    `compose([multi], drop=["old"])` removes one; other tasks are untouched.

    Args:
        adapters: dict `{name: source}`, or a list of sources and
            `(name, source)` pairs. A source is an adapted model (from
            `adapt`, with its head if any) or an adapter file path; a file
            without a name is named by its stem (`runs/rt/adapter.safetensors`
            -> `"rt"`). Composed models and files bring their own names.
        base: a model built like the sources (e.g. the untrained
            single-task model), needed only when every source is a file.
        drop: task names to leave out.
        capacity: int. Number of task slots, at least the number of tasks;
            the spare slots are free (zero adapters, which leave inputs
            unchanged, and zero heads as wide as the widest composed head)
            and `keras_adalink.add_task` fills them in place, without
            recompiling. Defaults to `None` (one slot per task).

    Returns:
        A Keras model (a `Task` of the source's class for headless tasks,
        an `AdaLinkBackbone` for backbones).

    Example:
    >>> multi = keras_adalink.compose({"sentiment": sst, "topic": news})
    >>> out = multi.predict(
    ...     {**features, "task_id": np.array([0, 1, 1])}, verbose=0)
    """
    entries = _entries(adapters)
    if not entries:
        raise ValueError("compose() needs at least one adapter.")
    template, layout, sources = _read(entries, base)
    for source in sources:
        _check_same(layout, source)
    tasks = [t for s in sources for t in s.tasks]
    names = [t.name for t in tasks]
    repeated = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    if repeated:
        raise ValueError(f"Task names must be distinct; repeated: {repeated}")
    drop = {drop} if isinstance(drop, str) else set(drop)
    unknown = sorted(drop - set(names))
    if unknown:
        raise ValueError(f"Cannot drop unknown task(s) {unknown}.")
    tasks = [t for t in tasks if t.name not in drop]
    if not tasks:
        raise ValueError("compose() would leave no task.")
    if capacity is not None and (
        isinstance(capacity, bool)
        or not isinstance(capacity, int)
        or capacity < len(tasks)
    ):
        raise ValueError(
            f"`capacity` must be an int >= the number of tasks "
            f"({len(tasks)}). Received: capacity={capacity!r}"
        )
    model = _build(template, layout, tasks, capacity or len(tasks))
    if capacity is not None:  # live: add_task/remove_task will write
        guard(model)
    return model


def task_ids(model: keras.Model, names) -> np.ndarray:
    """The `task_id` values of task `names` in a composed model.

    Args:
        model: a model from `compose` (or any model whose `TaskRouter` has
            `task_names`).
        names: a task name or a list of them.

    Returns:
        int32 numpy array `[len(names)]`; raises `ValueError` listing the
        model's tasks on an unknown name.

    Example:
    >>> ids = keras_adalink.task_ids(multi, ["topic", "sentiment", "topic"])
    >>> out = multi.predict({**features, "task_id": ids}, verbose=0)
    """
    adapter = find_adalink_backbone(model).adapter
    if not isinstance(adapter, TaskRouter):
        raise ValueError(
            f"{model.name} has no TaskRouter; task names belong to models "
            "made by `keras_adalink.compose`."
        )
    return adapter.task_index(names)


def _stack(arrays, shape, spare=0):
    out = np.zeros((len(arrays) + spare,) + shape, "float32")
    for k, a in enumerate(arrays):
        out[(k,) + tuple(slice(0, n) for n in a.shape)] = a
    return out


def _build(template, layout, tasks, capacity):
    adalink_backbone = find_adalink_backbone(template)
    old = adalink_backbone.adapter
    dim = tasks[0].down.shape[0]
    rank = max(t.down.shape[1] for t in tasks)
    spare = capacity - len(tasks)  # free slots: zero weights, no name
    router = TaskRouter(
        num_tasks=capacity,
        rank=rank,
        task_names=[t.name for t in tasks] + [None] * spare,
        activation=layout.activation,
        dropout=old.dropout,
        down_initializer="zeros",
        dtype=old.dtype_policy,
        name="adalink",
    )
    composed = AdaLinkBackbone(
        adalink_backbone.backbone,
        router,
        insertion=layout.insertion,
        name="adalink_backbone",
    )
    router.adalink_down.assign(
        _stack([t.down for t in tasks], (dim, rank), spare)
    )
    router.adalink_up.assign(_stack([t.up for t in tasks], (rank, dim), spare))
    if template is adalink_backbone:
        return composed
    if layout.head is None:
        if isinstance(template, Task):
            return reattach(rebuild_task(template, composed))
        raise ValueError(
            "compose() takes backbones, KerasHub tasks, or models with a "
            f"linear head; {template.name} is none of these."
        )
    widths = [t.kernel.shape[-1] for t in tasks]
    widths += [max(widths)] * spare
    heads = TaskHeads(widths, name=layout.head, dtype=old.dtype_policy)
    model = _rewire(template, adalink_backbone, composed, heads)
    free_rows = sum(widths[len(tasks) :])
    head_dim = tasks[0].kernel.shape[0]
    heads.kernel.assign(
        np.concatenate(
            [t.kernel.T for t in tasks]
            + [np.zeros((free_rows, head_dim), "float32")]
        )
    )
    free_bias = np.zeros(free_rows, "float32")
    heads.bias.assign(np.concatenate([t.bias for t in tasks] + [free_bias]))
    return model


def _rewire(template, adalink_backbone, composed, heads):
    """`template`'s graph with `composed` and `heads` in place of its
    adapted backbone and head, plus a `task_id` input feeding both."""
    graph_inputs = keras.tree.map_structure(
        lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name),
        template.input,
    )
    if not isinstance(graph_inputs, dict):
        raise ValueError(
            "compose() needs a model with named (dict) inputs, like KerasHub "
            "backbones and tasks."
        )
    task_id = graph_inputs.get("task_id")
    if task_id is None:
        task_id = keras.Input(shape=(), dtype="int32", name="task_id")
    head = head_layer(template, adalink_backbone)
    made = {}

    def call_function(layer, *args, **kwargs):
        if layer is adalink_backbone:
            return composed({**args[0], "task_id": task_id})
        if layer is head:
            made["outputs"] = heads(args[0], task_id=task_id)
            return made["outputs"]
        return layer(*args, **kwargs)

    # The head (the template's only output, checked) gives the dict outputs.
    graph.replay(template, graph_inputs, call_function)
    return keras.Model(
        {**graph_inputs, "task_id": task_id}, made["outputs"], name="composed"
    )
