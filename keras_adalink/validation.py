"""Eager checks of router ids, run before inputs reach compiled code.

Inside `fit`/`predict`/`evaluate` the model runs as a compiled function
(`jax.jit`, `tf.function`), where the layers cannot look at id values; an
out-of-range id there leaves its example or token unchanged. These checks
look at the arrays the user passes, before compilation, and fail with the
value received.
"""

import functools

from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter
from keras_adalink.layers.base_ada_link import concrete_numpy

_ID_INPUTS = ((TaskRouter, "task_id"), (ModalityRouter, "modality_ids"))


def check_inputs(adapter, x):
    """Raises if `x` (a dict of arrays) has ids `adapter` cannot route.

    Checks `task_id` for a `TaskRouter` (int, in `[0, num_tasks)`) and
    `modality_ids` for a `ModalityRouter` (int, `< len(modalities)`;
    negative means pass-through), with the router's own `check_ids`.
    Other inputs (datasets, generators) are left alone.
    """
    for router, key in _ID_INPUTS:
        if isinstance(adapter, router) and isinstance(x, dict) and key in x:
            values = concrete_numpy(x[key])
            if values is not None:
                adapter.check_ids(values)


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
