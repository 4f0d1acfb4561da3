"""Prepared GPU check: bf16 AdaLink vs LoRA vs full fine-tuning (jax).

For a machine with one GPU (about 4 minutes on an H100):

    KERAS_BACKEND=jax .venv/bin/python benchmarks/gpu_check.py

Two frozen models, each trained with bf16 mixed precision by AdaLink
(rank 4), LoRA (query/value, rank 4) and full fine-tuning, one after the
other in one process on the same batch: pretrained MiniLM (batch 64 x 128
tokens) and a ~1B-parameter randomly initialised Gemma config (batch 8 x
512, causal LM loss). Reports tokens/s (median over timed steps) and the
memory XLA plans for the compiled train step (arguments + temporaries),
as ratios to full fine-tuning. `--tiny` runs small stand-ins on CPU to
check the script itself. Writes results/gpu_check.{json,md}.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink import baselines  # noqa: E402
from keras_adalink.heads import mean_pooled_classifier  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from evidence_cost import _memory_bytes  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
METHODS = ("AdaLink r4", "LoRA q,v r4", "full fine-tuning")


def minilm(tiny):
    if tiny:
        return keras_hub.models.BertBackbone(
            vocabulary_size=1000,
            num_layers=2,
            num_heads=4,
            hidden_dim=64,
            intermediate_dim=128,
        )
    try:
        return keras_hub.models.BertBackbone.from_preset(
            keras_adalink.datasets.minilm_path()
        )
    except ImportError:
        # A bare GPU machine lacks the weights package: the same shapes,
        # randomly initialised, cost the same per step.
        return keras_hub.models.BertBackbone(
            vocabulary_size=30522,
            num_layers=6,
            num_heads=12,
            hidden_dim=384,
            intermediate_dim=1536,
            max_sequence_length=512,
        )


def gemma(tiny):
    size = (
        dict(num_layers=2, hidden_dim=64, intermediate_dim=256, head_dim=16)
        if tiny
        else dict(
            num_layers=16, hidden_dim=2048, intermediate_dim=16384, head_dim=256
        )
    )
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=32000,
        num_query_heads=8,
        num_key_value_heads=1,
        **size,
    )


def make(kind, method, tiny):
    backbone = minilm(tiny) if kind == "minilm" else gemma(tiny)
    params = int(sum(np.prod(w.shape) for w in backbone.weights))
    if method == "AdaLink r4":
        backbone = keras_adalink.adapt(backbone, rank=4)
    elif method.startswith("LoRA"):
        backbone = baselines.lora(backbone, rank=4)
    if kind == "minilm":
        model = mean_pooled_classifier(backbone, 2)
    else:
        model = keras_hub.models.GemmaCausalLM(backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, params


def batch(kind, tiny):
    b, s = (64, 128) if kind == "minilm" else (8, 512)
    if tiny:
        b, s = 4, 32
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 1000, (b, s)).astype("int32")
    mask = np.ones((b, s), "int32")
    if kind == "minilm":
        x = {
            "token_ids": tokens,
            "segment_ids": 0 * tokens,
            "padding_mask": mask,
        }
        return x, rng.integers(0, 2, b).astype("int32"), b * s
    x = {"token_ids": tokens[:, :-1], "padding_mask": mask[:, :-1]}
    return x, tokens[:, 1:], b * (s - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    keras.config.set_dtype_policy("mixed_bfloat16")
    rows = []
    for kind in ("minilm", "gemma_1b"):
        x, y, tokens = batch(kind, args.tiny)
        for method in METHODS:
            keras.utils.set_random_seed(0)
            model, params = make(kind, method, args.tiny)
            for _ in range(2):  # Compile and warm up.
                model.train_on_batch(x, y)
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                loss = model.train_on_batch(x, y)
                jax.block_until_ready(loss)
                times.append(time.perf_counter() - start)
            rows.append(
                dict(
                    model=kind,
                    method=method,
                    backbone_params=params,
                    trainable=int(
                        sum(np.prod(w.shape) for w in model.trainable_weights)
                    ),
                    tokens_per_second=tokens / float(np.median(times)),
                    step_memory_bytes=_memory_bytes(model, x, y),
                )
            )
            print(json.dumps(rows[-1]), flush=True)
            del model
            keras.backend.clear_session()
    for row in rows:
        full = next(
            r
            for r in rows
            if r["model"] == row["model"] and r["method"] == "full fine-tuning"
        )
        row["speed_vs_full"] = (
            row["tokens_per_second"] / full["tokens_per_second"]
        )
        row["memory_vs_full"] = (
            row["step_memory_bytes"] / full["step_memory_bytes"]
        )
    device = str(jax.devices()[0].device_kind)
    name = "gpu_check_tiny" if args.tiny else "gpu_check"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(
            dict(device=device, policy="mixed_bfloat16", rows=rows), f, indent=2
        )
    lines = [
        f"# GPU check ({device}, mixed_bfloat16)",
        "",
        "`KERAS_BACKEND=jax .venv/bin/python benchmarks/gpu_check.py"
        + (" --tiny" if args.tiny else "")
        + f" --steps {args.steps}`: median of {args.steps} timed steps "
        "after 2 warm-up steps, one process, methods one after another.",
        "",
        "| model | method | trainable | tokens/s | vs full FT | step memory "
        "MiB | vs full FT |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['backbone_params'] / 1e6:.0f}M) | "
            f"{r['method']} | {r['trainable']:,} | "
            f"{r['tokens_per_second']:,.0f} | {r['speed_vs_full']:.2f}x | "
            f"{r['step_memory_bytes'] / 2**20:,.0f} | "
            f"{r['memory_vs_full']:.2f}x |"
        )
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
