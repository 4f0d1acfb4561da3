"""SavedModel export for TF Serving, from the jax and tensorflow backends."""

import re
import warnings

import keras

from keras_adalink import graph
from keras_adalink.models.walk import first_nested
from keras_adalink.sites import two_towers


def _symbol(name, axis):
    """Symbolic size of a dynamic dimension, for jax2tf."""
    if axis == 0:
        return "b"
    # Encoder and decoder lengths are independent (T5); all other sequence
    # inputs (token_ids, padding_mask, modality ids) share one length `s`.
    stem = "t" if name.startswith("decoder") else "s"
    return stem if axis == 1 else f"{stem}{axis}"


def _polymorphic_shapes(inputs):
    def shape(tensor):
        dims = [
            _symbol(tensor.name, axis) if size is None else str(size)
            for axis, size in enumerate(tensor.shape)
        ]
        return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"

    return keras.tree.map_structure(shape, inputs)


def _max_sequence_length(model):
    """The position-table length of the (first) backbone inside `model`."""
    found = first_nested(
        model, lambda x: getattr(x, "max_sequence_length", None)
    )
    return None if found is None else found.max_sequence_length


def _limits(model):
    """`{stem: limit}`: longest encoder (`s`) and decoder (`t`) inputs."""
    shared = _max_sequence_length(model)
    if shared:
        return {"s": shared, "t": shared}
    limits = {}
    for stem, key in (("s", "encoder"), ("t", "decoder")):
        attribute = f"max_{key}_sequence_length"  # Whisper's
        found = first_nested(model, lambda x, a=attribute: getattr(x, a, 0))
        if found is not None:
            limits[stem] = getattr(found, attribute)
    return limits


def tower_models(model):
    """`{"image": ..., "text": ...}` embedding models of a two-tower model.

    For an adapted (or plain) CLIP, SigLIP or MetaCLIP 2 backbone: the
    image side maps `images` (and `task_id` where routed) to the image
    embeddings the contrastive head compares, the text side `token_ids` to
    the text embeddings, through the same (adapted) layers. Serve them apart
    to index images once and embed queries alone. `None` for other models.

    Example:
    >>> towers = keras_adalink.tower_models(adapted_clip)
    >>> image_embeddings = towers["image"].predict(images, verbose=0)
    """
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, keras.Model) or two_towers(backbone) is None:
        return None
    # The contrastive head takes (image embeddings, text embeddings).
    head, index = graph.producer(model.outputs[0])
    _, args, _ = graph.calls(head)[index]
    image, text = args[:2]
    inputs = model.input
    return {
        "image": keras.Model(
            {k: v for k, v in inputs.items() if k != "token_ids"}, image
        ),
        "text": keras.Model(
            {k: v for k, v in inputs.items() if k != "images"}, text
        ),
    }


def _call_of(model):
    def call(inputs):
        return model(inputs)

    return call


def _signature(model, limits, fixed=()):
    """`(input specs, export kwargs)`: dynamic batch and sequence sizes
    (`s <= limit`, `t <= limit`), except the stems in `fixed`, exported at
    their limit."""
    import tensorflow as tf

    inputs = model.input
    sizes = {stem: limits[stem] for stem in fixed}

    def spec(t):
        stem = "t" if t.name.startswith("decoder") else "s"
        dims = [sizes.get(stem) if d is None else d for d in t.shape[1:]]
        return tf.TensorSpec((None, *dims), t.dtype, name=t.name)

    specs = keras.tree.map_structure(spec, inputs)
    if keras.backend.backend() != "jax":
        return specs, {}
    shapes = _polymorphic_shapes(inputs)
    for stem, size in sizes.items():
        shapes = keras.tree.map_structure(
            lambda shape, stem=stem, size=size: re.sub(
                rf"\b{stem}\b", str(size), shape
            ),
            shapes,
        )
    used = " ".join(str(s) for s in keras.tree.flatten(shapes))
    constraints = tuple(
        f"{stem} <= {limit}"
        for stem, limit in limits.items()
        if f" {stem})" in used or f" {stem}," in used
    )
    return specs, {
        "jax2tf_kwargs": {
            "polymorphic_shapes": [shapes],
            "polymorphic_constraints": constraints,
            "with_gradient": False,
        }
    }


