"""Steer a frozen tiny Stable Diffusion 3 toward a colour with AdaLink.

A toy, randomly initialised SD3 (tests/test_diffusion.py's `_sd3`, built
offline from constructor arguments) is adapted with one AdaLink module on
its text-context tokens and one on its latent-patch tokens (the default
`ModalityRouter`). Both modules train, for a few steps, on the backbone
graph's decoded images (the first of two denoising steps, from the noise
generate() draws for seed 1) toward a red image as the frozen VAE draws it.
The frozen weights never change. Writes the images generate() makes for the
same prompts and seed before and after, side by side, to
docs/images/diffusion_before_after.png.

    KERAS_BACKEND=torch python examples/diffusion_colour.py
"""

import pathlib
import sys

import keras
import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_adalink  # noqa: E402
from tests.test_diffusion import BATCH  # noqa: E402
from tests.test_diffusion import RED  # noqa: E402
from tests.test_diffusion import _sd3  # noqa: E402
from tests.test_diffusion import generate  # noqa: E402
from tests.test_diffusion import graph_inputs  # noqa: E402

OUT = ROOT / "docs" / "images" / "diffusion_before_after.png"


def main(epochs=30, image_size=64):
    task = _sd3(image_size=image_size)
    adapted = keras_adalink.adapt(task, rank=4, dropout=0.0)
    backbone = adapted.backbone
    before = generate(adapted)
    x = graph_inputs(backbone)
    shape = (BATCH, *backbone.latent_shape[1:])
    x["latents"] = keras.ops.convert_to_numpy(
        keras.random.normal(shape, seed=1)
    )
    red = np.broadcast_to(RED, (BATCH, *backbone.image_shape))
    target = backbone.decode_step(backbone.encode_image_step(red))
    target = keras.ops.convert_to_numpy(target)
    pixels = np.clip((target + 1) * 127.5, 0, 255).astype("uint8")
    backbone.compile(keras.optimizers.Adam(0.1), loss={"images": "mse"})
    history = backbone.fit(x, {"images": target}, epochs=epochs, verbose=0)
    after = generate(adapted)
    losses = history.history["loss"]
    for name, images in (("before", before), ("after", after)):
        gap = np.abs(images.astype("float32") - pixels).mean()
        print(f"{name}: mean |image - target| = {gap:.1f} (of 255)")
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {epochs} steps")
    rows = [
        np.concatenate([b, a, t], axis=1)
        for b, a, t in zip(before, after, pixels)
    ]
    grid = np.concatenate(rows, axis=0)
    scale = 4
    Image.fromarray(grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST
    ).save(OUT)
    print(f"wrote {OUT.relative_to(ROOT)} (columns: before, after, target)")


if __name__ == "__main__":
    main()
