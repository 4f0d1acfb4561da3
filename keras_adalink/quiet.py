"""Console output of the command line and the demo: a quiet start-up,
progress bars only on a terminal.

TensorFlow and XLA print native log lines while they load (absl's
"All log messages before absl::InitializeLog()", "Could not find cuda
drivers", "failed call to cuInit"). They are written by C++ straight to
file descriptor 2, before any Python logging exists, and no environment
variable silences all of them. So the entry points (the `keras-adalink`
console script, `make demo`) load TensorFlow and the Keras backend with
descriptor 2 pointed at /dev/null, then restore it: everything the
program prints afterwards, errors included, reaches the terminal.
`--verbose` (or KERAS_ADALINK_VERBOSE=1) skips this.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Points file descriptor 2 at /dev/null inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def wanted(argv=None):
    """Whether start-up should be quiet for this command line."""
    argv = sys.argv if argv is None else argv
    return "--verbose" not in argv and not os.environ.get(
        "KERAS_ADALINK_VERBOSE"
    )


def quiet_start(argv=None):
    """Loads TensorFlow and the Keras backend without their native logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not wanted(argv):
        return
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # device probing logs, too
        import keras

        # Backend start-up, except where jax must join other processes
        # first (`train --coordinator`, keras_adalink/cli/distributed.py).
        argv = sys.argv if argv is None else argv
        if not any(
            a.startswith(("--coordinator", "--num-processes")) for a in argv
        ) and not os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
            keras.ops.convert_to_numpy(keras.ops.ones(1))


def progress():
    """Keras `fit` verbosity: progress bars on a terminal, one line per
    epoch when the output is piped or logged."""
    return 1 if sys.stdout.isatty() else 2