def _fixed_choices(model, limits):
    """Stems to fix, tried in turn on jax: none, the encoder's, both (only
    stems the model's inputs use)."""
    if keras.backend.backend() != "jax":
        return [()]
    used = " ".join(keras.tree.flatten(_polymorphic_shapes(model.input)))
    present = [
        stem
        for stem in ("s", "t")
        if stem in limits and (f" {stem})" in used or f" {stem}," in used)
    ]
    return [tuple(present[:k]) for k in range(len(present) + 1)]


def export_saved_model(model, path, preprocessor=None, verbose=False):
    """Writes `model` as a TF-Serving SavedModel with dynamic batch/length.

    The signature is `serving_default` (method `tensorflow/serving/predict`)
    with the model's named inputs (`token_ids`, `padding_mask`, ...,
    `task_id` for multi-task models) and dynamic batch and sequence
    dimensions. The SavedModel needs only TensorFlow to run.

    With `preprocessor` (a KerasHub preprocessor, e.g.
    `BertTextClassifierPreprocessor`), `serving_default` takes raw strings
    instead: a `text` input (`[batch]` strings) plus any model input the
    preprocessor does not produce (`task_id`); the token-id signature stays
    as `serving_tokens`. KerasHub tokenizers are tensorflow-text ops, so the
    process that loads this SavedModel must have them registered
    (`import tensorflow_text` in Python; a model server built with them).

    A model from `keras_adalink.compose` (a `TaskRouter` with task names)
    gets a string `task` input ([batch] task names, looked up in the
    graph) in place of `task_id` in `serving_default`; a name the model
    does not serve fails the request with `InvalidArgumentError` naming it.
    The int `task_id` signature stays as `serving_task_id` (or
    `serving_tokens` with a `preprocessor`).

    A two-tower model (CLIP, SigLIP, MetaCLIP 2) also gets `serving_image`
    (`images` -> image embeddings) and `serving_text` (`token_ids` -> text
    embeddings), the `tower_models` of the adapted model.

    On jax the model is converted with jax2tf using symbolic batch and
    sequence sizes, constrained to `s, t <= max_sequence_length` where the
    backbone has one (BERT-style position tables check it), without
    gradients (Whisper: encoder and decoder each by their own maximum).
    Where jax2tf cannot prove a shape for every length (SigLIP's text tower
    adds its whole position table), the encoder inputs (then the decoder's
    too) are exported at their maximum length instead, with a warning. On
    tensorflow it is traced directly. Torch has no SavedModel path in
    Keras: export with `model.export(path, format="onnx")` there.

    Args:
        model: any Keras model, typically one from `adapt()` or `fold()`.
        path: str. Output directory.
        preprocessor: optional KerasHub preprocessor to serve raw strings.
        verbose: bool. Whether Keras prints the export summary.

    Example:
    >>> keras_adalink.export_saved_model(keras_adalink.fold(model), "served/1")
    """

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise NotImplementedError(
            f"SavedModel export runs on the jax and tensorflow backends; "
            f"this is {backend}. On torch, use "
            '`model.export(path, format="onnx")`, or load the adapter file '
            "under KERAS_BACKEND=jax or tensorflow and export there."
        )
    limits = _limits(model)
    choices = _fixed_choices(model, limits)
    first = None
    for i, fixed in enumerate(choices):
        try:
            _write(model, path, preprocessor, verbose, limits, fixed)
        except (TypeError, ValueError) as error:  # jax2tf shape checks
            first = first or error
            if i + 1 == len(choices):
                raise error from (first if error is not first else None)
            continue
        if fixed:
            reason = str(first).strip().splitlines()[0][:200]
            warnings.warn(
                "keras_adalink: jax2tf could not export this model for every "
                f"sequence length ({reason}), so its "
                + " and ".join(
                    f"{'decoder' if s == 't' else 'encoder'} inputs have "
                    f"the fixed length {limits[s]}"
                    for s in fixed
                )
                + " (pad to it, as the model's preprocessor does).",
                stacklevel=2,
            )
        return


