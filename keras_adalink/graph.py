"""The one module that touches private Keras and KerasHub API.

keras_adalink reads and replays functional graphs, which Keras offers no
public API for. Every private name it relies on is used here once, listed
in `PRIVATE_API` with the version it was checked against, and
tests/test_graph.py fails naming the symbol when an upgrade removes one;
tests/test_architecture.py fails when private API is reached from any
other module. Checked against Keras 3.15.1 and KerasHub 0.32.0.
"""

import contextlib

import keras

# (owner, private name, what it is used for). The owner is the class that
# defines the name or assigns it (`.name = ...`), as a dotted path.
PRIVATE_API = (
    (
        "keras.src.ops.function.Function",
        "_run_through_graph",
        "replay a functional graph through its own layers (`replay`)",
    ),
    (
        "keras.src.ops.operation.Operation",
        "_inbound_nodes",
        "the graph calls of a layer (`calls`)",
    ),
    (
        "keras.src.ops.node.Node",  # Sets it on each output KerasTensor.
        "_keras_history",
        "the layer call that made a symbolic tensor (`producer`)",
    ),
    (
        "keras.src.layers.layer.Layer",
        "_flatten_layers",
        "every layer inside a model, as `Model.quantize` walks them "
        "(`all_layers`)",
    ),
    (
        "keras.src.layers.layer.Layer",
        "_tracker",
        "add a weight to a built layer (`unlocked`)",
    ),
    (
        "keras_hub.src.utils.preset_utils",
        "get_preset_loader",
        "load an adapted task's preset: KerasHub's `Task.from_preset` looks "
        "the task class up by the backbone class, which an `AdaLinkBackbone` "
        "is not (`load_task_preset`)",
    ),
    (
        "keras_hub.src.utils.preset_utils",
        "get_file",
        "fetch one file of a preset handle through KerasHub's download path "
        "(`preset_file`)",
    ),
    (
        "keras_hub.src.utils.transformers.preset_loader",
        "convert_bert",
        "whether KerasHub converts HF checkpoints into a backbone class "
        "(`hf_converter_exists`: its `convert_*` modules' `backbone_cls`)",
    ),
    (
        "keras_hub.src.models.moonshine.moonshine_backbone.MoonshineBackbone",
        "_compute_mask_layer",
        "a private backbone layer a KerasHub task calls directly "
        "(`TASK_CALLED_PRIVATE_LAYERS`)",
    ),
    (
        "keras_hub.src.models.gemma3n.gemma3n_backbone.Gemma3nBackbone",
        "_model_inputs_dict",
        "the inputs `Gemma3nCausalLM` builds its graph on, read off its "
        "backbone (`expose_model_inputs`)",
    ),
)

# Private backbone layers that KerasHub tasks call directly (by attribute),
# so an adapted backbone must expose them too.
TASK_CALLED_PRIVATE_LAYERS = (
    "_compute_mask_layer",  # MoonshineAudioToText.call_encoder
)


def expose_model_inputs(adapted, backbone):
    """Gives `adapted` its own inputs as `_model_inputs_dict` where
    `backbone` has one: `Gemma3nCausalLM.__init__` builds the task's graph
    on `backbone._model_inputs_dict`, which an adapted backbone must hold
    (with its `task_id` input, if any) for the task to be rebuilt on it."""
    if not hasattr(backbone, "_model_inputs_dict"):
        return
    inputs = adapted.input
    if not isinstance(inputs, dict):
        inputs = {t.name: t for t in keras.tree.flatten(inputs)}
    object.__setattr__(adapted, "_model_inputs_dict", dict(inputs))


def replay(model, inputs, call_function):
    """Replays `model`'s functional graph on `inputs` through its own layers.

    `call_function(layer, *args, **kwargs)` makes each call. Public
    `keras.models.clone_model(call_function=...)` does the same replay but
    then wraps the result in a Functional over the model's inputs only,
    which fails once the adapter reads an extra input (`task_id`).
    """
    return model._run_through_graph(
        inputs, operation_fn=lambda layer: layer, call_fn=call_function
    )


