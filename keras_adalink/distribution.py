"""Layouts for `keras.distribution.ModelParallel` of adapted models.

`get_layout_map` starts from the backbone family's own KerasHub layout map
where there is one (Gemma, Llama, Qwen families) and supplies one where
KerasHub has none (BERT family, T5, ViT, PaliGemma, CLIP, SigLIP,
MetaCLIP 2), Megatron style:
attention query/key/value and the first feed-forward projection are split
along their output features (heads) over the model axis, the attention
output and the second feed-forward projection along their input features,
so each block needs one reduction per sub-layer. Embedding tables are split
along the hidden dimension.

For a built model, every frozen backbone weight these rules leave whole
(every weight, for the families with no rule of their own) is split by its
shape (`sites/layouts.by_shape`): the heads or experts axis of 3-D kernels,
the larger axis of tables and 2-D kernels, a bias like its kernel's output
axis. Norms, the biases of row-split layers and the task head are
replicated: at least 90% of every adapted family's backbone bytes are split
(tests/sites/test_families.py), and a ModelParallel step equals one device's.

The AdaLink weights are replicated: they are `2 * d * r` numbers (3,072 for
MiniLM at rank 4), so splitting them saves no memory worth having and adds
a gather to every step. All keys
are matched with `re.fullmatch` (Keras' rule) and anchored on layer names,
so no backbone pattern can match an adapter path, the trap of keras#19496;
the tests check the layout of every variable.
"""

import functools
import math
import re
import warnings

import keras
from keras_hub.models import Backbone

from keras_adalink.graph import all_layers
from keras_adalink.models.walk import first_nested
from keras_adalink.sites.families import FAMILIES
from keras_adalink.sites.families import entry_class
from keras_adalink.sites.layouts import by_shape
from keras_adalink.sites.layouts import keras_hub_map

ADAPTER_KEY = "(.*/)?adalink_(down|up)"


def _frozen_backbone(model):
    """The innermost KerasHub backbone in `model` (AdaLinkBackbone wraps
    the frozen one)."""
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
    return found


def _backbone_class(model):
    """The frozen backbone's class, from a class or any model holding one."""
    return model if isinstance(model, type) else type(_frozen_backbone(model))


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


def _rules(cls, model_dim, data_dim, built):
    rule, _ = layout_source(cls)
    if rule is not None:
        return rule(model_dim, data_dim)
    if built:
        return {}  # The shape rule covers every weight.
    raise ValueError(
        f"No model-parallel layout rule is known for the class "
        f"{cls.__name__}: pass the built model instead (the same config at "
        "any depth will do), whose weights' shapes give the layout, or use "
        "`keras.distribution.DataParallel`."
    )


def _general(path):
    """`path` as a pattern whose layer-name counters (`dense_3`,
    `transformer_layer_11`) match any counter, so a map read off one build
    fits another build of the same config, at any depth."""
    return "/".join(
        re.sub(r"(_\d+)?$", r"(_\\d+)?", re.escape(part), count=1)
        for part in path.split("/")
    )


def _fill_by_shape(layout_map, model, model_dim):
    """Adds a `layouts.by_shape` entry for every weight of the frozen
    backbone that no family rule splits: one pattern per group of weights
    that differ only in layer counters and agree on their axes, exact paths
    where they do not."""
    mesh = layout_map.device_mesh
    size = dict(zip(mesh.axis_names, mesh.shape))[model_dim]
    wanted = {}
    for variable in _frozen_backbone(model).weights:
        if layout_map[variable.path] is not None:
            continue
        axes = by_shape(variable.shape, size, model_dim)
        if axes is not None:
            wanted[variable.path] = axes
    _biases_follow_kernels(layout_map, model, wanted)
    _add_general(layout_map, model, wanted)


def _add_general(layout_map, model, wanted):
    """Adds `{path: axes}` to the map: one pattern per group of paths that
    differ only in layer counters and agree on their axes (it then fits any
    build of the model), exact paths where a group's pattern would match
    another variable or the axes differ."""
    groups = {}
    for path in wanted:
        groups.setdefault(_general(path), []).append(path)
    paths = [variable.path for variable in model.weights]
    for pattern, members in groups.items():
        matched = {p for p in paths if re.fullmatch(pattern, p)}
        if matched == set(members) and len({wanted[p] for p in members}) == 1:
            layout_map[pattern] = wanted[members[0]]
        else:
            for path in members:
                layout_map[path] = wanted[path]


