"""One lock per live model, shared by its slot writes and its requests."""

import functools
import threading
import weakref

_GUARDED = ("predict", "predict_on_batch", "generate")
_INSTALL = threading.Lock()
_LOCKS = weakref.WeakKeyDictionary()  # model -> its lock


def guard(model):
    """The lock that `model`'s slot writes and its requests share.

    A slot is four variables (adapter down/up, head kernel/bias) written one
    after another, and Keras' jax `predict` lends variable values to the
    compiled function and writes them back when it returns, which would undo
    a write made meanwhile. So `add_task`/`remove_task` and the model's
    `predict`, `predict_on_batch` and `generate` (wrapped here, on this one
    instance) hold one lock: a request runs wholly before or after a write.
    """
    with _INSTALL:
        lock = _LOCKS.get(model)
        if lock is not None:
            return lock
        lock = threading.RLock()
        for name in _GUARDED:
            method = getattr(model, name, None)
            if method is not None:
                # object.__setattr__: a plain instance attribute, outside
                # Keras' tracking (not state to save).
                object.__setattr__(model, name, _locked(method, lock))
        _LOCKS[model] = lock
        return lock


def _locked(method, lock):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with lock:
            return method(*args, **kwargs)

    return call
