"""Reading compose() sources: adapted models and adapter files.

Each source becomes a `Source`: what it must share with the others
(backbone fingerprint, insertion point, activation, head layer) and the
tasks it brings, as numpy weights (`TaskWeights`).
"""

import dataclasses
import os

import keras
import numpy as np

from keras_adalink import graph
from keras_adalink.adapter_file import adapter_variables
from keras_adalink.adapter_file import backbone_fingerprint
from keras_adalink.adapter_file import read_adapter
from keras_adalink.layers import AdaLink
from keras_adalink.layers import TaskHeads
from keras_adalink.models import find_adalink_backbone


@dataclasses.dataclass
class TaskWeights:
    name: str
    down: np.ndarray  # [d, r]
    up: np.ndarray  # [r, d], the adapter's scale folded in
    kernel: np.ndarray | None  # [h, w]; None for a model without a head
    bias: np.ndarray | None  # [w]


@dataclasses.dataclass
class Source:
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


def head_layer(model, adalink_backbone):
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
    producers = {id(graph.producer(t)[0]) for t in outputs}
    head = graph.producer(outputs[0])[0] if outputs else None
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
    heads = [(None, None)] * len(names)
    if kernel is not None:
        heads = TaskHeads(widths).split(kernel, bias)
    # Free slots of a live model (`None` names) bring no task.
    return [
        TaskWeights(name, down[k], up[k] * scale, *heads[k])
        for k, name in enumerate(names)
        if name is not None
    ]


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


def from_model(model, name, fingerprints):
    adalink_backbone = find_adalink_backbone(model)
    adapter = adalink_backbone.adapter
    names = getattr(adapter, "task_names", None)
    origin = f"model '{model.name}'"
    _refuse_adapter(type(adapter).__name__, names is not None, origin)
    head = head_layer(model, adalink_backbone)
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
        tasks = [TaskWeights(name, down, up * adapter.scale, kernel, bias)]
    else:
        widths = head.widths if isinstance(head, TaskHeads) else None
        if head is not None and widths is None:
            _refuse_adapter("TaskRouter", False, origin)
        tasks = _tasks_of_router(
            names, down, up, adapter.scale, kernel, bias, widths
        )
    return Source(
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


def from_file(path, name):
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
        tasks = [TaskWeights(name, down, up * scale, kernel, bias)]
    else:
        widths = (record.get("task_heads") or {}).get("widths")
        tasks = _tasks_of_router(names, down, up, scale, kernel, bias, widths)
    return Source(
        origin,
        record["backbone"],
        adapter["insertion"],
        config.get("activation", "linear"),
        head,
        tasks,
        names is not None,
    )


def default_name(source):
    if isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(source))
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem == "adapter":  # keras-adalink run folders: name the folder.
            stem = os.path.basename(os.path.dirname(path))
        return stem
    return None
