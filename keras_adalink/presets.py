"""Adapted models as KerasHub presets, and adapter-only presets.

Two ways to share an adapted model, as KerasHub and PEFT users do:

- the whole model: KerasHub's own `model.save_to_preset(folder)` (config,
  weights, preprocessor); `keras_adalink.from_preset(folder)` loads it back
  (adapted backbones load with `keras_hub.models.Backbone.from_preset` too;
  KerasHub's `Task.from_preset` finds task classes by backbone class, which
  an `AdaLinkBackbone` is not);
- the adapter alone: `save_adapter_preset(model, folder, base=...)` writes
  the adapter file and `adalink_preset.json` (the base preset's handle, the
  task class and its arguments, the adapter's record with the base's
  fingerprint): a few KB whatever the base's size.
  `keras_adalink.from_preset(folder)` loads the base through KerasHub
  (`kaggle://`, `hf://`, a preset name or a folder), adapts it the same
  way and loads the adapter, as PEFT's `from_pretrained(base, adapter)`.
"""

import json
import os
import shutil
import tempfile

import keras
import keras_hub

from keras_adalink.adapt import reattach
from keras_adalink.adapter_file import describe_adapter
from keras_adalink.adapter_file import load_adapter
from keras_adalink.adapter_file import save_adapter
from keras_adalink.graph import load_task_preset
from keras_adalink.graph import preset_file
from keras_adalink.layers import AdaLink
from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter
from keras_adalink.models import AdaLinkBackbone
from keras_adalink.models import find_adalink_backbone
from keras_adalink.models.tasks import rebuild_task
from keras_adalink.quantization import quantization_modes
from keras_adalink.quantization import quantize_frozen

METADATA = "adalink_preset.json"
ADAPTER = "adapter.safetensors"
_ADAPTERS = {cls.__name__: cls for cls in (AdaLink, ModalityRouter, TaskRouter)}
# Task arguments that come from the base or from the model itself.
_NOT_TASK_ARGUMENTS = ("backbone", "preprocessor", "name", "trainable", "dtype")


def save_adapter_preset(model, folder, base: str):
    """Writes an adapter-only preset: `model`'s adapter and how to rebuild
    the rest from the base preset `base`.

    The folder holds `adapter.safetensors` (what `save_adapter` writes) and
    `adalink_preset.json`. Upload it like any preset folder
    (`keras_hub.upload_preset("kaggle://...", folder)` or the HF hub
    tools); `keras_adalink.from_preset(folder)` rebuilds the model.
    Written to a temporary folder first: an error leaves nothing.

    Args:
        model: an adapted KerasHub backbone or task (from `adapt`,
            `compose`, or loaded).
        folder: str. The preset folder to write.
        base: str. The handle or folder of the unadapted preset the model
            was made from (`"bert_base_en"`, `"kaggle://..."`, `"hf://..."`,
            a local folder), recorded for `from_preset`.

    Example:
    >>> classifier.save_to_preset("base")  # Or a handle: "bert_base_en"
    >>> keras_adalink.save_adapter_preset(
    ...     model, "sentiment_adapter", base="base")
    >>> sorted(os.listdir("sentiment_adapter"))
    ['adalink_preset.json', 'adapter.safetensors']
    >>> reloaded = keras_adalink.from_preset("sentiment_adapter")
    >>> type(reloaded.backbone).__name__
    'AdaLinkBackbone'
    """
    adalink_backbone = find_adalink_backbone(model)
    if model is adalink_backbone:
        kind, arguments = type(adalink_backbone.backbone).__name__, {}
    elif isinstance(model, keras_hub.models.Task):
        kind = type(model).__name__
        arguments = {
            k: v
            for k, v in model.get_config().items()
            if k not in _NOT_TASK_ARGUMENTS
        }
    else:
        raise ValueError(
            "save_adapter_preset takes an adapted KerasHub backbone or task; "
            f"{type(model).__name__} is neither (save the adapter with "
            "save_adapter)."
        )
    if not hasattr(keras_hub.models, kind):
        raise ValueError(
            f"{kind} is not a keras_hub.models class, so from_preset could "
            "not rebuild it; share the whole model with save_to_preset."
        )
    metadata = {
        "format": "keras_adalink.adapter_preset",
        "base": str(base),
        "class": kind,
        "arguments": json.loads(json.dumps(arguments)),
        "adapter": describe_adapter(model)["adapter"],
        "backbone": describe_adapter(model)["backbone"],
    }
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(dir=parent, prefix=".adalink_preset_")
    try:
        save_adapter(model, os.path.join(partial, ADAPTER))
        with open(os.path.join(partial, METADATA), "w") as f:
            json.dump(metadata, f, indent=2)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _base_model(kind, base, arguments):
    cls = getattr(keras_hub.models, kind)
    try:
        return cls.from_preset(str(base), **arguments)
    except Exception as error:  # KerasHub raises several kinds
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get(
            "KAGGLE_OFFLINE"
        )
        hint = " (offline: a handle needs the network)" if offline else ""
        raise ValueError(
            f"Could not load the base preset {base!r} of this adapter "
            f"preset{hint}; pass base= a local folder of it. "
            f"{type(error).__name__}: {str(error)[:200]}"
        ) from error


