"""Layouts for `keras.distribution.ModelParallel` of adapted models.

`get_layout_map` starts from the backbone family's own KerasHub layout map
where there is one (Gemma, Llama, Qwen families) and supplies one where
KerasHub has none (BERT family, T5, ViT, PaliGemma, CLIP, SigLIP,
MetaCLIP 2), Megatron style:
attention query/key/value and the first feed-forward projection are split
along their output features (heads) over the model axis, the attention
output and the second feed-forward projection along their input features,
so each block needs one reduction per sub-layer. Embedding tables are split
along the hidden dimension. Everything else (norms, biases of the
row-split layers, the task head) is replicated.

The AdaLink weights are replicated: they are `2 * d * r` numbers (3,072 for
MiniLM at rank 4), so splitting them saves no memory worth having and adds
a gather to every step (benchmarks/distribution.py measures both). All keys
are matched with `re.fullmatch` (Keras' rule) and anchored on layer names,
so no backbone pattern can match an adapter path, the trap of keras#19496;
the tests check the layout of every variable.
"""

import functools
import warnings

import keras
from keras_hub.models import Backbone

from keras_adalink.models.walk import first_nested
from keras_adalink.sites.families import FAMILIES
from keras_adalink.sites.families import entry_class
from keras_adalink.sites.layouts import keras_hub_map

ADAPTER_KEY = "(.*/)?adalink_(down|up)"


def _backbone_class(model):
    """The frozen backbone's class, from a class or any model holding one."""
    if isinstance(model, type):
        return model
    # The innermost backbone: AdaLinkBackbone wraps the frozen one.
    found = first_nested(
        model,
        lambda x: (
            isinstance(x, Backbone)
            and not isinstance(getattr(x, "backbone", None), keras.Model)
        ),
    )
    if found is None:
        raise ValueError(
            "`model` must be a KerasHub backbone class, or a model that holds "
            f"a KerasHub backbone. Received: {type(model).__name__}"
        )
    return type(found)


def layout_source(cls):
    """`(rule, "keras_adalink's" | "KerasHub's")` for backbone class `cls`,
    the nearer in its class hierarchy; `(None, None)` where neither has one.
    """
    ours = entry_class(cls, lambda entry: entry.layout is not None)
    for klass in cls.__mro__:
        if klass is ours:
            return FAMILIES[klass.__name__].layout, "keras_adalink's"
        if "get_layout_map" in vars(klass) and klass is not Backbone:
            return functools.partial(
                keras_hub_map, klass.__name__
            ), "KerasHub's"
    return None, None


def _rules(cls, model_dim, data_dim):
    rule, _ = layout_source(cls)
    if rule is not None:
        return rule(model_dim, data_dim)
    raise ValueError(
        f"No model-parallel layout is known for {cls.__name__}. Use "
        "`keras.distribution.DataParallel` (the adapter and the frozen "
        "backbone are replicated), or write a LayoutMap for its blocks and "
        f"add `layout_map[keras_adalink.distribution.ADAPTER_KEY] = ()`."
    )


def _fit_to_mesh(layout_map, model, strict):
    """Replicates each axis of `model`'s variables the mesh does not divide.

    A rule that splits, say, a 2-head query kernel over a model axis of 4
    would fail inside `fit` (jax: `IndivisibleError`). Such a variable gets
    an exact-path entry (Keras looks exact paths up before patterns) with
    that axis replicated.
    """
    mesh = layout_map.device_mesh
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    fixed = []
    for variable in model.weights:
        layout = layout_map[variable.path]
        if layout is None:
            continue
        axes = tuple(layout.axes)
        fitted = tuple(
            axis
            if axis is None or dim is None or dim % sizes[axis] == 0
            else None
            for axis, dim in zip(axes, variable.shape)
        )
        if fitted != axes:
            layout_map[variable.path] = fitted
            fixed.append(f"{variable.path} {tuple(variable.shape)}")
    if fixed and strict:
        raise ValueError(
            f"The mesh {dict(sizes)} does not divide these variables along "
            f"the axes their layout splits: {fixed}. Use a mesh whose model "
            "axis divides the head count and widths, or strict=False to "
            "replicate those axes."
        )
    if fixed:
        warnings.warn(
            f"keras_adalink.get_layout_map: the mesh {dict(sizes)} does not "
            f"divide {len(fixed)} variable(s) along the axes their layout "
            f"splits; those axes are replicated instead: {fixed}",
            stacklevel=3,
        )


def get_layout_map(
    model,
    device_mesh,
    model_dim_name="model",
    data_dim_name="batch",
    strict=False,
):
    """A `keras.distribution.LayoutMap` for an adapted KerasHub model.

    Build the model inside the `ModelParallel` scope made from this map, so
    every weight is created where it belongs. `model` can be the backbone
    class itself (nothing needs to exist yet), or any backbone or task,
    adapted or not.

    Args:
        model: a KerasHub backbone class, backbone, task, or a model from
            `keras_adalink.adapt()`.
        device_mesh: `keras.distribution.DeviceMesh` with both axis names.
        model_dim_name: str. Mesh axis that splits the weights.
        data_dim_name: str. Mesh axis that splits the batch.
        strict: bool. For a built `model`: raise `ValueError` when the mesh
            does not divide a variable along an axis its layout splits
            (a 2-head attention kernel on a model axis of 4, say). Defaults
            to `False`: replicate that axis and warn once, naming the
            variables. A class has no shapes yet to check.

    Example:
    >>> devices = keras.distribution.list_devices()  # 8: a 2x4 mesh
    >>> mesh = keras.distribution.DeviceMesh(
    ...     (1, len(devices)), ["batch", "model"], devices)
    >>> layout_map = keras_adalink.get_layout_map(
    ...     keras_hub.models.BertBackbone, mesh)
    >>> distribution = keras.distribution.ModelParallel(
    ...     layout_map=layout_map, batch_dim_name="batch")
    >>> with distribution.scope():  # Or from_preset(...)
    ...     backbone = keras_hub.models.BertBackbone(
    ...         vocabulary_size=100, num_layers=2, num_heads=2,
    ...         hidden_dim=16, intermediate_dim=32)
    ...     model = keras_adalink.adapt(backbone, rank=4)
    """
    for name in (model_dim_name, data_dim_name):
        if name not in device_mesh.axis_names:
            raise ValueError(
                f"'{name}' is not an axis of the device mesh "
                f"{device_mesh.axis_names}."
            )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for key, axes in _rules(
        _backbone_class(model), model_dim_name, data_dim_name
    ).items():
        layout_map[key] = axes
    # Replicated whatever the weight's rank (AdaLink 2-D, routers 3-D).
    layout_map[ADAPTER_KEY] = ()
    if not isinstance(model, type):
        _fit_to_mesh(layout_map, model, strict)
    return layout_map
