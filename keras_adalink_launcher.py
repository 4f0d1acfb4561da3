"""The `keras-adalink` console script: a quiet start, then the CLI.

A module beside the `keras_adalink` package, not inside it: importing
anything inside the package runs its `__init__`, which loads Keras and
TensorFlow, and TensorFlow writes its native start-up logs while it
loads. So the console script asks for the quiet start
(`KERAS_ADALINK_QUIET_START`, keras_adalink/quiet.py) here, before that
import, and importing `keras_adalink` itself never looks at the command
line.
"""

import os
import sys


def main(argv=None):
    """Runs `keras-adalink` with `argv` (default: the command line)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--verbose" not in argv:
        os.environ.setdefault("KERAS_ADALINK_QUIET_START", "1")
    from keras_adalink.cli import main as cli_main

    return cli_main(argv)
