"""SavedModel export for TF Serving, from the jax and tensorflow backends."""

import keras


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
    pending = [model]
    while pending:
        layer = pending.pop(0)
        limit = getattr(layer, "max_sequence_length", None)
        if limit:
            return limit
        pending += list(getattr(layer, "layers", []))
    return None


def export_saved_model(model, path, verbose=False):
    """Writes `model` as a TF-Serving SavedModel with dynamic batch/length.

    The signature is `serving_default` (method `tensorflow/serving/predict`)
    with the model's named inputs (`token_ids`, `padding_mask`, ...,
    `task_id` for multi-task models) and dynamic batch and sequence
    dimensions. The SavedModel needs only TensorFlow to run.

    On jax the model is converted with jax2tf using symbolic batch and
    sequence sizes, constrained to `s <= max_sequence_length` where the
    backbone has one (BERT-style position tables check it), without
    gradients. On tensorflow it is traced directly. Torch has no SavedModel
    path in Keras: export with `model.export(path, format="onnx")` there.

    Args:
        model: any Keras model, typically one from `adapt()` or `fold()`.
        path: str. Output directory.
        verbose: bool. Whether Keras prints the export summary.

    Example:
    >>> keras_adalink.export_saved_model(keras_adalink.fold(model), "served/1")
    """
    import tensorflow as tf

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise NotImplementedError(
            f"SavedModel export runs on the jax and tensorflow backends; "
            f"this is {backend}. On torch, use "
            '`model.export(path, format="onnx")`, or load the adapter file '
            "under KERAS_BACKEND=jax or tensorflow and export there."
        )
    inputs = model.input
    specs = keras.tree.map_structure(
        lambda t: tf.TensorSpec(
            (None,) + tuple(t.shape[1:]), t.dtype, name=t.name
        ),
        inputs,
    )
    kwargs = {}
    if backend == "jax":
        shapes = _polymorphic_shapes(inputs)
        limit = _max_sequence_length(model)
        uses_s = any("s" in str(s) for s in keras.tree.flatten(shapes))
        constraints = (f"s <= {limit}",) if limit and uses_s else ()
        kwargs["jax2tf_kwargs"] = {
            "polymorphic_shapes": [shapes],
            "polymorphic_constraints": constraints,
            "with_gradient": False,
        }
    model.export(
        str(path),
        format="tf_saved_model",
        input_signature=[specs],
        verbose=verbose,
        **kwargs,
    )
