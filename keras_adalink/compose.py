"""One multi-task model from adapters trained separately on one backbone.

Task `k`'s AdaLink module goes to slot `k` of a `TaskRouter` (smaller ranks
zero-padded, which is exact) and its linear head to slot `k` of a
`TaskHeads` layer, so every example of a mixed batch gets exactly what its
own single-task model gives. The frozen backbone is shared, never copied.
"""

import dataclasses
import os

import keras
import numpy as np
from keras_hub.models import Task

from keras_adalink.adapt import reattach
from keras_adalink.adapt import rebuild_task
from keras_adalink.adapter_file import adapter_variables
from keras_adalink.adapter_file import backbone_fingerprint
from keras_adalink.adapter_file import differences
from keras_adalink.adapter_file import find_adalink_backbone
from keras_adalink.adapter_file import read_adapter
from keras_adalink.layers import AdaLink
from keras_adalink.layers import TaskHeads
from keras_adalink.layers import TaskRouter
from keras_adalink.models import AdaLinkBackbone
from keras_adalink.models.ada_link_backbone import rerun_graph


@dataclasses.dataclass
class _Task:
    name: str
    down: np.ndarray  # [d, r]
    up: np.ndarray  # [r, d], the adapter's scale folded in
    kernel: np.ndarray | None  # [h, w]; None for a model without a head
    bias: np.ndarray | None  # [w]


@dataclasses.dataclass
class _Source:
    """What a source must share with the others, and the tasks it brings."""

    origin: str
    backbone: dict  # backbone_fingerprint
    insertion: str
    activation: str
    head: str | None  # the head layer's name; None without a head
    tasks: list
    composed: bool  # a TaskRouter with names: brings its own task names


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float32")


def _head_layer(model, adalink_backbone):
    """The final `Dense`/`TaskHeads` of `model`, or None without a head."""
    adapter_ids = {id(v) for v in adalink_backbone.adapter.weights}
    extra = {
        path: v
        for path, v in adapter_variables(model).items()
        if id(v) not in adapter_ids
    }
    if not extra:
        return None
    outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
    producers = {id(t._keras_history.operation) for t in outputs}
    head = outputs[0]._keras_history.operation if outputs else None
    if len(producers) != 1 or not isinstance(
        head, (keras.layers.Dense, TaskHeads)
    ):
        raise ValueError(
            "compose() needs each model's output to come from one linear "
            f"`Dense` head; the output of '{model.name}' comes from "
            f"{type(head).__name__}. Its weights outside the backbone: "
            f"{sorted(extra)[:6]}"
        )
    own = {id(v) for v in head.weights}
    others = sorted(p for p, v in extra.items() if id(v) not in own)
    if others:
        raise ValueError(
            f"compose() supports a linear head on the adapted backbone; "
            f"{model.name} also trains {others[:6]} outside its adapter and "
            f"its head '{head.name}'."
        )
    if isinstance(head, keras.layers.Dense) and (
        keras.activations.serialize(head.activation) != "linear"
    ):
        raise ValueError(
            f"compose() needs linear heads (logits); '{head.name}' of "
            f"{model.name} has activation "
            f"{keras.activations.serialize(head.activation)!r}."
        )
    return head


def _tasks_of_router(names, down, up, scale, kernel, bias, widths):
    tasks = []
    for k, name in enumerate(names):
        w = None if widths is None else widths[k]
        tasks.append(
            _Task(
                name,
                down[k],
                up[k] * scale,
                None if kernel is None else kernel[k][:, :w],
                None if bias is None else bias[k][:w],
            )
        )
    return tasks


def _refuse_adapter(cls_name, has_names, origin):
    if cls_name == "TaskRouter" and not has_names:
        raise ValueError(
            f"{origin} holds a TaskRouter trained jointly (one shared head, "
            "no task names); compose() takes single-task adapters and "
            "models made by compose()."
        )
    if cls_name not in ("AdaLink", "TaskRouter"):
        raise ValueError(
            f"{origin} holds a {cls_name}: compose() routes whole examples "
            "by task, and cannot place per-modality modules in task slots. "
            "Compose single AdaLink adapters."
        )


