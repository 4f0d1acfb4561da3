"""Cost of `keras_adalink.adapt()` on ~1B-parameter models, vs building them.

Two randomly initialised decoders built from constructor arguments (no
weights are downloaded): a Gemma-shaped dense model and a Mixtral-shaped
mixture of experts, each about 1B parameters. For each, in one process and
interleaved round by round: the time to build the backbone (what a user
pays anyway) and the time `adapt(backbone, rank=8)` then takes (graph
replay over the backbone's own layers, adapter weights, freezing). The
goal is adapt <= 1.2x build; the ratio reported is the median over rounds
of adapt / build, with the range.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/adapt_time.py [--rounds 3]

Writes benchmarks/results/adapt_time.{json,md}.
"""

import argparse
import gc
import json
import os
import platform
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_adalink  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")

CONFIGS = {
    # Gemma-2B-like widths, fewer layers: ~1.0B parameters.
    "gemma_1b": lambda: keras_hub.models.GemmaBackbone(
        vocabulary_size=256_000,
        num_layers=5,
        num_query_heads=8,
        num_key_value_heads=1,
        hidden_dim=2048,
        intermediate_dim=32_768,
        head_dim=256,
    ),
    # Mixtral-like block, 8 experts, small: ~1.0B parameters.
    "mixtral_1b": lambda: keras_hub.models.MixtralBackbone(
        vocabulary_size=32_000,
        num_layers=10,
        num_query_heads=16,
        num_key_value_heads=4,
        hidden_dim=1024,
        intermediate_dim=3584,
        num_experts=8,
        top_k=2,
    ),
}


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(name, rounds):
    rows = []
    for _ in range(rounds):
        backbone, build_s = _timed(CONFIGS[name])
        params = backbone.count_params()
        _, adapt_s = _timed(lambda b=backbone: keras_adalink.adapt(b, rank=8))
        rows.append((build_s, adapt_s))
        del backbone
        gc.collect()
    ratios = [a / b for b, a in rows]
    return {
        "model": name,
        "parameters": params,
        "build_s": [round(b, 3) for b, _ in rows],
        "adapt_s": [round(a, 3) for _, a in rows],
        "ratio_median": round(float(np.median(ratios)), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }


def table(results):
    lines = [
        "| model | parameters | build (s, median) | adapt (s, median) "
        "| adapt / build (median, range) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e9:.2f}B "
            f"| {np.median(r['build_s']):.1f} | {np.median(r['adapt_s']):.2f} "
            f"| {r['ratio_median']:.3f} ({r['ratio_min']:.3f}-"
            f"{r['ratio_max']:.3f}) |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=sorted(CONFIGS))
    args = parser.parse_args()
    results = [measure(name, args.rounds) for name in args.models]
    meta = {
        "backend": keras.backend.backend(),
        "keras_hub": keras_hub.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "rounds": args.rounds,
        "goal": "adapt <= 1.2x build",
    }
    text = table(results)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "adapt_time.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    with open(os.path.join(RESULTS, "adapt_time.md"), "w") as f:
        f.write(
            "# adapt() time on ~1B-parameter models\n\n"
            f"{meta['machine']}, {meta['backend']} backend, KerasHub "
            f"{meta['keras_hub']}, {args.rounds} rounds. Goal: "
            f"{meta['goal']}. Reproduce: `KERAS_BACKEND=jax .venv/bin/python "
            "benchmarks/adapt_time.py`.\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
