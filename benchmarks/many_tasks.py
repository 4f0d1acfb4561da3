"""Many tasks on one frozen model: cost of serving T composed adapters.

Pretrained all-MiniLM-L6-v2 (d=384), a mean-pooled linear head per task,
AdaLink rank 4 per task. T separately "trained" adapters (random weights of
the real shapes, written as real adapter files: a 2-, 3- or 5-way
classifier or a regressor per task, in turn) are composed with
`keras_adalink.compose` into one model, for T = 1, 10, 100, 1,000, 10,000.

Measured, side by side in one process:
- serving throughput: `predict_on_batch` on batch 32 x 128 with every
  example a random task, against the frozen single-task model (the same
  backbone + mean pool + one Dense head, no adapter), interleaved round by
  round; median paired time ratio with IQR, and an A/A row (the frozen
  model timed again) for the noise floor;
- memory: bytes of the composed adapter + head weights per task, against
  one task's own adapter file tensors;
- SavedModel (`export_saved_model`, jax2tf) size on disk and its load time
  in a TensorFlow-only process, vs T;
- `generate()` tokens/s on a randomly initialised Gemma-shaped decoder with
  1,000 composed tasks on a mixed batch vs 1 task (interleaved rounds);
- a live model (tiny BERT, d=64): `add_task` of one task into a 1,000-task
  model composed with capacity 1,001, plus its next predict, against
  `compose` of the same 1,001 tasks plus its first predict (which
  compiles), as a ratio of medians.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/many_tasks.py
    KERAS_BACKEND=jax .venv/bin/python benchmarks/many_tasks.py --live-only

Writes benchmarks/results/many_tasks.{json,md,png}.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

import keras_adalink  # noqa: E402
from keras_adalink.adapter_file import FORMAT  # noqa: E402
from keras_adalink.adapter_file import read_adapter  # noqa: E402
from keras_adalink.heads import mean_pooled_classifier  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
WIDTHS = (2, 3, 5, 1)  # task k's head width: WIDTHS[k % 4]


def write_adapters(model, count, folder, seed=0, widths=WIDTHS):
    """`count` adapter files shaped like `model`'s, with random weights.

    Each file has `model`'s record (same backbone fingerprint) and, for
    models with a head, head width widths[k % len(widths)]. Returns their
    paths.
    """
    keras_adalink.save_adapter(model, os.path.join(folder, "template.st"))
    record, tensors = read_adapter(os.path.join(folder, "template.st"))
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        width = widths[k % len(widths)]
        made, shapes = {}, {}
        for name, value in tensors.items():
            shape = list(value.shape)
            if "adalink" not in name:  # head: [d, w] kernel, [w] bias
                shape[-1] = width
            made[name] = rng.normal(0, 0.05, shape).astype("float32")
            shapes[name] = shape
        paths.append(os.path.join(folder, f"task{k:05d}.safetensors"))
        save_file(
            made,
            paths[-1],
            metadata={FORMAT: json.dumps({**record, "variables": shapes})},
        )
    return paths


def interleaved(variants, rounds, call):
    """`{name: [seconds per round]}`, every variant timed once per round."""
    for args in variants.values():  # Compile and warm up.
        for _ in range(2):
            call(*args)
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, args in variants.items():
            start = time.perf_counter()
            call(*args)
            times[name].append(time.perf_counter() - start)
    return times


def paired(times, base):
    ratios = np.asarray(times) / np.asarray(base)
    q25, q75 = np.percentile(ratios, [25, 75])
    return float(np.median(ratios)), [float(q25), float(q75)]


def ratio_rows(times, base, key, value):
    """A row a variant: `key` = `value(times)`, paired time ratio vs `base`
    with its IQR, and the throughput ratio; printed as they are made."""
    rows = []
    for name, ts in times.items():
        ratio, iqr = paired(ts, times[base])
        rows.append(
            {
                "variant": name,
                key: float(value(ts)),
                "time_ratio": ratio,
                "time_ratio_iqr": iqr,
                "throughput_ratio": 1 / ratio,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def predict(model, x):
    keras.tree.map_structure(np.asarray, model.predict_on_batch(x))


def folder_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(path)
        for f in files
    )


_LOAD = "import sys, time, tensorflow as tf; t = time.perf_counter(); " + (
    "tf.saved_model.load(sys.argv[1]); print(time.perf_counter() - t)"
)


def load_seconds(path, repeats):
    """Median time of `tf.saved_model.load` in a TensorFlow-only process."""
    times = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _LOAD, path],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return float(np.median(times))


def generate_rows(args, work):
    """Gemma-shaped decoder: 1,000 composed tasks mixed vs 1 task."""
    keras.utils.set_random_seed(0)
    lm = keras_hub.models.GemmaCausalLM(
        keras_hub.models.GemmaBackbone(
            vocabulary_size=args.lm_vocab,
            num_layers=args.lm_layers,
            hidden_dim=args.lm_dim,
            head_dim=args.lm_dim // 4,
            num_query_heads=4,
            num_key_value_heads=1,
            intermediate_dim=4 * args.lm_dim,
        ),
        preprocessor=None,
    )
    single = keras_adalink.adapt(lm, rank=4)
    paths = write_adapters(single, args.lm_tasks, work, seed=1)
    one = keras_adalink.compose(paths[:1], base=single)
    many = keras_adalink.compose(paths, base=single)
    rng = np.random.default_rng(0)
    b, p, n = args.lm_batch, args.lm_prompt, args.lm_length
    prompt = {
        "token_ids": np.zeros((b, n), "int32"),
        "padding_mask": np.zeros((b, n), "int32"),
    }
    prompt["token_ids"][:, :p] = rng.integers(1, args.lm_vocab, (b, p))
    prompt["padding_mask"][:, :p] = 1
    variants = {
        "1 task": (one, {**prompt, "task_id": np.zeros(b, "int32")}),
        f"{args.lm_tasks} tasks, mixed batch": (
            many,
            {
                **prompt,
                "task_id": rng.integers(0, args.lm_tasks, b).astype("int32"),
            },
        ),
    }

    def generate(model, x):
        model.generate(x, stop_token_ids=None)

    times = interleaved(variants, args.lm_rounds, generate)
    tokens = b * (n - p)
    return ratio_rows(
        times, "1 task", "tokens_per_s", lambda ts: tokens / np.median(ts)
    )


def live_rows(args, work):
    """`add_task` into a live model vs `compose` + first predict."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=1000,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=args.live_seq,
    )
    single = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=4), 2)
    count = args.live_tasks
    paths = write_adapters(single, count + 1, work, seed=2, widths=(2,))
    rng = np.random.default_rng(0)
    b, n = args.live_batch, args.live_seq
    x = {
        "token_ids": rng.integers(1, 1000, (b, n)).astype("int32"),
        "segment_ids": np.zeros((b, n), "int32"),
        "padding_mask": np.ones((b, n), "int32"),
    }
    ids = rng.integers(0, count, b).astype("int32")
    ids[0] = count  # the added task's slot

    start = time.perf_counter()
    live = keras_adalink.compose(paths[:count], base=single, capacity=count + 1)
    predict(live, {**x, "task_id": ids})
    live_build_s = time.perf_counter() - start
    predict_function = live.predict_function
    add_s, add_predict_s = [], []
    for _ in range(args.live_rounds):
        start = time.perf_counter()
        keras_adalink.add_task(live, "new", paths[count])
        add_s.append(time.perf_counter() - start)
        predict(live, {**x, "task_id": ids})
        add_predict_s.append(time.perf_counter() - start)
        keras_adalink.remove_task(live, "new")
    keras_adalink.add_task(live, "new", paths[count])
    live_out = live.predict_on_batch({**x, "task_id": ids})
    compose_s = []
    for _ in range(args.live_compose_rounds):
        start = time.perf_counter()
        scratch = keras_adalink.compose(paths[: count + 1], base=single)
        out = scratch.predict_on_batch({**x, "task_id": ids})
        keras.tree.map_structure(np.asarray, out)
        compose_s.append(time.perf_counter() - start)
    row = dict(
        tasks=count,
        capacity=count + 1,
        live_compose_and_first_predict_s=live_build_s,
        add_task_ms=1000 * float(np.median(add_s)),
        add_task_and_predict_ms=1000 * float(np.median(add_predict_s)),
        compose_and_first_predict_s=float(np.median(compose_s)),
        same_predict_function=live.predict_function is predict_function,
        max_abs_diff_vs_compose=float(
            np.abs(np.asarray(live_out["outputs"]) - out["outputs"]).max()
        ),
    )
    row["speedup"] = row["compose_and_first_predict_s"] / (
        row["add_task_and_predict_ms"] / 1000
    )
    print(json.dumps(row), flush=True)
    return row


