"""The README's main job: `make demo` runs this (see keras_adalink/demo.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

# Load TensorFlow without its native start-up logs (keras_adalink/quiet.py).
os.environ.setdefault("KERAS_ADALINK_QUIET_START", "1")

from keras_adalink import demo  # noqa: E402

if __name__ == "__main__":
    demo.main()