def _fit_to_mesh(layout_map, model, strict):
    """Replicates each axis of `model`'s variables the mesh does not divide.

    A rule that splits, say, a 2-head query kernel over a model axis of 4
    would fail inside `fit` (jax: `IndivisibleError`). Such a variable is
    split another axis by the shape rule (or replicated); the rule's
    pattern gives way to entries for each variable it matched, keyed like
    the shape rule's, so the fitted map also fits another build.
    """
    mesh = layout_map.device_mesh
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    fixed, by_key = [], {}
    for variable in model.weights:
        layout = layout_map[variable.path]
        if layout is None:
            continue
        axes = tuple(layout.axes)
        key = next(
            k
            for k in layout_map
            if k == variable.path or re.fullmatch(k, variable.path)
        )
        by_key.setdefault(key, {})[variable.path] = axes
        if all(
            axis is None or dim is None or dim % sizes[axis] == 0
            for axis, dim in zip(axes, variable.shape)
        ):
            continue
        # Split another axis the mesh divides, by the shape rule, or none.
        model_axis = next(a for a, d in zip(axes, variable.shape) if a)
        fitted = by_shape(variable.shape, sizes[model_axis], model_axis)
        by_key[key][variable.path] = fitted or (None,) * len(axes)
        by_key[key]["refit"] = True
        fixed.append(f"{variable.path} {tuple(variable.shape)}")
    for key, entries in by_key.items():
        if entries.pop("refit", False):
            del layout_map[key]
            _add_general(layout_map, model, entries)
    if fixed and strict:
        raise ValueError(
            f"The mesh {dict(sizes)} does not divide these variables along "
            f"the axes their layout splits: {fixed}. Use a mesh whose model "
            "axis divides the head count and widths, or strict=False to "
            "split them another way by their shape."
        )
    if fixed:
        warnings.warn(
            f"keras_adalink.get_layout_map: the mesh {dict(sizes)} does not "
            f"divide {len(fixed)} variable(s) along the axes their layout "
            f"splits; they are split another way by their shape (or "
            f"replicated where no axis divides): {fixed}",
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
    class itself for families with a rule (BERT family, T5, ViT, PaliGemma,
    the two-tower models, and KerasHub's own maps: nothing needs to exist
    yet), or any backbone or task, adapted or not, whose weights' shapes
    complete the map (every family). Its keys match any layer-name counter
    (`dense_3`), so a map read off one build, on the host or with fewer
    layers, fits another build of the same config.

    Args:
        model: a KerasHub backbone class, backbone, task, or a model from
            `keras_adalink.adapt()`.
        device_mesh: `keras.distribution.DeviceMesh` with both axis names.
        model_dim_name: str. Mesh axis that splits the weights.
        data_dim_name: str. Mesh axis that splits the batch.
        strict: bool. For a built `model`: raise `ValueError` when the mesh
            does not divide a variable along an axis its layout splits
            (a 2-head attention kernel on a model axis of 4, say). Defaults
            to `False`: split such a variable by its shape instead (or
            replicate it) and warn once, naming the variables. A class has
            no shapes yet to check.

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
    built = not isinstance(model, type)
    for key, axes in _rules(
        _backbone_class(model), model_dim_name, data_dim_name, built
    ).items():
        layout_map[key] = axes
    # Replicated whatever the weight's rank (AdaLink 2-D, routers 3-D).
    layout_map[ADAPTER_KEY] = ()
    if built:
        _fit_to_mesh(layout_map, model, strict)
        _fill_by_shape(layout_map, model, model_dim_name)
    return layout_map


def _biases_follow_kernels(layout_map, model, wanted):
    """A layer's bias splits the way its kernel's trailing (output) axes
    split, so a column-split projection keeps its bias local (Megatron)."""
    for layer in all_layers(_frozen_backbone(model)):
        kernel, bias = (
            getattr(layer, "kernel", None),
            getattr(layer, "bias", None),
        )
        if not isinstance(bias, keras.Variable) or bias.path in wanted:
            continue
        if layout_map[bias.path] is not None or not hasattr(kernel, "path"):
            continue
        axes = wanted.get(kernel.path) or layout_map[kernel.path]
        axes = tuple(getattr(axes, "axes", axes) or ())
        rank = len(bias.shape)
        tail = tuple(kernel.shape)[-rank:] if rank else ()
        if rank and tail == tuple(bias.shape) and any(axes[-rank:]):
            wanted[bias.path] = axes[-rank:]


def sharded_share(model, layout_map, model_dim_name="model"):
    """The share of the frozen backbone's bytes that `layout_map` splits
    over the model axis (the rest is replicated on every device)."""
    total = split = 0
    for variable in _frozen_backbone(model).weights:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        bits = re.search(r"\d+", dtype)
        size = math.prod(variable.shape) * (int(bits[0]) if bits else 8)
        layout = layout_map[variable.path]
        total += size
        if layout is not None and model_dim_name in tuple(layout.axes):
            split += size
    return split / total if total else 0.0