def calls(layer):
    """`layer`'s calls in the graphs it belongs to, in order.

    Each as `(argument_tensors, args, outputs)`: every symbolic tensor the
    call read (flattened), its positional arguments, and its outputs.
    """
    found = []
    for node in layer._inbound_nodes:
        arguments = node.arguments
        tensors = list(arguments.keras_tensors) if arguments else []
        args = tuple(arguments.args) if arguments else ()
        found.append((tensors, args, node.outputs))
    return found


def producer(tensor):
    """`(layer, call_index)`: the layer call that produced `tensor`."""
    operation, node_index, _ = tensor._keras_history
    return operation, node_index


def all_layers(model):
    """`model` and every layer inside it, sublayers of subclassed layers
    included: the layers `model.quantize()` visits."""
    return list(model._flatten_layers(include_self=True, recursive=True))


def rematerialize(layer):
    """Makes `layer` recompute its activations in the backward pass.

    Its calls run through `keras.remat` (jax.checkpoint, tf.recompute_grad,
    torch.utils.checkpoint) with only the tensors as arguments; Python
    values (the `training` flag, `None` masks) are closed over. The layer
    runs in inference mode (`training=False`: a frozen block's dropout off):
    the recomputation must see the same forward pass, which a dropout that
    draws new seeds (and updates seed state inside the recomputed
    function, which jax refuses) would not. Keras' own
    `RematScope(mode="full")` is read when a layer is built, and on jax it
    hands `training` to `jax.checkpoint` as a traced array, which breaks
    layers that branch on it (MultiHeadAttention's dropout), so the built
    layer's `call` is wrapped here instead (the one instance attribute
    keras_adalink sets on a Keras layer; `Layer.__call__` calls it).
    """
    if is_rematerialized(layer):
        return
    call = layer.call

    def call_with_remat(*args, **kwargs):
        if "training" in kwargs:
            kwargs["training"] = False
        flat = keras.tree.flatten((args, kwargs))
        tensor = [keras.ops.is_tensor(x) for x in flat]

        def recompute(*tensors):
            given = iter(tensors)
            values = [next(given) if t else x for x, t in zip(flat, tensor)]
            a, k = keras.tree.pack_sequence_as((args, kwargs), values)
            return call(*a, **k)

        return keras.remat(recompute)(*[x for x, t in zip(flat, tensor) if t])

    layer.call = call_with_remat
    layer._adalink_remat = True


def is_rematerialized(layer):
    return getattr(layer, "_adalink_remat", False)


@contextlib.contextmanager
def unlocked(layer):
    """Lets `add_weight` add a weight to a built layer in this block."""
    layer._tracker.unlock()
    try:
        yield layer
    finally:
        layer._tracker.lock()


def load_task_preset(preset, cls):
    """The task of class `cls` (weights, preprocessor and its assets) saved
    in `preset` by `save_to_preset`, whatever its backbone's class."""
    from keras_hub.src.utils.preset_utils import get_preset_loader

    loader = get_preset_loader(preset)
    return loader.load_task(cls, load_weights=True, load_task_weights=True)


def preset_file(preset, name):
    """The local path of file `name` of `preset` (a folder, or a handle
    KerasHub downloads: `kaggle://`, `hf://`, a preset name)."""
    from keras_hub.src.utils.preset_utils import get_file

    return get_file(preset, name)


def hf_converter_exists(backbone_class):
    """Whether KerasHub reads HF transformers checkpoints into
    `backbone_class`: one of its `convert_*` modules (those its HF preset
    loader dispatches to) names it as `backbone_cls`; `None` if unknown."""
    try:
        from keras_hub.src.utils.transformers import preset_loader
    except ImportError:  # Another KerasHub layout: unknown.
        return None
    converted = {
        getattr(module, "backbone_cls", None)
        for name, module in vars(preset_loader).items()
        if name.startswith("convert_")
    }
    return any(klass in converted for klass in backbone_class.__mro__)