def _write(model, path, preprocessor, verbose, limits, fixed):
    specs, kwargs = _signature(model, limits, fixed)
    task_names = _task_names(model)
    towers = tower_models(model)
    if towers is not None and preprocessor is None and task_names is None:
        archive = keras.export.ExportArchive()
        # Track once: the towers' variables are the model's (tracking them
        # again would make the jax endpoints disagree on the variable list).
        archive.track(model)
        archive.add_endpoint(
            "serving_default", _call_of(model), [specs], **kwargs
        )
        for name, tower in towers.items():
            tower_specs, tower_kwargs = _signature(tower, limits, fixed)
            archive.add_endpoint(
                f"serving_{name}",
                _call_of(tower),
                [tower_specs],
                **tower_kwargs,
            )
        archive.write_out(str(path), verbose=verbose)
        return
    if preprocessor is None and task_names is None:
        model.export(
            str(path),
            format="tf_saved_model",
            input_signature=[specs],
            verbose=verbose,
            **kwargs,
        )
        return
    archive = keras.export.ExportArchive()
    numeric = (
        "serving_tokens" if preprocessor is not None else "serving_task_id"
    )
    model_fn = archive.track_and_add_endpoint(numeric, model, [specs], **kwargs)
    serve, resources = _request_endpoint(
        model_fn, specs, preprocessor, task_names
    )
    for resource in resources:  # built by the trace in _request_endpoint
        archive.track(resource)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path), verbose=verbose)


def _task_names(model):
    """The task names of a composed model's `TaskRouter`, else None."""
    from keras_adalink.layers import TaskRouter

    router = first_nested(model, lambda x: isinstance(x, TaskRouter))
    return None if router is None else router.task_names


def _request_endpoint(model_fn, specs, preprocessor, task_names):
    """tf.function over what a client sends: raw `text` (with
    `preprocessor`) and/or task names `task` (with `task_names`), turned
    into the model's inputs in the graph; returns it and what to track."""
    import tensorflow as tf

    if not isinstance(specs, dict):
        raise ValueError(
            "Raw-string and task-name export need a model with named (dict) "
            "inputs, like KerasHub backbones and tasks."
        )
    resources, request_specs, produced = [], {}, {}
    if preprocessor is not None:

        def features(text):
            x = preprocessor(text)  # (x, y, sample_weight) when packed
            return x[0] if isinstance(x, tuple) else x

        produced = features(tf.constant(["a"]))
        if not isinstance(produced, dict):
            raise ValueError(
                "`preprocessor` must map strings to a dict of features; "
                f"{type(preprocessor).__name__} returned {type(produced)}."
            )
        request_specs["text"] = tf.TensorSpec((None,), tf.string, name="text")
        resources.append(preprocessor)
    if task_names is not None:
        # Free slots of a live model (`None` names) are not served.
        slots = [(n, i) for i, n in enumerate(task_names) if n is not None]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([n for n, _ in slots], tf.string),
                tf.constant([i for _, i in slots], tf.int32),
            ),
            default_value=-1,
        )
        resources.append(table)
        request_specs["task"] = tf.TensorSpec((None,), tf.string, name="task")
        produced = {**produced, "task_id": None}
    request_specs.update({k: s for k, s in specs.items() if k not in produced})

    @tf.function(input_signature=[request_specs])
    def serve(request):
        made = features(request["text"]) if preprocessor is not None else {}
        if task_names is not None:
            ids = table.lookup(request["task"])
            unknown = ids < 0
            check = tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(unknown)),
                [
                    "keras_adalink: unknown task name(s):",
                    tf.boolean_mask(request["task"], unknown),
                    f"this model serves {len(slots)} tasks, e.g.",
                    tf.constant([n for n, _ in slots[:5]], tf.string),
                ],
                summarize=10,
            )
            with tf.control_dependencies([check]):
                made = {**made, "task_id": tf.identity(ids)}
        return model_fn(
            {
                k: tf.cast(made[k], s.dtype) if k in made else request[k]
                for k, s in specs.items()
            }
        )

    return serve, resources
