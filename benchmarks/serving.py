"""Serving overhead of AdaLink against the frozen backbone, side by side.

Pretrained all-MiniLM-L6-v2, batch 32, sequence 128, CPU. Every variant's
compiled forward pass (`predict_on_batch`) is timed in the same process,
interleaved round by round so machine noise hits all variants alike; the
reported number is each variant's median time over rounds, as a ratio to the
frozen backbone's median (throughput ratio = 1 / time ratio).

Variants: frozen backbone; AdaLink rank 4 unfolded; AdaLink folded into the
vocabulary table; LoRA via Keras' `enable_lora` (query/value) at rank 4 and
16, unmerged; prompt tuning with 64 soft tokens (timed as the frozen
backbone on sequence 128 + 64, which is exactly its forward cost); a
TaskRouter with 8 tasks on a mixed-task batch and on a single-task batch.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/serving.py

Writes benchmarks/results/serving.{json,md}.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def inputs(batch, seq, seed=0, task_id=None):
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(1000, 30000, (batch, seq)).astype("int32"),
        "segment_ids": np.zeros((batch, seq), "int32"),
        "padding_mask": np.ones((batch, seq), "int32"),
    }
    if task_id is not None:
        x["task_id"] = np.asarray(task_id, "int32")
    return x


def load():
    return keras_hub.models.BertBackbone.from_preset(
        keras_adalink.datasets.minilm_path()
    )


def lora_backbone(rank):
    backbone = load()
    backbone.enable_lora(rank)  # KerasHub default targets: query, value.
    return backbone


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    b, n = args.batch, args.seq

    frozen = load()
    adapted = keras_adalink.adapt(frozen, rank=4)
    routed = keras_adalink.adapt(frozen, rank=4, num_tasks=8)
    rng = np.random.default_rng(0)
    for model in (adapted, routed):
        for v in model.adapter.weights:  # Nonzero: no shortcut for zeros.
            v.assign(rng.normal(0, 0.02, v.shape).astype("float32"))
    variants = {
        "frozen backbone": (frozen, inputs(b, n)),
        "AdaLink r4 unfolded": (adapted, inputs(b, n)),
        "AdaLink r4 folded": (keras_adalink.fold(adapted), inputs(b, n)),
        "LoRA r4 unmerged (q,v)": (lora_backbone(4), inputs(b, n)),
        "LoRA r16 unmerged (q,v)": (lora_backbone(16), inputs(b, n)),
        f"prompt tuning {args.prompt_tokens} tokens": (
            frozen,
            inputs(b, n + args.prompt_tokens),
        ),
        "TaskRouter 8 tasks, single-task batch": (
            routed,
            inputs(b, n, task_id=np.zeros(b)),
        ),
        "TaskRouter 8 tasks, mixed-task batch": (
            routed,
            inputs(b, n, task_id=np.arange(b) % 8),
        ),
    }
    for model, x in variants.values():  # Compile and warm up.
        for _ in range(2):
            model.predict_on_batch(x)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (model, x) in variants.items():
            start = time.perf_counter()
            out = model.predict_on_batch(x)
            keras.tree.map_structure(np.asarray, out)
            times[name].append(time.perf_counter() - start)
    base = float(np.median(times["frozen backbone"]))
    rows = []
    for name, ts in times.items():
        median = float(np.median(ts))
        rows.append(
            dict(
                variant=name,
                median_ms=1000 * median,
                iqr_ms=1000 * float(np.subtract(*np.percentile(ts, [75, 25]))),
                time_ratio=median / base,
                throughput_ratio=base / median,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    mixed = next(r for r in rows if "mixed" in r["variant"])
    single = next(r for r in rows if "single-task" in r["variant"])
    targets = {
        "folded within 0.5% of frozen": abs(rows[2]["time_ratio"] - 1) <= 0.005,
        "unfolded <= 2% overhead": rows[1]["time_ratio"] <= 1.02,
        "mixed-task >= 0.97x single-task throughput": (
            single["median_ms"] / mixed["median_ms"] >= 0.97
        ),
    }
    meta = dict(
        command="KERAS_BACKEND=jax .venv/bin/python benchmarks/serving.py",
        args=vars(args),
        backend=keras.backend.backend(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        targets_met=targets,
    )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "serving.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    lines = [
        f"# Serving overhead (MiniLM, batch {b}, sequence {n}, "
        f"{meta['backend']}, {meta['machine']})",
        "",
        f"`{meta['command']}`: median of {args.rounds} interleaved rounds "
        "of `predict_on_batch`; ratios against the frozen backbone.",
        "",
        "| variant | median ms | IQR ms | time ratio | throughput ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['median_ms']:.1f} | {r['iqr_ms']:.1f} | "
            f"{r['time_ratio']:.3f} | {r['throughput_ratio']:.3f} |"
        )
    lines += ["", "Targets:", ""]
    lines += [f"- {k}: {'met' if v else 'MISSED'}" for k, v in targets.items()]
    with open(os.path.join(RESULTS, "serving.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
