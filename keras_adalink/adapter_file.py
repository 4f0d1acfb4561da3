"""Adapter files: only the adapter (and trained head) weights, keyed by path.

Format: one safetensors file. Tensors are named by Keras variable path;
the header metadata holds a JSON record of the adapter config, insertion
point and a fingerprint of the frozen backbone. safetensors stores raw
arrays and JSON only, so reading a file never executes code.
"""

import hashlib
import json
import os
import tempfile

import keras
import numpy as np
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.numpy import save_file

from keras_adalink.layers import TaskHeads
from keras_adalink.models import find_adalink_backbone
from keras_adalink.models.walk import first_nested
from keras_adalink.quantization import quantization_modes
from keras_adalink.version import __version__

FORMAT = "keras_adalink.adapter"
FORMAT_VERSION = 1
_VALUES_PER_VARIABLE = 4096
_IGNORED_CONFIG_KEYS = ("name", "trainable", "dtype")
_TRAINING_ONLY = ("dropout",)


def adapter_variables(model):
    """`{path: variable}` of everything in `model` outside the frozen backbone.

    That is the adapter plus any head a task or user model puts on top.
    """
    frozen = {id(v) for v in find_adalink_backbone(model).backbone.weights}
    found = {}
    for variable in model.weights:
        if id(variable) in frozen:
            continue
        if variable.path in found and found[variable.path] is not variable:
            raise ValueError(
                f"Two adapter or head variables share the path "
                f"'{variable.path}'. Give their layers distinct names."
            )
        found[variable.path] = variable
    return found


def _plain_config(layer):
    config = layer.get_config()
    for key in _IGNORED_CONFIG_KEYS:
        config.pop(key, None)
    return json.loads(json.dumps(config, default=str))


def backbone_fingerprint(backbone):
    """Class, config, quantization modes and a hash of a strided sample of
    every weight (quantized weights as stored, scales included)."""
    digest = hashlib.sha256()
    # In construction order, by shape: variable paths carry auto-generated
    # layer names that change between two builds of the same model.
    for variable in backbone.weights:
        values = keras.ops.convert_to_numpy(variable).astype("float32")
        values = values.ravel()
        stride = max(1, values.size // _VALUES_PER_VARIABLE)
        digest.update(f"{tuple(variable.shape)}".encode())
        digest.update(np.ascontiguousarray(values[::stride]).tobytes())
    record = {
        "class": type(backbone).__name__,
        "config": _plain_config(backbone),
        "weights_sha256": digest.hexdigest(),
    }
    # A quantized base is another checkpoint (its weights hash differs);
    # the record says how, so a mismatch names it. Absent when unquantized,
    # so files of float bases read as before.
    modes = quantization_modes(backbone)
    if modes:
        record["quantization"] = modes
    return record


def _adapter_record(adalink_backbone):
    adapter = adalink_backbone.adapter
    return {
        "class": type(adapter).__name__,
        "config": _plain_config(adapter),
        "insertion": adalink_backbone.insertion,
    }


def _task_heads_record(model):
    """`{"widths": [...]}` of a composed model's `TaskHeads`, else None."""
    heads = first_nested(model, lambda x: isinstance(x, TaskHeads))
    return None if heads is None else {"widths": list(heads.widths)}


def describe_adapter(model):
    """The JSON record that `save_adapter` writes for `model`."""
    adalink_backbone = find_adalink_backbone(model)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "keras_adalink_version": __version__,
        "adapter": _adapter_record(adalink_backbone),
        "task_heads": _task_heads_record(model),
        "backbone": backbone_fingerprint(adalink_backbone.backbone),
        "variables": {
            path: list(v.shape) for path, v in adapter_variables(model).items()
        },
    }