def from_preset(preset, base=None):
    """An adapted model from a preset folder or handle.

    For an adapter-only preset (`save_adapter_preset`) the base preset is
    loaded through KerasHub (`base`, or the handle recorded in the preset),
    adapted as the saved model was and its adapter loaded: a base whose
    fingerprint differs (other weights or config) is refused, naming what
    differs. For a whole adapted model (`save_to_preset`), the task or
    backbone it holds.

    Args:
        preset: str. A preset folder, or a handle KerasHub downloads.
        base: str. For adapter-only presets: the base preset to use instead
            of the recorded one (a local copy, say). Defaults to `None`.

    Example:
    >>> model.save_to_preset("sentiment_full")  # KerasHub's own method
    >>> reloaded = keras_adalink.from_preset("sentiment_full")
    >>> type(reloaded).__name__, type(reloaded.backbone).__name__
    ('BertTextClassifier', 'AdaLinkBackbone')
    """
    preset = str(preset)
    try:
        metadata_path = preset_file(preset, METADATA)
    except Exception as error:  # KerasHub raises several kinds
        metadata_path = None  # A whole model's preset, if it has a config.
        if not _fetches(preset, "config.json"):
            raise ValueError(
                f"Could not fetch the preset {preset!r}: "
                f"{type(error).__name__}: {str(error)[:200]}"
            ) from error
    if metadata_path is None:
        if base is not None:
            raise ValueError(
                f"{preset} is a whole model's preset, not an adapter-only "
                "one: it needs no base."
            )
        return _whole(preset)
    with open(metadata_path) as f:
        metadata = json.load(f)
    model = _base_model(
        metadata["class"], base or metadata["base"], metadata["arguments"]
    )
    record = metadata["adapter"]
    config = {**record["config"], "name": "adalink"}  # as adapt() names it
    adapter = _ADAPTERS[record["class"]].from_config(config)
    backbone = (
        model
        if isinstance(model, keras_hub.models.Backbone)
        else (model.backbone)
    )
    # A base saved unquantized and quantized by the data-free modes of
    # `adapt(quantize=...)` is quantized the same way (GPTQ/AWQ bases must
    # be saved quantized: their weights depend on calibration data).
    modes = metadata["backbone"].get("quantization", {})
    if len(modes) == 1 and set(modes) <= {"int8", "int4", "float8"}:
        if not quantization_modes(backbone):
            quantize_frozen(backbone, next(iter(modes)))
    adapted = AdaLinkBackbone(backbone, adapter, insertion=record["insertion"])
    if model is not backbone:
        adapted = reattach(rebuild_task(model, adapted))
    load_adapter(adapted, preset_file(preset, ADAPTER))
    return adapted


def _fetches(preset, name):
    try:
        preset_file(preset, name)
        return True
    except Exception:
        return False


def _json(preset, name):
    with open(preset_file(preset, name)) as f:
        return json.load(f)


def _whole(preset):
    config = _json(preset, "config.json")
    if config.get(
        "class_name"
    ) != "AdaLinkBackbone" and "AdaLinkBackbone" not in (
        config.get("registered_name") or ""
    ):
        raise ValueError(
            f"{preset} holds no adapted model; load it with "
            "keras_hub.models.Backbone.from_preset or a task's from_preset."
        )
    if not _fetches(preset, "task.json"):
        return keras_hub.models.Backbone.from_preset(preset)
    task = _json(preset, "task.json")
    cls = keras.saving.get_registered_object(task["registered_name"])
    if cls is None:
        cls = getattr(keras_hub.models, task["class_name"])
    return load_task_preset(preset, cls)