def _from_model(model, name, fingerprints):
    adalink_backbone = find_adalink_backbone(model)
    adapter = adalink_backbone.adapter
    names = getattr(adapter, "task_names", None)
    origin = f"model '{model.name}'"
    _refuse_adapter(type(adapter).__name__, names is not None, origin)
    head = _head_layer(model, adalink_backbone)
    base = adalink_backbone.backbone
    if id(base) not in fingerprints:
        fingerprints[id(base)] = backbone_fingerprint(base)
    down, up = _numpy(adapter.adalink_down), _numpy(adapter.adalink_up)
    kernel = bias = None
    if head is not None:
        kernel = _numpy(head.kernel)
        bias = np.zeros(kernel.shape[:-2] + kernel.shape[-1:], "float32")
        if getattr(head, "bias", None) is not None:
            bias = _numpy(head.bias)
    if isinstance(adapter, AdaLink):
        tasks = [_Task(name, down, up * adapter.scale, kernel, bias)]
    else:
        widths = head.widths if isinstance(head, TaskHeads) else None
        if head is not None and widths is None:
            _refuse_adapter("TaskRouter", False, origin)
        tasks = _tasks_of_router(
            names, down, up, adapter.scale, kernel, bias, widths
        )
    return _Source(
        origin,
        fingerprints[id(base)],
        adalink_backbone.insertion,
        keras.activations.serialize(adapter.activation),
        None if head is None else head.name,
        tasks,
        names is not None,
    )


def _head_tensors(tensors, origin):
    """`(layer_name, kernel, bias)` of a file's non-adapter tensors."""
    rest = {k: v for k, v in tensors.items() if "adalink" not in k}
    if not rest:
        return None, None, None
    kernels = [k for k in rest if k.endswith("/kernel")]
    layer = kernels[0][: -len("/kernel")] if len(kernels) == 1 else None
    expected = {f"{layer}/kernel", f"{layer}/bias"}
    if layer is None or not set(rest) <= expected:
        raise ValueError(
            f"compose() supports a linear head on the adapted backbone; "
            f"{origin} holds {sorted(rest)[:6]} besides its adapter."
        )
    kernel = rest[f"{layer}/kernel"].astype("float32")
    bias = rest.get(f"{layer}/bias")
    if bias is None:
        bias = np.zeros(kernel.shape[:-2] + kernel.shape[-1:], "float32")
    return layer.split("/")[-1], kernel, bias.astype("float32")


def _from_file(path, name):
    record, tensors = read_adapter(path)
    adapter = record["adapter"]
    config = adapter["config"]
    names = config.get("task_names")
    origin = f"adapter file '{os.fspath(path)}'"
    _refuse_adapter(adapter["class"], names is not None, origin)
    down = next(v for k, v in tensors.items() if k.endswith("adalink_down"))
    up = next(v for k, v in tensors.items() if k.endswith("adalink_up"))
    head, kernel, bias = _head_tensors(tensors, origin)
    scale = float(config.get("scale", 1.0))
    if adapter["class"] == "AdaLink":
        tasks = [_Task(name, down, up * scale, kernel, bias)]
    else:
        widths = (record.get("task_heads") or {}).get("widths")
        tasks = _tasks_of_router(names, down, up, scale, kernel, bias, widths)
    return _Source(
        origin,
        record["backbone"],
        adapter["insertion"],
        config.get("activation", "linear"),
        head,
        tasks,
        names is not None,
    )


def _check_same(template, source):
    """Raises naming everything in which `source` differs from `template`."""
    problems = differences(
        "backbone",
        {k: v for k, v in template.backbone.items() if k != "weights_sha256"},
        {k: v for k, v in source.backbone.items() if k != "weights_sha256"},
    )
    if not problems and (
        template.backbone["weights_sha256"] != source.backbone["weights_sha256"]
    ):
        problems.append(
            "backbone weights: another checkpoint (weights fingerprint differs)"
        )
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
    if problems:
        raise ValueError(
            f"Cannot compose {source.origin} with {template.origin}; they "
            "must adapt the same frozen backbone the same way. Differences:"
            "\n  " + "\n  ".join(problems)
        )


