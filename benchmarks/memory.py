"""Train-step memory and time of AdaLink and Keras LoRA on quantized /
rematerialised bases.

On the jax backend, for a given model shape (random weights, the shape is
what matters) at a stated batch and length, each setting's train step
(forward, backward, Adam update, as `fit` runs it) is jitted and XLA's own
memory analysis of the compiled step is read: argument bytes (weights,
optimizer state, batch), temp bytes (activations kept for the backward
pass and other buffers) and output bytes not aliased to a donated
argument; their sum is the step's memory. No accelerator is needed; CPU
XLA plans buffers the way it runs them here, a GPU's plan differs in
detail. Step time is the median of a few steps after compilation, all
settings in one process, so read the time column as ratios.

Settings: full fine-tuning (every weight trains, f32 Adam), AdaLink (rank 4
at the token embedding, the backbone frozen) and Keras LoRA (rank 4 on the
query and value projections, `enable_lora`, everything else frozen; on
int8 this is Keras' QLoRA) on f32, bf16 (the frozen backbone's dtype
policy `"bfloat16"`; adapter and LoRA weights stay float32, as Keras
makes them), int8, int4 and float8 bases, each with and without `remat`,
and, with remat, int4 quantized from a bfloat16 backbone (`int4-bf16`:
the frozen layers compute in bfloat16).

Models (`--model`):
- `minilm`: a MiniLM-shaped BERT classifier, batch 8 x length 128, step
  times measured.
- `gemma`: a ~1B Gemma-shaped causal LM (`GEMMA_1B`), batch 1 x length
  2048, compiled only (a CPU step would take minutes); float8 left out
  (Keras keeps float8 kernels in float32: no weight saving, see minilm).
  `--probes` adds the depth-2 compiles with a changed vocabulary, head
  count or FFN width that `memory_report.py` uses to extrapolate to
  bigger shapes.

    KERAS_BACKEND=jax python benchmarks/memory.py --model minilm
    KERAS_BACKEND=jax python benchmarks/memory.py --model gemma \
        --layers 2 4 6 --probes
    python benchmarks/memory.py --render

Each setting is written to benchmarks/results/memory.json as it finishes
(merged with the rows already there); `--render` rewrites memory.md and
memory.png from the JSON.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink import baselines  # noqa: E402
from keras_adalink.heads import mean_pooled_classifier  # noqa: E402
from keras_adalink.quantization import quantize_frozen  # noqa: E402
from keras_adalink.quantization import rematerialize_blocks  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import memory_report  # noqa: E402
from memory_extrapolate import GEMMA_1B  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
MINILM = dict(
    vocabulary_size=30522,
    hidden_dim=384,
    num_heads=12,
    intermediate_dim=1536,
    max_sequence_length=512,
)
PROBES = {
    # name: (shape overrides at depth 2). The vocabulary probes give the
    # logits' bytes per vocabulary entry; the head and FFN probes, at a
    # small vocabulary so the logits do not mask them, one block's
    # recompute workspace per head and per FFN unit.
    "vocab_half": {"vocabulary_size": 128000},
    "vocab_eighth": {"vocabulary_size": 32000},
    "vocab_eighth_heads_x2": {"vocabulary_size": 32000, "num_query_heads": 8},
    "vocab_eighth_ffn_x2": {
        "vocabulary_size": 32000,
        "intermediate_dim": 27648,
    },
}
PROBE_SETTINGS = (
    {"method": "adalink", "base": "int4", "remat": True},
    {"method": "lora", "base": "int4", "remat": True},
)


QUICK = {}  # `--quick`: tiny shapes, to check the script in seconds


def backbone_for(model, layers, dtype, overrides):
    if model == "minilm":
        return keras_hub.models.BertBackbone(
            num_layers=layers, dtype=dtype, **{**MINILM, **QUICK}
        )
    shape = {**GEMMA_1B, **QUICK, **overrides}
    return keras_hub.models.GemmaBackbone(
        num_layers=layers,
        vocabulary_size=shape["vocabulary_size"],
        hidden_dim=shape["hidden_dim"],
        num_query_heads=shape["num_query_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        head_dim=shape["head_dim"],
        intermediate_dim=shape["intermediate_dim"],
        dtype=dtype,
    )


def head(model, backbone):
    if model == "minilm":
        return mean_pooled_classifier(backbone, 2)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def build(model, setting, layers, overrides=None):
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(0)
    base = setting["base"]
    # "int4-bf16": a bfloat16 backbone quantized to int4, so the frozen
    # layers compute (and keep activations) in bfloat16.
    dtype = "bfloat16" if base in ("bf16", "int4-bf16") else None
    backbone = backbone_for(model, layers, dtype, overrides or {})
    quantize = {"f32": None, "bf16": None, "int4-bf16": "int4"}.get(base, base)
    if setting["method"].startswith("adalink"):
        # "adalink-d0": without the adapter branch's dropout (adapt's
        # default is 0.1), to see what its mask costs.
        adapted = keras_adalink.adapt(
            backbone,
            rank=4,
            quantize=quantize,
            remat=setting["remat"],
            dropout=0.0 if setting["method"] == "adalink-d0" else 0.1,
        )
        return head(model, adapted)
    if quantize is not None:
        quantize_frozen(backbone, quantize)
    if setting["method"] == "lora":
        baselines.lora(backbone, rank=4, targets="query_value")
    if setting["remat"]:
        rematerialize_blocks(backbone)
    return head(model, backbone)


def batch_for(model, batch, length, vocabulary):
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, vocabulary - 1, (batch, length)).astype("int32")
    padding_mask = np.ones((batch, length), "int32")
    if model == "minilm":
        x = {
            "token_ids": token_ids,
            "segment_ids": np.zeros((batch, length), "int32"),
            "padding_mask": padding_mask,
        }
        return x, (np.arange(batch) % 2).astype("int32")
    # Next-token targets, as a CausalLM preprocessor would shift them.
    x = {"token_ids": token_ids, "padding_mask": padding_mask}
    return x, np.roll(token_ids, -1, axis=1)


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


def count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def measure(model_name, setting, layers, batch, length, steps, probe=None):
    overrides = PROBES[probe] if probe else {}
    start = time.perf_counter()
    model = build(model_name, setting, layers, overrides)
    build_s = time.perf_counter() - start
    shape = {**(MINILM if model_name == "minilm" else GEMMA_1B), **QUICK}
    vocabulary = overrides.get("vocabulary_size", shape["vocabulary_size"])
    x, y = batch_for(model_name, batch, length, vocabulary)
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
    return {
        "model": model_name,
        "probe": probe,
        **setting,
        "layers": layers,
        "batch": batch,
        "length": length,
        "trainable_params": count(model.trainable_variables),
        "frozen_params": count(model.non_trainable_variables),
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
        "step_s": statistics.median(times) if times else None,
        "build_s": build_s,
        "compile_s": compile_s,
    }


def settings(model):
    yield {"method": "full", "base": "f32", "remat": False}
    yield {"method": "full", "base": "f32", "remat": True}
    bases = ("f32", "bf16", "int8", "int4", "float8")
    for method in ("adalink", "lora"):
        for base in bases:
            if base == "float8" and (method == "lora" or model == "gemma"):
                # Keras' enable_lora refuses float8 layers; on Gemma,
                # float8 saves no weight memory (kernels stay float32).
                continue
            for remat in (False, True):
                yield {"method": method, "base": base, "remat": remat}
    for method in ("adalink", "lora"):
        yield {"method": method, "base": "int4-bf16", "remat": True}
    yield {"method": "adalink-d0", "base": "int4", "remat": True}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("minilm", "gemma"))
    parser.add_argument("--layers", type=int, nargs="+")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--length", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument(
        "--probes", action="store_true", help="gemma: extrapolation probes"
    )
    parser.add_argument(
        "--only", nargs="+", help="run only settings named method/base/remat"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes, 1 layer, 1 step"
    )
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument(
        "--render", action="store_true", help="rewrite memory.md from the JSON"
    )
    args = parser.parse_args()
    if args.render:
        memory_report.render(args.out)
        return
    model = args.model or "minilm"
    gemma = model == "gemma"
    if args.quick:
        QUICK.update(vocabulary_size=1000, hidden_dim=32, intermediate_dim=64)
        QUICK.update(num_heads=2) if not gemma else QUICK.update(head_dim=16)
        args.layers, args.length, args.steps = args.layers or [1], 16, 1
    layers = args.layers or ([2, 4, 6] if gemma else [6, 12])
    batch = args.batch or (1 if gemma else 8)
    length = args.length or (2048 if gemma else 128)
    steps = args.steps if args.steps is not None else (0 if gemma else 3)
    meta = {
        "backend": keras.backend.backend(),
        "device": str(jax.devices()[0]),
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "jax": jax.__version__,
    }

    def keep(setting):
        name = "{method}/{base}/{remat}".format(**setting)
        return not args.only or name in args.only

    def record(row):
        print(json.dumps(row), flush=True)
        memory_report.save(args.out, meta, row)

    for depth in layers:
        for setting in filter(keep, settings(model)):
            record(measure(model, setting, depth, batch, length, steps))
        if gemma and args.probes and depth == layers[0]:
            for probe in PROBES:
                for setting in filter(keep, PROBE_SETTINGS):
                    record(
                        measure(model, setting, depth, batch, length, 0, probe)
                    )
    memory_report.render(args.out)


if __name__ == "__main__":
    main()
