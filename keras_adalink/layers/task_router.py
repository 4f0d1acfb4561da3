import collections

import keras
import numpy as np
from keras import ops

from keras_adalink.layers.base_ada_link import BaseAdaLink
from keras_adalink.layers.base_ada_link import concrete_numpy


@keras.saving.register_keras_serializable(package="keras_adalink")
class TaskRouter(BaseAdaLink):
    """One AdaLink module per task, picked per example by an int task id.

    Holds `num_tasks` modules as stacked weights `W_down` `[T, d, rank]` and
    `W_up` `[T, rank, d]`. Example `b` with task id `t` computes
    `y_b = x_b + dropout(f(x_b @ W_down[t]) @ W_up[t]) * scale`, so one batch
    may mix tasks and every example gets exactly what its own `AdaLink` would
    give. Every `W_up[t]` starts at zeros (identity at init).

    Eager calls reject task ids outside `[0, num_tasks)`. Inside compiled
    graphs (`fit`, `jax.jit`, `tf.function`, exported models) values cannot
    be checked; there an out-of-range id leaves its example unchanged.

    Args:
        num_tasks: int. Number of task modules `T`.
        rank: int. Bottleneck width of every module.
        activation: string or callable. Defaults to `None` (identity).
        dropout: float. Dropout on the adapter branch. Defaults to `0.1`.
        scale: float. Multiplier on the adapter branch. Defaults to `1.0`.
        down_initializer: initializer for each `W_down[t]`. Defaults to
            `"he_uniform"`.
        up_initializer: initializer for each `W_up[t]`. Defaults to `"zeros"`.
        task_names: optional list of `num_tasks` entries, the name of each
            slot (set by `keras_adalink.compose`): distinct strings, or
            `None` for a free slot of a live model (`compose(...,
            capacity=N)`, filled by `keras_adalink.add_task`). Saved in the
            config and in adapter files; SavedModels of a model with names
            accept a string `task` input. Defaults to `None`.
        **kwargs: other `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor `[batch, sequence, d]`.
        task_id: int tensor `[batch]` (or `[batch, 1]`).
        training: bool. Whether dropout is active.
        stacked: bool. The rows of `inputs` are the batch's examples stacked
            `k` times (`[k * batch, ...]`: classifier-free guidance's
            conditional copy, then its unconditional one); `task_id` is
            tiled `k` times to match. Defaults to `False`.

    Example:
    >>> router = TaskRouter(num_tasks=3, rank=4)
    >>> x = np.random.rand(2, 10, 32).astype("float32")
    >>> y = router(x, task_id=np.array([0, 2]))
    >>> y.shape
    (2, 10, 32)

    Reference:
        - [Wang et al., 2023](https://arxiv.org/abs/2310.12100), section 3.2,
          "Multi-task AdaLink".
    """

    def __init__(self, num_tasks, rank, task_names=None, **kwargs):
        super().__init__(rank=rank, **kwargs)
        if (
            isinstance(num_tasks, bool)
            or not isinstance(num_tasks, int)
            or num_tasks < 1
        ):
            raise ValueError(
                "`num_tasks` must be a positive int. "
                f"Received: num_tasks={num_tasks!r}"
            )
        self.num_tasks = num_tasks
        if task_names is not None:
            task_names = list(task_names)
            if len(task_names) != num_tasks or not all(
                n is None or (isinstance(n, str) and n) for n in task_names
            ):
                raise ValueError(
                    f"`task_names` must be {num_tasks} non-empty strings "
                    "(one per task; `None` for a free slot). Received: "
                    f"task_names={task_names!r}"
                )
            repeated = sorted(
                n
                for n, c in collections.Counter(task_names).items()
                if c > 1 and n is not None
            )
            if repeated:
                raise ValueError(
                    "`task_names` must be distinct. Received repeated "
                    f"names: {repeated[:10]}"
                )
        self.task_names = task_names

    def task_index(self, names):
        """Slot ids (int32 numpy) of task `names`; raises on unknown names."""
        if self.task_names is None:
            raise ValueError(
                f"TaskRouter '{self.name}' has no task names: pass int "
                "task ids. Models made by `keras_adalink.compose` name them."
            )
        index = self.slots
        names = [names] if isinstance(names, str) else list(names)
        unknown = sorted({str(n) for n in names if n not in index})
        if unknown:
            raise ValueError(
                f"Unknown task name(s) {unknown[:10]}; this model has "
                f"{len(index)} tasks: {list(index)[:10]}"
                + (" ..." if len(index) > 10 else "")
            )
        return np.asarray([index[n] for n in names], "int32")

    @property
    def slots(self):
        """`{name: slot}` of the named slots (free slots left out)."""
        return {
            n: i for i, n in enumerate(self.task_names or []) if n is not None
        }

    @property
    def free_slots(self):
        """Slot ids without a task (`None` names), in order."""
        if self.task_names is None:
            return []
        return [i for i, n in enumerate(self.task_names) if n is None]

    @property
    def num_modules(self):
        return self.num_tasks

    def check_ids(self, values):
        """Raises unless numpy `values` are task ids in `[0, num_tasks)`."""
        self._check_ids(values, "task_id", self.num_tasks, low=0)

    def call(self, inputs, task_id, training=None, stacked=False):
        values = concrete_numpy(task_id)
        if values is not None:
            self.check_ids(values)
        task_id = ops.reshape(ops.cast(task_id, "int32"), (-1,))
        if stacked:
            copies = ops.shape(inputs)[0] // ops.shape(task_id)[0]
            task_id = ops.tile(task_id, [copies])
        valid = ops.logical_and(task_id >= 0, task_id < self.num_tasks)
        safe_id = ops.where(valid, task_id, 0)
        # Gather each example's module first, then cast: with thousands of
        # tasks, casting whole tables every call would cost O(T*d*r).
        down = ops.cast(ops.take(self.adalink_down, safe_id, 0), inputs.dtype)
        up = ops.cast(ops.take(self.adalink_up, safe_id, 0), inputs.dtype)
        # Any rank with the batch first (Gemma4's image and audio
        # embeddings are [batch, items, tokens, d]).
        hidden = ops.einsum("b...d,bdr->b...r", inputs, down)
        gate = ops.reshape(
            ops.cast(valid, hidden.dtype),
            (-1,) + (1,) * (len(hidden.shape) - 1),
        )
        return self._finish(
            inputs, hidden, "b...r,brd->b...d", up, training, gate=gate
        )

    def get_config(self):
        config = super().get_config()
        config["num_tasks"] = self.num_tasks
        config["task_names"] = self.task_names
        return config
