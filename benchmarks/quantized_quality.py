"""Quality on quantized bases: AdaLink and head-only on int8/int4/float8.

Issue 27, item 4. The evidence protocol of benchmarks/evidence.py, imported
from it: frozen all-MiniLM-L6-v2, Rotten Tomatoes with the library's fixed
splits, 1,500 training examples, 3 epochs, batch 32, sequence length 48,
mean-pooled linear head, Adam + WarmupRsqrtDecay (10% warmup), seeds 0, 1,
2; test accuracy. The base is MiniLM as loaded (`f32`) or quantized in
place with Keras' `quantize(mode)` (`int8`, `int4`, `float8`), then frozen.
Two methods on every base:

- `AdaLink r4`: `adapt(backbone, rank=4, quantize=mode)`, rank 4 after the
  token lookup, at evidence.py's tuned AdaLink r4 rate;
- `head only`: the frozen (quantized) base and the linear head, at
  evidence.py's tuned head-only rate.

Both rates are read from results/evidence_runs.jsonl (tuned on the f32
base's validation split, not re-tuned per base). Every run appends one JSON
line to results/quantized_quality_runs.jsonl as it finishes, and runs
already there are skipped, so an interrupted session keeps what finished.
Runs go most important first: AdaLink on f32 and int8 (seed by seed, so
the pairs are complete), then AdaLink on int4 and float8, then head-only.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/quantized_quality.py
    ... --deadline 17:55  # start no run predicted to end after 17:55 UTC
    ... --render          # results/quantized_quality.{json,md} from the log
    ... --quick           # smoke test: tiny data, 1 epoch, seed 0, temp dir
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import evidence  # first: sets KERAS_BACKEND and HF_HUB_OFFLINE
import keras
import numpy as np
from runlog import RunLog

from keras_adalink.graph import all_layers
from keras_adalink.quantization import quantization_modes

BASES = ("f32", "int8", "int4", "float8")
# Short names for --methods -> evidence.METHODS names.
METHODS = {"adalink": "AdaLink r4", "head": "head only"}
TASK = "rotten_tomatoes"
GOAL_POINTS = 0.5  # int8 AdaLink within this many points of f32
COMMAND = "KERAS_BACKEND=jax .venv/bin/python benchmarks/quantized_quality.py"
RESULTS = evidence.RESULTS
RUNS = os.path.join(RESULTS, "quantized_quality_runs.jsonl")


def machine():
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1] for ln in f if "model name" in ln]
        cpu = names[0].strip() if names else cpu
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()}"


def plan(seeds):
    """(base, method) of every run, most important first."""
    adalink, head = METHODS.values()
    runs = [(b, adalink, s) for s in seeds for b in ("f32", "int8")]
    runs += [(b, adalink, s) for s in seeds for b in ("int4", "float8")]
    runs += [(b, head, s) for s in seeds for b in BASES]
    return runs


def run_key(base, method, lr, seed):
    return f"{base}|{method}|{TASK}|{lr:g}|{seed}"


def rates():
    """evidence.py's tuned rate of each method (Rotten Tomatoes, f32)."""
    return {m: evidence.tuned_lr(m) for m in METHODS.values()}


