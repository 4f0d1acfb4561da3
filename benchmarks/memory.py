"""Train-step memory and time of AdaLink on quantized / rematerialised bases.

On the jax backend, for a MiniLM-shaped BERT (random weights, the shape is
what matters) at a stated batch and length, each setting's train step
(forward, backward, Adam update, as `fit` runs it) is jitted and XLA's own
memory analysis of the compiled step is read: argument bytes (weights,
optimizer state, batch), temp bytes (activations kept for the backward
pass and other buffers) and output bytes not aliased to a donated
argument; their sum is the step's memory. No accelerator is needed; CPU
XLA plans buffers the way it runs them here, a GPU's plan differs in
detail. Step time is
the median of a few steps after compilation, all settings in one process,
so read the time column as ratios.

Settings: full fine-tuning (every weight trains, f32 Adam) and AdaLink
(rank 4 at the token embedding, the backbone frozen) on f32, int8, int4
and float8 bases, each with and without `remat`.

    KERAS_BACKEND=jax python benchmarks/memory.py [--layers 6 12] [--quick]

Writes benchmarks/results/memory.json and memory.md.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink.heads import mean_pooled_classifier  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
MINILM = dict(
    vocabulary_size=30522,
    hidden_dim=384,
    num_heads=12,
    intermediate_dim=1536,
    max_sequence_length=512,
)


def build(setting, layers):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(num_layers=layers, **MINILM)
    if setting["method"] == "full":
        if setting["remat"]:
            keras_adalink.quantization.rematerialize_blocks(backbone)
        return mean_pooled_classifier(backbone, 2)
    adapted = keras_adalink.adapt(
        backbone,
        rank=4,
        quantize=setting["base"] if setting["base"] != "f32" else None,
        remat=setting["remat"],
    )
    return mean_pooled_classifier(adapted, 2)


def train_step(model):
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(trainable, non_trainable, optimizer_vars, x, y):
        def loss(trainable):
            logits, non_trainable_out = model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            return loss_fn(y, logits), non_trainable_out

        (value, non_trainable), grads = jax.value_and_grad(loss, has_aux=True)(
            trainable
        )
        trainable, optimizer_vars = optimizer.stateless_apply(
            optimizer_vars, grads, trainable
        )
        return value, trainable, non_trainable, optimizer_vars

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    # Donated like Keras' own jitted train step: new weights and optimizer
    # state reuse the old ones' buffers.
    return jax.jit(step, donate_argnums=(0, 1, 2)), state


def measure(setting, layers, batch, length, steps):
    model = build(setting, layers)
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, 30000, (batch, length)).astype("int32"),
        "segment_ids": np.zeros((batch, length), "int32"),
        "padding_mask": np.ones((batch, length), "int32"),
    }
    y = (np.arange(batch) % 2).astype("int32")
    step, state = train_step(model)
    start = time.perf_counter()
    compiled = step.lower(*state, x, y).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    times = []
    trainable, non_trainable, optimizer_vars = state
    for _ in range(steps):
        start = time.perf_counter()
        out = compiled(trainable, non_trainable, optimizer_vars, x, y)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
        _, trainable, non_trainable, optimizer_vars = out
    trainable_count = sum(
        int(np.prod(v.shape)) for v in model.trainable_variables
    )
    return {
        **setting,
        "layers": layers,
        "batch": batch,
        "length": length,
        "trainable_params": trainable_count,
        "argument_mb": memory.argument_size_in_bytes / 2**20,
        "temp_mb": memory.temp_size_in_bytes / 2**20,
        "output_mb": memory.output_size_in_bytes / 2**20,
        "alias_mb": memory.alias_size_in_bytes / 2**20,
        # What the step holds at once: its arguments, its temporaries and
        # the outputs that do not reuse a donated argument's buffer.
        "step_mb": (
            memory.argument_size_in_bytes
            + memory.temp_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
        )
        / 2**20,
        "step_s": statistics.median(times),
        "compile_s": compile_s,
    }


def settings():
    yield {"method": "full", "base": "f32", "remat": False}
    yield {"method": "full", "base": "f32", "remat": True}
    for base in ("f32", "int8", "int4", "float8"):
        for remat in (False, True):
            yield {"method": "adalink", "base": base, "remat": remat}


def table(rows):
    lines = [
        "| layers | method | base | remat | trainable | args MB | temp MB "
        "| step MB | x full FT | step s | x no remat |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        full = next(
            r
            for r in rows
            if r["layers"] == row["layers"]
            and r["method"] == "full"
            and not r["remat"]
        )
        plain = next(
            r
            for r in rows
            if r["layers"] == row["layers"]
            and r["method"] == row["method"]
            and r["base"] == row["base"]
            and not r["remat"]
        )
        lines.append(
            f"| {row['layers']} | {row['method']} | {row['base']} "
            f"| {'yes' if row['remat'] else 'no'} "
            f"| {row['trainable_params']:,} | {row['argument_mb']:.1f} "
            f"| {row['temp_mb']:.1f} | {row['step_mb']:.1f} "
            f"| {row['step_mb'] / full['step_mb']:.2f} "
            f"| {row['step_s']:.3f} | {row['step_s'] / plain['step_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write(out, meta, rows, batch, length):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "memory.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    text = (
        f"Train step (forward, backward, Adam) of a {meta['shape']} "
        f"classifier, batch {batch} x length {length}, jax "
        f"{meta['jax']} on {meta['device']}: XLA's memory analysis of the "
        "compiled step (args: weights, optimizer state, batch; temp: "
        "activations and buffers; step: args + temp + outputs not reusing "
        "a donated buffer) and the median step time "
        f"(`benchmarks/memory.py`).\n\n" + table(rows)
    )
    with open(os.path.join(out, "memory.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument(
        "--render", action="store_true", help="rewrite memory.md from the JSON"
    )
    args = parser.parse_args()
    if args.render:
        with open(os.path.join(args.out, "memory.json")) as f:
            saved = json.load(f)
        first = saved["rows"][0]
        write(
            args.out,
            saved["meta"],
            saved["rows"],
            first["batch"],
            first["length"],
        )
        return
    rows = []
    for layers in args.layers:
        for setting in settings():
            row = measure(setting, layers, args.batch, args.length, args.steps)
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta = {
        "backend": keras.backend.backend(),
        "device": str(jax.devices()[0]),
        "keras": keras.__version__,
        "jax": jax.__version__,
        "shape": "MiniLM (hidden 384, 12 heads, FFN 1536, vocab 30522)",
    }
    write(args.out, meta, rows, args.batch, args.length)


if __name__ == "__main__":
    main()