def run_live(args):
    work = tempfile.mkdtemp(prefix="many_tasks_live_")
    try:
        return dict(
            live_rows(args, work),
            date=time.strftime("%Y-%m-%d"),
            backend=keras.backend.backend(),
            machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
            args={k: v for k, v in vars(args).items() if k.startswith("live")},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="1,10,100,1000,10000")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--lm-tasks", type=int, default=1000)
    parser.add_argument("--lm-dim", type=int, default=256)
    parser.add_argument("--lm-layers", type=int, default=4)
    parser.add_argument("--lm-vocab", type=int, default=4096)
    parser.add_argument("--lm-batch", type=int, default=8)
    parser.add_argument("--lm-prompt", type=int, default=8)
    parser.add_argument("--lm-length", type=int, default=40)
    parser.add_argument("--lm-rounds", type=int, default=10)
    parser.add_argument("--live-tasks", type=int, default=1000)
    parser.add_argument("--live-batch", type=int, default=8)
    parser.add_argument("--live-seq", type=int, default=32)
    parser.add_argument("--live-rounds", type=int, default=10)
    parser.add_argument("--live-compose-rounds", type=int, default=3)
    parser.add_argument(
        "--live-only",
        action="store_true",
        help="measure only the live model; other figures from the JSON",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the markdown and plot from the committed JSON",
    )
    args = parser.parse_args()
    if args.report_only:
        with open(os.path.join(RESULTS, "many_tasks.json")) as f:
            report = json.load(f)
        write(report, meta=report["meta"])
        return
    if args.live_only:
        with open(os.path.join(RESULTS, "many_tasks.json")) as f:
            report = json.load(f)
        report["live"] = run_live(args)
        write(report, meta=report["meta"])
        return
    counts = [int(t) for t in args.tasks.split(",")]
    work = tempfile.mkdtemp(prefix="many_tasks_")
    try:
        report = run(args, counts, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(report)


def run(args, counts, work):
    backbone = keras_hub.models.BertBackbone.from_preset(
        keras_adalink.datasets.minilm_path()
    )
    single = mean_pooled_classifier(keras_adalink.adapt(backbone, rank=4), 2)
    frozen = mean_pooled_classifier(backbone, 2)
    os.makedirs(os.path.join(work, "adapters"))
    start = time.perf_counter()
    paths = write_adapters(single, max(counts), os.path.join(work, "adapters"))
    print(
        f"wrote {len(paths)} adapter files in "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    own = {}  # bytes of one task's own tensors, by head width
    for k in range(len(WIDTHS)):
        _, tensors = read_adapter(paths[k])
        own[WIDTHS[k]] = sum(v.nbytes for v in tensors.values())

    rng = np.random.default_rng(0)
    b, n = args.batch, args.seq
    x = {
        "token_ids": rng.integers(1000, 30000, (b, n)).astype("int32"),
        "segment_ids": np.zeros((b, n), "int32"),
        "padding_mask": np.ones((b, n), "int32"),
    }
    variants = {
        "frozen single-task": (frozen, x),
        "frozen single-task again (A/A)": (frozen, x),
    }
    sizes = []
    for count in counts:
        start = time.perf_counter()
        multi = keras_adalink.compose(paths[:count], base=single)
        compose_s = time.perf_counter() - start
        added = [v for v in multi.weights if "adalink" in v.path] + [
            v for v in multi.get_layer("head").weights
        ]
        weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in added)
        own_bytes = sum(own[WIDTHS[k % len(WIDTHS)]] for k in range(count))
        row = dict(
            tasks=count,
            compose_s=compose_s,
            adapter_weight_bytes=weight_bytes,
            own_file_tensor_bytes=own_bytes,
        )
        if not args.no_export:
            path = os.path.join(work, f"saved_{count}")
            start = time.perf_counter()
            keras_adalink.export_saved_model(multi, path)
            row["export_s"] = time.perf_counter() - start
            row["saved_model_bytes"] = folder_bytes(path)
            row["load_s"] = load_seconds(path, args.load_repeats)
            shutil.rmtree(path)
        sizes.append(row)
        print(json.dumps(row), flush=True)
        task_id = rng.integers(0, count, b).astype("int32")
        variants[f"{count} tasks, mixed batch"] = (
            multi,
            {**x, "task_id": task_id},
        )
    times = interleaved(variants, args.rounds, predict)
    rows = ratio_rows(
        times, "frozen single-task", "median_ms", lambda t: 1000 * np.median(t)
    )
    lm_dir = os.path.join(work, "lm")
    os.makedirs(lm_dir)
    lm_rows = generate_rows(args, lm_dir)
    return dict(
        args=vars(args),
        serving=rows,
        sizes=sizes,
        generate=lm_rows,
        live=run_live(args),
    )


def targets(report):
    by_name = {r["variant"]: r for r in report["serving"]}
    biggest = max(s["tasks"] for s in report["sizes"])
    met = {}
    loss = 1 - by_name[f"{biggest} tasks, mixed batch"]["throughput_ratio"]
    met[f"<= 2% throughput loss at {biggest:,} tasks mixed"] = loss <= 0.02
    exported = [s for s in report["sizes"] if "saved_model_bytes" in s]
    if len(exported) >= 2:
        lo, hi = exported[-2], exported[-1]
        per_task = (hi["saved_model_bytes"] - lo["saved_model_bytes"]) / (
            hi["tasks"] - lo["tasks"]
        )
        own = (hi["own_file_tensor_bytes"] - lo["own_file_tensor_bytes"]) / (
            hi["tasks"] - lo["tasks"]
        )
        report["saved_model_bytes_per_added_task"] = per_task
        report["own_bytes_per_task"] = own
        met["SavedModel bytes per added task within 10% of own weights"] = (
            abs(per_task / own - 1) <= 0.10
        )
    gen = report["generate"]
    met["generate() many tasks mixed >= 0.97x one task"] = (
        gen[1]["throughput_ratio"] >= 0.97
    )
    if "live" in report:
        met["live add_task + predict >= 10x faster than compose + predict"] = (
            report["live"]["speedup"] >= 10
        )
    return met


def ratio_table(rows, label, key, spec):
    """Markdown rows: variant, `key`, time ratio [IQR], throughput ratio."""
    lines = [
        f"| variant | {label} | time ratio [IQR] | throughput ratio |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["time_ratio_iqr"]
        lines.append(
            f"| {r['variant']} | {r[key]:{spec}} | "
            f"{r['time_ratio']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{r['throughput_ratio']:.3f} |"
        )
    return lines


def write(report, meta=None):
    report["targets_met"] = targets(report)
    report["meta"] = meta or dict(
        command="KERAS_BACKEND=jax .venv/bin/python benchmarks/many_tasks.py",
        backend=keras.backend.backend(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        date=time.strftime("%Y-%m-%d"),
    )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "many_tasks.json"), "w") as f:
        json.dump(report, f, indent=2)
    args, meta = report["args"], report["meta"]
    lines = [
        f"# Many tasks, one frozen MiniLM ({meta['backend']}, "
        f"{meta['machine']}, {meta['date']})",
        "",
        f"`{meta['command']}`. Serving: `predict_on_batch`, batch "
        f"{args['batch']} x {args['seq']}, every example a random task, "
        f"{args['rounds']} interleaved rounds; time ratio = median over "
        "rounds of (variant time / frozen single-task time in the same "
        "round), IQR in brackets.",
        "",
        "![serving throughput and size vs number of tasks](many_tasks.png)",
        "",
    ]
    lines += ratio_table(report["serving"], "median ms", "median_ms", ".1f")
    lines += [
        "",
        "Size (adapter + head weights in the model; one task's own adapter "
        "file tensors summed over the tasks; SavedModel on disk and its "
        "load time in a TensorFlow-only process):",
        "",
        "| tasks | compose s | adapter+head MB | own tensors MB | "
        "SavedModel MB | export s | load s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in report["sizes"]:
        lines.append(
            f"| {s['tasks']:,} | {s['compose_s']:.2f} | "
            f"{s['adapter_weight_bytes'] / 1e6:.2f} | "
            f"{s['own_file_tensor_bytes'] / 1e6:.2f} | "
            + (
                f"{s['saved_model_bytes'] / 1e6:.1f} | {s['export_s']:.1f} | "
                f"{s['load_s']:.2f} |"
                if "saved_model_bytes" in s
                else "- | - | - |"
            )
        )
    if "saved_model_bytes_per_added_task" in report:
        lines += [
            "",
            "SavedModel bytes per added task (between the two largest T): "
            f"{report['saved_model_bytes_per_added_task']:,.0f}; a task's "
            f"own tensors: {report['own_bytes_per_task']:,.0f} on average.",
        ]
    lines += [
        "",
        f"`generate()`: Gemma-shaped decoder (d={args['lm_dim']}, "
        f"{args['lm_layers']} layers, vocabulary {args['lm_vocab']}, "
        f"random weights), batch {args['lm_batch']}, prompt "
        f"{args['lm_prompt']}, {args['lm_length'] - args['lm_prompt']} new "
        f"tokens, greedy, {args['lm_rounds']} interleaved rounds.",
        "",
    ]
    lines += ratio_table(report["generate"], "tokens/s", "tokens_per_s", ".0f")
    if "live" in report:
        lines += live_lines(report["live"])
    lines += ["", "Targets:", ""]
    lines += [
        f"- {k}: {'met' if v else 'MISSED'}"
        for k, v in report["targets_met"].items()
    ]
    with open(os.path.join(RESULTS, "many_tasks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(report)
    print("\n".join(lines))


def live_lines(live):
    a = live["args"]
    return [
        "",
        f"Live model ({live['backend']}, {live['machine']}, {live['date']}; "
        "`--live-only` reruns just this): tiny BERT (d=64, 2 layers), "
        f"{live['tasks']:,} tasks composed with capacity "
        f"{live['capacity']:,}; batch {a['live_batch']} x {a['live_seq']}, "
        "one row on the added task. Medians over "
        f"{a['live_rounds']} add/remove rounds and "
        f"{a['live_compose_rounds']} composes.",
        "",
        "| step | time |",
        "|---|---|",
        f"| `add_task` (read file, check, write slot) | "
        f"{live['add_task_ms']:.1f} ms |",
        f"| `add_task` + next predict | "
        f"{live['add_task_and_predict_ms']:.1f} ms |",
        f"| `compose` of {live['capacity']:,} tasks + first predict | "
        f"{live['compose_and_first_predict_s']:.2f} s |",
        "",
        f"Speed-up: {live['speedup']:.0f}x; the compiled predict function "
        f"was {'kept' if live['same_predict_function'] else 'REPLACED'}; "
        "the added task's outputs differ from the composed model's by at "
        f"most {live['max_abs_diff_vs_compose']:.1e}.",
    ]


def plot(report):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["serving"] if "tasks, mixed" in r["variant"]]
    tasks = [int(r["variant"].split()[0]) for r in rows]
    ratio = [r["throughput_ratio"] for r in rows]
    lo = [r["throughput_ratio"] - 1 / r["time_ratio_iqr"][1] for r in rows]
    hi = [1 / r["time_ratio_iqr"][0] - r["throughput_ratio"] for r in rows]
    aa = next(r for r in report["serving"] if "(A/A)" in r["variant"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    ax.errorbar(tasks, ratio, yerr=[lo, hi], marker="o", capsize=3)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.axhline(0.98, color="red", lw=0.8, ls="--", label="goal: >= 0.98")
    ax.axhspan(
        1 / aa["time_ratio_iqr"][1],
        1 / aa["time_ratio_iqr"][0],
        color="gray",
        alpha=0.2,
        label="A/A noise (IQR)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("tasks composed (every example a random task)")
    ax.set_ylabel("throughput vs frozen single-task")
    ax.legend(fontsize=8)
    ax.set_title("Serving throughput (median, IQR)")
    sizes = [s for s in report["sizes"] if "saved_model_bytes" in s]
    ax = axes[1]
    if sizes:
        ax.plot(
            [s["tasks"] for s in sizes],
            [s["saved_model_bytes"] / 1e6 for s in sizes],
            marker="o",
            label="SavedModel",
        )
    ax.plot(
        [s["tasks"] for s in report["sizes"]],
        [s["adapter_weight_bytes"] / 1e6 for s in report["sizes"]],
        marker="o",
        label="adapters + heads",
    )
    ax.set_xscale("log")
    ax.set_xlabel("tasks composed")
    ax.set_ylabel("MB")
    ax.legend(fontsize=8)
    ax.set_title("Size")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "many_tasks.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
