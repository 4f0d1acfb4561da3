import keras
import numpy as np
from keras import ops

from keras_adalink.layers.base_ada_link import check_ids
from keras_adalink.layers.base_ada_link import concrete_numpy


@keras.saving.register_keras_serializable(package="keras_adalink")
class TaskHeads(keras.layers.Layer):
    """One linear head per task, picked per example by an int task id.

    Holds `T` heads of different widths end to end, without padding:
    `kernel` `[sum(widths), d]` (row `offset[t] + j` is output unit `j` of
    task `t`) and `bias` `[sum(widths)]`, so each task costs exactly its
    own head's weights. Example `b` with task id `t` computes
    `x_b @ kernel[offset[t]:offset[t] + widths[t]].T + bias[...]`, so one
    batch may mix a 2-way classifier, a 5-way classifier and a regressor.
    Outputs are a dict: `"outputs"` `[batch, W]` (or `[batch, sequence,
    W]`), `W = max(widths)`, zero beyond each example's width, and
    `"num_outputs"` `[batch]`, that width: the first
    `num_outputs[b]` values of row `b` are its task's logits (or values);
    the rest are padding, not classes.

    Usually made by `keras_adalink.compose`, which fills each slot with a
    separately trained task's `Dense` head.

    Args:
        widths: list of positive ints. Output width of each task's head.
        **kwargs: other `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor `[batch, d]` or `[batch, sequence, d]`.
        task_id: int tensor `[batch]` (or `[batch, 1]`).

    Example:
    >>> heads = TaskHeads(widths=[2, 5, 1])
    >>> x = np.random.rand(3, 16).astype("float32")
    >>> out = heads(x, task_id=np.array([0, 1, 2]))
    >>> out["outputs"].shape  # Padded to the widest head.
    (3, 5)
    >>> keras.ops.convert_to_numpy(out["num_outputs"]).tolist()
    [2, 5, 1]
    """

    def __init__(self, widths, **kwargs):
        super().__init__(**kwargs)
        widths = list(widths) if isinstance(widths, (list, tuple)) else widths
        if (
            not isinstance(widths, list)
            or not widths
            or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0
                for w in widths
            )
        ):
            raise ValueError(
                "`widths` must be a non-empty list of positive ints. "
                f"Received: widths={widths!r}"
            )
        self.widths = widths

    @property
    def num_tasks(self):
        return len(self.widths)

    @property
    def offsets(self):
        return np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(
            "int32"
        )

    def build(self, input_shape):
        dim = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(sum(self.widths), dim),
            initializer="zeros",
            dtype="float32",
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(sum(self.widths),),
            initializer="zeros",
            dtype="float32",
        )
        self.built = True

    def split(self, kernel, bias):
        """Task `k`'s `(kernel [d, w], bias [w])` from numpy weights."""
        return [
            (kernel[o : o + w].T, bias[o : o + w])
            for o, w in zip(self.offsets, self.widths)
        ]

    def call(self, inputs, task_id):
        values = concrete_numpy(task_id)
        if values is not None:
            check_ids(values, "task_id", self.num_tasks, low=0, layer=self.name)
        task_id = ops.reshape(ops.cast(task_id, "int32"), (-1,))
        widths = ops.take(np.asarray(self.widths, "int32"), task_id, 0)
        # Rows offset[t] .. offset[t] + W - 1 of the tables; rows past the
        # task's width (another task's, or clipped at the end) are masked.
        units = ops.arange(max(self.widths), dtype="int32")
        rows = ops.take(self.offsets, task_id, 0)[:, None] + units[None, :]
        rows = ops.minimum(rows, sum(self.widths) - 1)
        kernel = ops.cast(ops.take(self.kernel, rows, 0), inputs.dtype)
        bias = ops.cast(ops.take(self.bias, rows, 0), inputs.dtype)
        if len(inputs.shape) == 3:
            outputs = ops.einsum("bnd,bwd->bnw", inputs, kernel)
            outputs = outputs + bias[:, None, :]
        else:
            outputs = ops.einsum("bd,bwd->bw", inputs, kernel) + bias
        keep = ops.cast(units[None, :] < widths[:, None], outputs.dtype)
        outputs = outputs * (
            keep[:, None, :] if len(inputs.shape) == 3 else keep
        )
        return {"outputs": outputs, "num_outputs": widths}

    def compute_output_spec(self, inputs, task_id):
        shape = tuple(inputs.shape[:-1]) + (max(self.widths),)
        return {
            "outputs": keras.KerasTensor(shape, dtype=self.compute_dtype),
            "num_outputs": keras.KerasTensor(inputs.shape[:1], dtype="int32"),
        }

    def get_config(self):
        config = super().get_config()
        config["widths"] = list(self.widths)
        return config


@keras.saving.register_keras_serializable(package="keras_adalink")
class PaddedLogits(keras.layers.Layer):
    """`TaskHeads` outputs with each row's padding slots at -1e9, so a
    softmax over them spreads only over that row's own task's classes."""

    def call(self, heads):
        outputs = heads["outputs"]
        slots = ops.arange(ops.shape(outputs)[-1])
        width = ops.expand_dims(heads["num_outputs"], -1)
        return ops.where(slots[None, :] < width, outputs, -1e9)
