"""The README's main job: `make demo` runs this (see keras_adalink/demo.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_adalink import demo  # noqa: E402

if __name__ == "__main__":
    demo.main()
