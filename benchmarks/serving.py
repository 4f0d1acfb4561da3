"""Serving overhead of AdaLink against the frozen backbone, side by side.

Pretrained all-MiniLM-L6-v2, batch 32, sequence 128, CPU. Every variant's
compiled forward pass (`predict_on_batch`) is timed in the same process,
interleaved round by round so machine noise hits all variants alike. Each
round gives a paired ratio (variant time / frozen time in that round); the
table reports the median paired ratio and its interquartile range. An A/A
row (the frozen backbone timed again as if it were a variant) shows the
measurement's own noise floor.

Variants: frozen backbone; AdaLink rank 4 unfolded; AdaLink folded into the
vocabulary table; LoRA via Keras' `enable_lora` (query/value) at rank 4 and
16, unmerged; prompt tuning with 64 soft tokens
(`keras_adalink.baselines.prompt_tuning`, residual reparameterisation); a
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
    return keras_adalink.baselines.lora(load(), rank, targets="query_value")


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
        "frozen backbone again (A/A noise floor)": (frozen, inputs(b, n)),
        "AdaLink r4 unfolded": (adapted, inputs(b, n)),
        "AdaLink r4 folded": (keras_adalink.fold(adapted), inputs(b, n)),
        "LoRA r4 unmerged (q,v)": (lora_backbone(4), inputs(b, n)),
        "LoRA r16 unmerged (q,v)": (lora_backbone(16), inputs(b, n)),
        f"prompt tuning {args.prompt_tokens} tokens": (
            keras_adalink.baselines.prompt_tuning(load(), args.prompt_tokens),
            inputs(b, n),
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
    base = np.asarray(times["frozen backbone"])
    rows = []
    for name, ts in times.items():
        paired = np.asarray(ts) / base
        q25, q75 = np.percentile(paired, [25, 75])
        rows.append(
            dict(
                variant=name,
                median_ms=1000 * float(np.median(ts)),
                time_ratio=float(np.median(paired)),
                time_ratio_iqr=[float(q25), float(q75)],
                throughput_ratio=float(1 / np.median(paired)),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    by_name = {r["variant"]: r for r in rows}
    mixed = by_name["TaskRouter 8 tasks, mixed-task batch"]
    single = by_name["TaskRouter 8 tasks, single-task batch"]
    targets = {
        "folded within 0.5% of frozen": abs(
            by_name["AdaLink r4 folded"]["time_ratio"] - 1
        )
        <= 0.005,
        "unfolded <= 2% overhead": by_name["AdaLink r4 unfolded"]["time_ratio"]
        <= 1.02,
        "mixed-task >= 0.97x single-task throughput": (
            single["time_ratio"] / mixed["time_ratio"] >= 0.97
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
        "of `predict_on_batch`; time ratio = median over rounds of "
        "(variant time / frozen time in the same round), IQR of those "
        "paired ratios in brackets.",
        "",
        "| variant | median ms | time ratio [IQR] | throughput ratio |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["time_ratio_iqr"]
        lines.append(
            f"| {r['variant']} | {r['median_ms']:.1f} | "
            f"{r['time_ratio']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{r['throughput_ratio']:.3f} |"
        )
    lines += ["", "Targets:", ""]
    lines += [f"- {k}: {'met' if v else 'MISSED'}" for k, v in targets.items()]
    with open(os.path.join(RESULTS, "serving.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
