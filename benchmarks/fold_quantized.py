"""How far `fold(model, requantize=True)` moves a model adapted on an int8 or
int4 base (issue 27): the folded table is re-quantized, so the folded
model differs from the unfolded adapted one. Set beside two other
differences of the same outputs: what the adapter changes (adapted vs its
quantized base) what quantization itself changes (quantized base vs
the float one), and the fold of an adapter at init (zero effect): its table
differs from the base's only by float rounding of the scales, which shows
how far any change of the inputs moves outputs whose layers quantize their
inputs per call (Keras' int8 dense layers do).

Models: `tiny`, the tests' BERT (2 layers, width 16, vocabulary 50, random
weights), and `minilm`, the pretrained all-MiniLM-L6-v2 (needs
`make setup`). The adapter (rank 4) gets random N(0, 0.05) weights, a
stand-in for a trained one as in notebook 04; a batch of 8 x 64 random
token ids. Differences are over `sequence_output`: the largest absolute
one, and the RMS relative to the RMS of the float base's output.

    KERAS_BACKEND=jax python benchmarks/fold_quantized.py
    python benchmarks/fold_quantized.py --render  # markdown from the JSON

Writes benchmarks/results/fold_quantized.json and .md.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink.datasets import minilm_path  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
TINY = dict(
    vocabulary_size=50,
    max_sequence_length=64,
    num_layers=2,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
)


def backbones(model):
    """A function returning fresh copies of `model`'s float backbone."""
    if model == "minilm":
        pretrained = keras_hub.models.BertBackbone.from_preset(minilm_path())
    else:
        keras.utils.set_random_seed(0)
        pretrained = keras_hub.models.BertBackbone(**TINY)
    config = pretrained.get_config()
    weights = [np.array(w) for w in pretrained.get_weights()]

    def fresh():
        backbone = keras_hub.models.BertBackbone.from_config(config)
        backbone.set_weights(weights)
        return backbone

    return fresh


def output(model, x):
    return keras.ops.convert_to_numpy(model(x)["sequence_output"])


def measure(model, mode):
    fresh = backbones(model)
    base = fresh()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, base.vocabulary_size, (8, 64)).astype("int32")
    x = {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "padding_mask": np.ones_like(ids),
    }
    float_out = output(base, x)
    quantized = fresh()
    adapted = keras_adalink.adapt(quantized, rank=4, quantize=mode)
    # The adapter at init (W_up = 0): the fold changes the table by float
    # rounding of its scales only, so this is the outputs' noise floor.
    zero_out = output(keras_adalink.fold(adapted, requantize=True), x)
    for w in adapted.trainable_weights:
        w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
    adapted_out = output(adapted, x)
    quantized_out = output(quantized, x)
    folded_out = output(keras_adalink.fold(adapted, requantize=True), x)
    scale = float(np.sqrt(np.mean(float_out**2)))

    def diff(a, b):
        return {
            "max_abs": float(np.max(np.abs(a - b))),
            "relative_rms": float(np.sqrt(np.mean((a - b) ** 2)) / scale),
        }

    return {
        "model": model,
        "mode": mode,
        "fold_vs_adapted": diff(folded_out, adapted_out),
        "zero_adapter_fold": diff(zero_out, quantized_out),
        "adapter_effect": diff(adapted_out, quantized_out),
        "quantization_effect": diff(quantized_out, float_out),
    }


def render(rows):
    lines = [
        "# fold into a quantized table: error against the unfolded model",
        "",
        "Written by `benchmarks/fold_quantized.py` (see its docstring for "
        "the setup). RMS of each difference of `sequence_output` relative "
        "to the float base's output RMS; largest absolute difference in "
        "brackets.",
        "",
        "| model | table | fold vs unfolded | fold of a zero adapter "
        "| adapter's effect | quantization's effect |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r[k]['relative_rms']:.2e} ({r[k]['max_abs']:.2e})"
            for k in (
                "fold_vs_adapted",
                "zero_adapter_fold",
                "adapter_effect",
                "quantization_effect",
            )
        ]
        lines.append(
            f"| {r['model']} | {r['mode']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main():
    path = os.path.join(RESULTS, "fold_quantized.json")
    if "--render" in sys.argv:  # rewrite the markdown from the JSON
        with open(path) as f:
            rows = json.load(f)
    else:
        rows = [
            measure(m, mode)
            for m in ("tiny", "minilm")
            for mode in ("int8", "int4")
        ]
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")
    text = render(rows)
    with open(os.path.join(RESULTS, "fold_quantized.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