class EpochTimer(keras.callbacks.Callback):
    """Seconds per epoch, and the quantized layers of the trained model."""

    def on_train_begin(self, logs=None):
        self.seconds = []
        self.quantized = quantization_modes(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

    def on_train_end(self, logs=None):
        # float8 layers scale with variables meant to track amax while the
        # layer trains; on a frozen base they may never move from 1.0.
        scales = [
            float(np.asarray(v).reshape(-1)[0])
            for layer in all_layers(self.model)
            if getattr(layer, "quantization_mode", None) == "float8"
            for v in layer.variables
            if v.path.endswith("_scale")
        ]
        self.float8_scales = [min(scales), max(scales)] if scales else None


def one_run(backbones, data, args, base, method, lr, seed):
    timer = EpochTimer()
    start = time.perf_counter()
    row = evidence.train_one(
        backbones,
        data,
        args,
        method,
        TASK,
        lr,
        seed,
        options={} if base == "f32" else {"quantize": base},
        callbacks=[timer],
        base=base,
    )
    steps_per_epoch = -(-row["train_examples"] // evidence.BATCH)
    # Epochs after the first exclude compilation; --quick has only one.
    steady = timer.seconds[1:] or timer.seconds
    return dict(
        row,
        test_examples=len(data.splits[TASK][1]["test"][1]),
        quantized_layers=timer.quantized,
        float8_scales_after_training=timer.float8_scales,
        epoch_seconds=timer.seconds,
        step_seconds=float(np.median(steady)) / steps_per_epoch,
        run_seconds=time.perf_counter() - start,
        machine=machine(),
        backend=keras.backend.backend(),
        keras_version=keras.__version__,
        command=" ".join([COMMAND, *sys.argv[1:]]),
        load_average=os.getloadavg()[0],  # others on the same cores?
    )


def deadline(text):
    """`HH:MM` (UTC, today) -> epoch seconds; `None` passes through."""
    if text is None:
        return None
    hour, minute = (int(part) for part in text.split(":"))
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(hour=hour, minute=minute, second=0).timestamp()


def estimate(seconds, base, method):
    """A run's expected wall time from the runs of this process."""
    same = seconds.get((base, method)) or [
        s for (_, m), runs in seconds.items() if m == method for s in runs
    ]
    every = [s for runs in seconds.values() for s in runs]
    return max(same or every or [0.0])


def run_all(args, log, results):
    backbones = evidence.Backbones()
    data = evidence.Data(backbones, args.train_examples, tasks=[TASK])
    if args.quick:  # A few test examples: the smoke test checks plumbing.
        _, parts = data.splits[TASK]
        for split in ("validation", "test"):
            x, y = parts[split]
            parts[split] = ({k: v[:32] for k, v in x.items()}, y[:32])
    lrs = rates()
    stop = deadline(args.deadline)
    seconds = {}
    for base, method, seed in plan(args.seeds):
        key = run_key(base, method, lrs[method], seed)
        if key in log.keys():
            continue
        if base not in args.bases or method not in args.methods:
            continue
        expected = estimate(seconds, base, method)
        if stop is not None and time.time() + expected > stop:
            print(
                f"deadline {args.deadline} UTC: not starting {key} "
                f"(expected {expected:.0f} s) or any later run",
                flush=True,
            )
            break
        row = one_run(backbones, data, args, base, method, lrs[method], seed)
        seconds.setdefault((base, method), []).append(row["run_seconds"])
        log.record(key, row)
        render(log, results, args)


# --- report ---------------------------------------------------------------


def mean_std(values):
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), std


def summarize(log, args):
    lrs = rates()
    runs = {}
    for row in log.rows():
        runs.setdefault((row["base"], row["method"]), {})[row["seed"]] = row
    table = []
    for method in METHODS.values():
        ref = runs.get(("f32", method), {})
        for base in BASES:
            got = runs.get((base, method), {})
            if not got:
                continue
            seeds = sorted(got)
            mean, std = mean_std([100 * got[s]["test"] for s in seeds])
            entry = dict(
                base=base,
                method=method,
                learning_rate=lrs[method],
                seeds=seeds,
                test_mean=mean,
                test_std=std,
                test_runs=[100 * got[s]["test"] for s in seeds],
                quantized_layers=got[seeds[0]]["quantized_layers"],
                float8_scales=got[seeds[0]].get("float8_scales_after_training"),
                trainable=got[seeds[0]]["trainable"],
                step_seconds=float(
                    np.median([got[s]["step_seconds"] for s in seeds])
                ),
                run_seconds=float(
                    np.mean([got[s]["run_seconds"] for s in seeds])
                ),
                load_average=[
                    got[s]["load_average"]
                    for s in seeds
                    if "load_average" in got[s]
                ],
            )
            if base != "f32" and ref:
                entry["diff_points"] = (
                    mean
                    - mean_std([100 * ref[s]["test"] for s in sorted(ref)])[0]
                )
                paired = [
                    100 * (got[s]["test"] - ref[s]["test"])
                    for s in seeds
                    if s in ref
                ]
                if paired:
                    p_mean, p_std = mean_std(paired)
                    entry["paired_diff"] = dict(
                        seeds=[s for s in seeds if s in ref],
                        mean=p_mean,
                        std=p_std,
                    )
            table.append(entry)
    planned = [run_key(b, m, lrs[m], s) for b, m, s in plan(args.seeds)]
    done = log.keys()
    rows = log.rows()
    first = rows[0] if rows else {}
    return dict(
        command=COMMAND,
        run_commands=sorted({r["command"] for r in rows if "command" in r}),
        protocol=dict(
            task=TASK,
            train_examples=first.get("train_examples", args.train_examples),
            epochs=first.get("epochs", args.epochs),
            test_examples=first.get("test_examples"),
            batch=evidence.BATCH,
            sequence_length=evidence.SEQUENCE_LENGTH,
            seeds=list(args.seeds),
            learning_rates=lrs,
        ),
        machine=rows[0]["machine"] if rows else machine(),
        backend=rows[0]["backend"] if rows else keras.backend.backend(),
        keras_version=keras.__version__,
        table=table,
        int8_goal=goal(table),
        not_run=[k for k in planned if k not in done],
        reference=reference(),
    )


def goal(table):
    """Whether int8 AdaLink is within GOAL_POINTS of f32 (3 seeds each)."""
    rows = {(r["base"], r["method"]): r for r in table}
    f32 = rows.get(("f32", METHODS["adalink"]))
    int8 = rows.get(("int8", METHODS["adalink"]))
    if not (f32 and int8) or len(f32["seeds"]) < 3 or len(int8["seeds"]) < 3:
        return dict(points=GOAL_POINTS, met=None, diff=None)
    diff = int8["diff_points"]
    return dict(points=GOAL_POINTS, met=abs(diff) <= GOAL_POINTS, diff=diff)


def reference():
    """Table 1 of evidence.md (same protocol, f32, earlier code)."""
    found = {}
    for method in METHODS.values():
        lr = evidence.tuned_lr(method)
        tests = [
            100 * r["test"]
            for r in evidence.LOG.rows()
            if r["key"].startswith(f"single|{method}|{TASK}|{lr}|")
        ]
        if tests:
            mean, std = mean_std(tests)
            found[method] = dict(mean=mean, std=std, seeds=len(tests))
    return found


def fmt(mean, std, sign=False):
    text = f"{mean:+.1f}" if sign else f"{mean:.1f}"
    return text + (f" ± {std:.1f}" if std is not None else "")


def markdown(summary):
    p = summary["protocol"]
    lrs = p["learning_rates"]
    adalink, head = METHODS.values()
    lines = [
        "# Quality on quantized bases",
        "",
        "Frozen all-MiniLM-L6-v2, as loaded (f32) or quantized in place "
        "with Keras' `quantize(mode)`; the evidence protocol "
        "(benchmarks/evidence.py): Rotten Tomatoes, fixed splits, "
        f"{p['train_examples']:,} training examples, {p['epochs']} epochs, "
        f"batch {p['batch']}, sequence length {p['sequence_length']}, "
        "mean-pooled linear head, Adam + WarmupRsqrtDecay; test accuracy "
        f"({p['test_examples'] or 0:,} examples) x100, mean ± std over seeds "
        f"{', '.join(map(str, p['seeds']))}. AdaLink r4 sits after the "
        f"token lookup, rate {lrs[adalink]:g} (evidence.py's tuned AdaLink "
        f"r4 rate); head only trains the linear head on the frozen base, "
        f"rate {lrs[head]:g} (evidence.py's tuned head-only rate). Both "
        "rates were tuned on the f32 base and are not re-tuned per base.",
        "",
        f"Command: `{summary['command']}` (each run is a line of "
        "`quantized_quality_runs.jsonl`; `--render` rebuilds this page from "
        "it; the runs below were made with "
        + ", ".join(f"`{c}`" for c in summary["run_commands"])
        + f"). Machine: {summary['machine']}; backend "
        f"{summary['backend']}, Keras {summary['keras_version']}.",
        "",
        "| base | method | quantized layers | seeds | test accuracy "
        "| Δ vs f32 (points) | per-seed Δ (points) | step (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["table"]:
        layers = ", ".join(
            f"{mode}: {n}" for mode, n in r["quantized_layers"].items()
        )
        diff = fmt(r["diff_points"], None, True) if "diff_points" in r else ""
        paired = r.get("paired_diff")
        paired = fmt(paired["mean"], paired["std"], True) if paired else ""
        lines.append(
            f"| {r['base']} | {r['method']} | {layers or 'none'} "
            f"| {len(r['seeds'])} | {fmt(r['test_mean'], r['test_std'])} "
            f"| {diff} | {paired} | {1000 * r['step_seconds']:.0f} |"
        )
    g = summary["int8_goal"]
    if g["met"] is None:
        verdict = "not decided: AdaLink f32 and int8 lack their 3 seeds."
    else:
        verdict = (
            f"{'met' if g['met'] else 'missed'}: int8 - f32 = "
            f"{g['diff']:+.2f} points (goal: within ±{g['points']})"
        )
        if g["diff"] > g["points"]:
            verdict += ", int8 above f32"
        verdict += "."
    lines += [
        "",
        f"Goal, int8 AdaLink within {g['points']} points of f32: {verdict}",
        "",
        "Per-seed Δ pairs each base with the f32 run of the same seed (same "
        "adapter/head initialization, dropout and batch order), so it "
        "isolates the quantization from seed noise. Step time: median "
        "train step of epochs 2-3 (compilation excluded), batch 32, wall "
        "time on the CPU above: a side figure; Keras' CPU int8/int4/float8 "
        "kernels are not what an accelerator runs.",
    ]
    loads = [x for r in summary["table"] for x in r["load_average"]]
    if loads and max(loads) > os.cpu_count():
        lines[-1] += (
            f" Other processes shared the {os.cpu_count()} cores during "
            f"some runs (1-minute load average {min(loads):.1f} to "
            f"{max(loads):.1f} at their ends), so step times are inflated "
            "and noisy."
        )
    elif not loads:
        lines[-1] += (
            " The runs did not record the machine's load: other processes "
            "on the same cores would inflate step times."
        )
    scales = [
        (r["method"], r["float8_scales"])
        for r in summary["table"]
        if r.get("float8_scales")
    ]
    if scales:
        lines += [
            "",
            "float8 scales (inputs, kernel, output-gradient) after training, "
            "min to max over the base's float8 layers: "
            + "; ".join(f"{m} {lo:g} to {hi:g}" for m, (lo, hi) in scales)
            + ".",
        ]
        if all(lo == hi == 1.0 for _, (lo, hi) in scales):
            lines[-1] += (
                " They stayed at their initial 1.0: Keras' float8 mode "
                "updates them through the float8 layers' own trainable "
                "variables (delayed scaling), which a frozen base freezes."
            )
    ref = summary["reference"]
    if ref:
        lines += [
            "",
            "Reference, table 1 of evidence.md (same protocol and rates, f32, "
            "run with earlier library code): "
            + "; ".join(
                f"{m} {fmt(r['mean'], r['std'])} ({r['seeds']} seeds)"
                for m, r in ref.items()
            )
            + ".",
        ]
    if summary["not_run"]:
        lines += [
            "",
            f"**Partial**: {len(summary['not_run'])} planned runs did not "
            "run: " + ", ".join(f"`{k}`" for k in summary["not_run"]) + ".",
        ]
    return "\n".join(lines) + "\n"


def render(log, results, args):
    summary = summarize(log, args)
    with open(os.path.join(results, "quantized_quality.json"), "w") as f:
        json.dump(summary, f, indent=1)
    page = markdown(summary)
    with open(os.path.join(results, "quantized_quality.md"), "w") as f:
        f.write(page)
    return page


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deadline", help="HH:MM UTC")
    parser.add_argument("--train-examples", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--bases", default=",".join(BASES))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.bases = args.bases.split(",")
    args.methods = [METHODS[m] for m in args.methods.split(",")]
    results, runs = RESULTS, RUNS
    if args.quick:  # Never touches results/.
        args.train_examples, args.epochs, args.seeds = 16, 1, [0]
        results = tempfile.mkdtemp(prefix="quantized_quality_quick_")
        runs = os.path.join(results, "runs.jsonl")
    log = RunLog(runs)
    if not args.render:
        run_all(args, log, results)
    print(render(log, results, args))
    print(f"written to {results}")


if __name__ == "__main__":
    main()