def save_adapter(model, path):
    """Writes the adapter (and head) weights of `model` to one small file.

    The write is atomic: the file appears complete under `path` or not at
    all, and an existing file stays loadable until then.

    Args:
        model: a model returned by `keras_adalink.adapt()`, or one that
            contains such a model.
        path: str or path-like. Destination file, by convention
            `*.safetensors`.

    Example:
    >>> keras_adalink.save_adapter(model, "sentiment.safetensors")
    """
    path = os.fspath(path)
    record = describe_adapter(model)
    tensors = {
        name: np.ascontiguousarray(
            keras.ops.convert_to_numpy(v).astype("float32")
        )
        for name, v in adapter_variables(model).items()
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".partial")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={FORMAT: json.dumps(record)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_adapter(path):
    """`(record, tensors)` from an adapter file; raises a clear error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No adapter file at '{path}'.")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        record = json.loads(metadata[FORMAT])
    except (SafetensorError, KeyError, ValueError, OSError) as e:
        raise ValueError(
            f"'{path}' is not a readable keras_adalink adapter file "
            f"(truncated, corrupted or another format): {e}"
        ) from e
    if record.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not a keras_adalink adapter file.")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"'{path}' was written by a newer keras_adalink "
            f"({record.get('keras_adalink_version')}); upgrade to read it."
        )
    return record, tensors


def differences(prefix, expected, actual):
    """Human-readable lines for every key where two records differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(set(expected) | set(actual), key=str):
            lines += differences(
                f"{prefix}.{key}" if prefix else str(key),
                expected.get(key, "<absent>"),
                actual.get(key, "<absent>"),
            )
        return lines
    if expected != actual:
        return [f"{prefix}: file has {expected!r}, model has {actual!r}"]
    return []


def backbone_differences(expected, actual):
    """`differences` of two `backbone_fingerprint` records: class, config
    and quantization by key; then, if those agree, the weights hash (a
    different hash under the same config means another checkpoint)."""
    config = {k: v for k, v in expected.items() if k != "weights_sha256"}
    lines = differences(
        "backbone",
        config,
        {k: v for k, v in actual.items() if k != "weights_sha256"},
    )
    if not lines and expected["weights_sha256"] != actual["weights_sha256"]:
        lines.append(
            "backbone weights: another checkpoint than the one the adapter "
            "was trained on (weights fingerprint differs)"
        )
    return lines


def _weights_config(record):
    """The adapter record minus training-only settings (dropout), which do
    not change what the weights compute and may differ between runs."""
    adapter = dict(record["adapter"])
    config = dict(adapter["config"])
    if "layout" in config:  # files written by 0.1.0: the same setting
        config.setdefault("modality_lengths", config.pop("layout"))
    adapter["config"] = {
        k: v for k, v in config.items() if k not in _TRAINING_ONLY
    }
    return adapter


def load_adapter(model, path):
    """Loads adapter (and head) weights saved by `save_adapter` into `model`.

    Weights are matched by variable path. Before anything is assigned, the
    file's adapter config (all but dropout, a training-only setting),
    insertion point, backbone class, config and weights fingerprint and
    variable shapes are checked against `model`;
    on any mismatch a `ValueError` names what differs and `model` is left
    unchanged.

    Args:
        model: an adapted model built like the one that was saved.
        path: str or path-like. The adapter file.

    Example:
    >>> model = keras_adalink.adapt(backbone, rank=4)
    >>> keras_adalink.load_adapter(model, "sentiment.safetensors")
    """
    record, tensors = read_adapter(path)
    expected = describe_adapter(model)
    problems = differences(
        "adapter", _weights_config(record), _weights_config(expected)
    )
    problems += backbone_differences(record["backbone"], expected["backbone"])
    problems += differences(
        "task_heads", record.get("task_heads"), expected["task_heads"]
    )
    problems += differences(
        "variables", record["variables"], expected["variables"]
    )
    for name, shape in expected["variables"].items():
        if name in tensors and list(tensors[name].shape) != shape:
            problems.append(
                f"variables.{name}: file holds shape "
                f"{list(tensors[name].shape)}, model has {shape}"
            )
    missing = set(expected["variables"]) - set(tensors)
    problems += [f"variables.{name}: missing from the file" for name in missing]
    if problems:
        raise ValueError(
            f"Adapter file '{os.fspath(path)}' does not fit this model; "
            "nothing was loaded:\n  " + "\n  ".join(problems)
        )
    for name, variable in adapter_variables(model).items():
        variable.assign(keras.ops.cast(tensors[name], variable.dtype))