def _default_name(source):
    if isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(source))
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem == "adapter":  # keras-adalink run folders: name the folder.
            stem = os.path.basename(os.path.dirname(path))
        return stem
    return None


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


def _read(entries, base):
    fingerprints = {}
    sources = []
    for name, source in entries:
        if isinstance(source, (str, os.PathLike)):
            read = _from_file(source, name or _default_name(source))
        elif isinstance(source, keras.Model):
            read = _from_model(source, name, fingerprints)
        else:
            raise ValueError(
                "compose() takes adapted Keras models and adapter file "
                f"paths. Received: {type(source).__name__}"
            )
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
    template = next(
        (e[1] for e in entries if isinstance(e[1], keras.Model)), base
    )
    if template is None:
        raise ValueError(
            "Composing adapter files needs `base`: a model built like the "
            "ones that were saved (for example the single-task model before "
            "`load_adapter`), whose backbone and head layout it reuses."
        )
    return template, _from_model_layout(template, fingerprints), sources


def _from_model_layout(template, fingerprints):
    """The template's `_Source` (its tasks unused: it may be untrained)."""
    layout = _from_model(template, "base", fingerprints)
    return dataclasses.replace(
        layout, origin=f"the base model '{template.name}'"
    )


def compose(adapters, base: keras.Model | None = None, drop=()) -> keras.Model:
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

    Returns:
        A Keras model (a `Task` of the source's class for headless tasks,
        an `AdaLinkBackbone` for backbones).

    Example:
    >>> multi = keras_adalink.compose({"sentiment": sst, "topic": news})
    >>> multi.predict({**features, "task_id": np.array([0, 1, 1])})
    """
    entries = _entries(adapters)
    if not entries:
        raise ValueError("compose() needs at least one adapter.")
    template, layout, sources = _read(entries, base)
    for source in sources:
        _check_same(layout, source)
    tasks = [t for s in sources for t in s.tasks]
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"Task names must be distinct; repeated: {repeated}")
    unknown = sorted(set(drop) - set(names))
    if unknown:
        raise ValueError(f"Cannot drop unknown task(s) {unknown}.")
    tasks = [t for t in tasks if t.name not in set(drop)]
    if not tasks:
        raise ValueError("compose() would leave no task.")
    return _build(template, layout, tasks)


def _stack(arrays, shape):
    out = np.zeros((len(arrays),) + shape, "float32")
    for k, a in enumerate(arrays):
        out[(k,) + tuple(slice(0, n) for n in a.shape)] = a
    return out


def _build(template, layout, tasks):
    adalink_backbone = find_adalink_backbone(template)
    old = adalink_backbone.adapter
    dim = tasks[0].down.shape[0]
    rank = max(t.down.shape[1] for t in tasks)
    router = TaskRouter(
        num_tasks=len(tasks),
        rank=rank,
        task_names=[t.name for t in tasks],
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
    router.adalink_down.assign(_stack([t.down for t in tasks], (dim, rank)))
    router.adalink_up.assign(_stack([t.up for t in tasks], (rank, dim)))
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
    heads = TaskHeads(widths, name=layout.head, dtype=old.dtype_policy)
    model = _rewire(template, adalink_backbone, composed, heads)
    hidden = tasks[0].kernel.shape[0]
    heads.kernel.assign(
        _stack([t.kernel for t in tasks], (hidden, max(widths)))
    )
    heads.bias.assign(_stack([t.bias for t in tasks], (max(widths),)))
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
    head = _head_layer(template, adalink_backbone)
    made = {}

    def call_function(layer, *args, **kwargs):
        if layer is adalink_backbone:
            return composed({**args[0], "task_id": task_id})
        if layer is head:
            made["outputs"] = heads(args[0], task_id=task_id)
            return made["outputs"]
        return layer(*args, **kwargs)

    # The private graph replay is isolated in AdaLinkBackbone's helper; the
    # head (the template's only output, checked) gives the dict outputs.
    rerun_graph(template, graph_inputs, call_function)
    return keras.Model(
        {**graph_inputs, "task_id": task_id}, made["outputs"], name="composed"
    )
