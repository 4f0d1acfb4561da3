"""Eager checks of router ids, run before inputs reach compiled code.

Inside `fit`/`predict`/`evaluate` the model runs as a compiled function
(`jax.jit`, `tf.function`), where the layers cannot look at id values; an
out-of-range id there leaves its example or token unchanged. These checks
look at the arrays the user passes, before compilation, and fail with the
value received.
"""

import functools

import keras
import numpy as np

from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter


def _values(x, key):
    if not isinstance(x, dict) or key not in x:
        return None
    try:
        return np.asarray(keras.ops.convert_to_numpy(x[key]))
    except Exception:  # Symbolic or streamed input: nothing to check here.
        return None


def check_inputs(adapter, x):
    """Raises if `x` (a dict of arrays) has ids `adapter` cannot route.

    Checks `task_id` for a `TaskRouter` (int, in `[0, num_tasks)`) and
    `modality_ids` for a `ModalityRouter` (int, `< len(modalities)`;
    negative means pass-through). Other inputs (datasets, generators) are
    left alone.
    """
    if isinstance(adapter, TaskRouter):
        key, high, low = "task_id", adapter.num_tasks, 0
    elif isinstance(adapter, ModalityRouter):
        key, high, low = "modality_ids", len(adapter.modalities), None
    else:
        return
    values = _values(x, key)
    if values is None:
        return
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(
            f"`{key}` must hold ints. Received dtype {values.dtype}."
        )
    bad = values >= high
    if low is not None:
        bad |= values < low
    if bad.any():
        bounds = f"[{low}, {high})" if low is not None else f"< {high}"
        raise ValueError(
            f"`{key}` must be {bounds}. Received out-of-range values: "
            f"{sorted(set(values[bad].tolist()))[:10]}"
        )


def checked_entry_points(model, adapter):
    """Wraps `model.fit/evaluate/predict` to run `check_inputs` first."""
    for name in ("fit", "evaluate", "predict"):
        method = getattr(model, name)

        @functools.wraps(method)
        def wrapper(x=None, *args, __method=method, **kwargs):
            check_inputs(adapter, x)
            return __method(x, *args, **kwargs)

        object.__setattr__(model, name, wrapper)
    return model
