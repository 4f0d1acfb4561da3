"""Tables and plots for benchmarks/evidence.py (`--stage report`)."""

import json
import os
from collections import defaultdict

import numpy as np

BACKBONE_PARAMS = 22713216
TASK_NAMES = {
    "rotten_tomatoes": "Rotten Tomatoes (acc)",
    "vader_movies": "VADER movies (r)",
    "vader_tweets": "VADER tweets (r)",
}
TUNE_STAGES = ("tune", "ranklr-tune", "tasklr-tune")
COMMAND = "KERAS_BACKEND=jax .venv/bin/python benchmarks/evidence.py --stage"


def _stats(values):
    values = 100 * np.asarray(values, "float64")
    return dict(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        n=int(len(values)),
    )


def _fmt(s):
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.1f} (1 seed)"
    return f"{s['mean']:.1f} ± {s['std']:.1f}"


def _params(n):
    return f"{n:,} ({100 * n / BACKBONE_PARAMS:.3f}%)"


def _table1(runs, seeds, methods, tasks=TASK_NAMES):
    """Table 1's runs of `methods` on `tasks` with `seeds`: references."""
    return [
        r
        for r in runs
        if r["key"].startswith("single|")
        and r["method"] in methods
        and r["task"] in tasks
        and r["seed"] in seeds
    ]


def _tune(runs, lines, out):
    rows = [r for r in runs if r["key"].split("|")[0] in TUNE_STAGES]
    if not rows:
        return
    grid = defaultdict(dict)
    for r in rows:
        name = r["method"]
        if r["task"] != "rotten_tomatoes":
            name += f", tuned on {TASK_NAMES[r['task']]}"
        grid[name][r["learning_rate"]] = r["validation"]
    out["tuning"] = {
        m: {str(k): v for k, v in g.items()} for m, g in grid.items()
    }
    lines += [
        "## Learning-rate tuning (same budget for every method)",
        "",
        f"`{COMMAND} tune`: Rotten Tomatoes validation accuracy, seed 0; the "
        "best rate (bold) is used for every task and seed. The rows below "
        "table 1's methods are the own-rate studies of tables 3 and 3c "
        "(validation Pearson r on the VADER tasks).",
        "",
        "| method | peak learning rates: validation score |",
        "|---|---|",
    ]
    for method, g in grid.items():
        best = max(g, key=g.get)
        cells = [
            (f"**{lr:g}: {acc:.4f}**" if lr == best else f"{lr:g}: {acc:.4f}")
            for lr, acc in sorted(g.items())
        ]
        lines.append(f"| {method} | {', '.join(cells)} |")
    lines.append("")


def _single(runs, lines, out, results):
    rows = [r for r in runs if r["key"].startswith("single|")]
    if not rows:
        return
    by = defaultdict(lambda: defaultdict(list))
    params = {}
    for r in rows:
        by[r["method"]][r["task"]].append(r["test"])
        params[r["method"]] = r["trainable_without_head"]
    table = {}
    for method, tasks in by.items():
        stats = {t: _stats(v) for t, v in tasks.items()}
        seeds = min(len(v) for v in tasks.values())
        per_seed = [
            np.mean([tasks[t][i] for t in TASK_NAMES if t in tasks])
            for i in range(seeds)
        ]
        if len(tasks) == len(TASK_NAMES):
            stats["average"] = _stats(per_seed)
        table[method] = dict(trainable_without_head=params[method], **stats)
    out["single_task"] = table
    lines += [
        "## 1. Single task (test split, mean ± std over seeds, x100)",
        "",
        f"`{COMMAND} single`. Trainable parameters exclude the shared "
        "mean-pooled linear head (770 for classification, 385 for "
        "regression); the % is of MiniLM's 22.7M.",
        "",
        "| method | trainable (% of backbone) | "
        + " | ".join(TASK_NAMES.values())
        + " | average | seeds |",
        "|---|---|" + "---|" * (len(TASK_NAMES) + 2),
    ]
    for method, stats in table.items():
        cells = [_fmt(stats.get(t)) for t in TASK_NAMES]
        seeds = min(s["n"] for k, s in stats.items() if k in TASK_NAMES)
        lines.append(
            f"| {method} | {_params(stats['trainable_without_head'])} | "
            + " | ".join(cells)
            + f" | {_fmt(stats.get('average'))} | {seeds} |"
        )
    lines.append("")
    _bar_plot(table, os.path.join(results, "evidence_single.png"))
    lines += ["![Single-task test scores](evidence_single.png)", ""]


def _multi(runs, lines, out):
    rows = [r for r in runs if r["key"].startswith("multi|")]
    if not rows:
        return
    by = defaultdict(lambda: defaultdict(list))
    params = {}
    for r in rows:
        params[r["method"]] = r["trainable"]
        for t in TASK_NAMES:
            by[r["method"]][t].append(r[t])
        by[r["method"]]["average"].append(np.mean([r[t] for t in TASK_NAMES]))
    out["multi_task"] = {
        m: dict(trainable=params[m], **{t: _stats(v) for t, v in d.items()})
        for m, d in by.items()
    }
    lines += [
        "## 2. Multi-task: one model for all three tasks",
        "",
        f"`{COMMAND} multi`: the three training sets mixed in every batch; "
        "one 4-output head (2 RT logits, one output per VADER task); the "
        "TaskRouter has one rank-4 module per task, routed by `task_id`. "
        "Trainable parameters include the head.",
        "",
        "| method | trainable | "
        + " | ".join(TASK_NAMES.values())
        + " | average |",
        "|---|---|" + "---|" * (len(TASK_NAMES) + 1),
    ]
    for method, d in out["multi_task"].items():
        cells = [_fmt(d[t]) for t in (*TASK_NAMES, "average")]
        lines.append(
            f"| {method} | {d['trainable']:,} | " + " | ".join(cells) + " |"
        )
    lines.append("")


def _ablation(runs, lines, out, results):
    rows = [r for r in runs if r["key"].startswith("ablation|")]
    if not rows:
        return
    # Ranks 4 and 16 ran in table 1; take the ablation's seeds from there.
    seeds = {r["seed"] for r in rows}
    for r in _table1(
        runs, seeds, ("AdaLink r4", "AdaLink r16"), ["rotten_tomatoes"]
    ):
        variant = f"rank {r['options']['rank']}"
        if r["method"] == "AdaLink r16":  # Table 1 tuned it on its own.
            variant += f", own lr {r['learning_rate']:g}"
        rows.append({**r, "variant": variant})
    for r in runs:  # Large ranks again, each at its own tuned rate.
        if r["key"].startswith("ranklr|") and r["seed"] in seeds:
            own = f"{r['variant']}, own lr {r['learning_rate']:g}"
            rows.append({**r, "variant": own})

    def order(row):  # Ranks first, ascending, each shared rate before own.
        words = row["variant"].replace(",", "").split()
        if words[0] != "rank":
            return (1, 0, False)
        return (0, int(words[1]), "own" in words)

    rows.sort(key=order)
    by = defaultdict(list)
    params = {}
    for r in rows:
        by[r["variant"]].append(r["test"])
        params[r["variant"]] = r["trainable_without_head"]
    out["ablation"] = {
        v: dict(trainable_without_head=params[v], **_stats(s))
        for v, s in by.items()
    }
    lines += [
        "## 3. Ablations (Rotten Tomatoes test accuracy, x100)",
        "",
        f"`{COMMAND} ablation`: AdaLink at rank 4's tuned rate, rank 4 after "
        "the token lookup with dropout 0.1 and a mean-pooled head unless the "
        "row says otherwise. Rows marked own lr: that rank's best of three "
        "rates on validation (rank 16: table 1's tuning; ranks 64 and 256: "
        f"`{COMMAND} rank_lr`, grid 1e-3, 3e-3, 1e-2).",
        "",
        "| variant | trainable (% of backbone) | accuracy | seeds |",
        "|---|---|---|---|",
    ]
    for v, s in out["ablation"].items():
        trainable = _params(s["trainable_without_head"])
        lines.append(f"| {v} | {trainable} | {_fmt(s)} | {s['n']} |")
    lines.append("")
    shared, own = [], []
    for v, s in out["ablation"].items():
        if v.startswith("rank "):
            rank = int(v.split()[1].rstrip(","))
            (own if "own lr" in v else shared).append((rank, s))
            if rank == 4:  # Tuned on its own in table 1: on both lines.
                own.append((rank, s))
    if shared:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        for series, label in ((shared, "rank 4's rate"), (own, "own rate")):
            if series:
                series.sort(key=lambda rs: rs[0])
                ax.errorbar(
                    [r for r, _ in series],
                    [s["mean"] for _, s in series],
                    yerr=[s["std"] for _, s in series],
                    marker="o",
                    capsize=3,
                    label=label,
                )
        ax.legend(fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("AdaLink rank")
        ax.set_ylabel("RT test accuracy (%)")
        ax.set_title("Rank ablation (mean ± std over seeds)")
        fig.tight_layout()
        fig.savefig(os.path.join(results, "evidence_rank.png"), dpi=120)
        plt.close(fig)
        lines += ["![Rank ablation](evidence_rank.png)", ""]


def _gap(runs, lines, out):
    rows = [r for r in runs if r["key"].startswith("gap|")]
    if not rows:
        return
    seeds = sorted({r["seed"] for r in rows})
    for r in _table1(runs, seeds, ("AdaLink r4", "full fine-tuning")):
        rows.append({**r, "variant": f"{r['method']} (table 1)"})
    by = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by[r["variant"]][r["seed"]][r["task"]] = r["test"]
    table = {}
    for variant, per_seed in by.items():
        done = [s for s in per_seed.values() if len(s) == len(TASK_NAMES)]
        stats = {
            t: _stats([s[t] for s in per_seed.values() if t in s])
            for t in TASK_NAMES
        }
        if done:
            stats["average"] = _stats([np.mean(list(s.values())) for s in done])
        table[variant] = stats
    out["gap"] = table
    lines += [
        "## 3b. Closing the gap to full fine-tuning (test, x100)",
        "",
        f"`{COMMAND} gap`: AdaLink r4 at its tuned rate with one change each, "
        "on every task; the two reference rows are table 1's runs with the "
        "same seeds.",
        "",
        "| variant | " + " | ".join(TASK_NAMES.values()) + " | average |",
        "|---|" + "---|" * (len(TASK_NAMES) + 1),
    ]
    for variant, stats in sorted(table.items(), key=lambda kv: "(" in kv[0]):
        cells = [_fmt(stats.get(t)) for t in (*TASK_NAMES, "average")]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")


def _task_lr(runs, lines, out):
    rows = [r for r in runs if r["key"].startswith("tasklr|")]
    if not rows:
        return
    seeds = {r["seed"] for r in rows}
    tasks = [t for t in TASK_NAMES if any(r["task"] == t for r in rows)]
    by = defaultdict(lambda: defaultdict(list))
    rates = defaultdict(dict)
    for r in rows:
        by[r["method"]][r["task"]].append(r["test"])
        rates[r["method"]][r["task"]] = r["learning_rate"]
    ref = defaultdict(lambda: defaultdict(list))
    for r in _table1(runs, seeds, by, tasks):
        ref[r["method"]][r["task"]].append(r["test"])
        rates[r["method"]].setdefault("table 1", r["learning_rate"])
    out["task_lr"] = {
        m: {
            t: dict(
                own_rate=rates[m][t],
                own=_stats(by[m][t]),
                table_1=_stats(ref[m][t]),
            )
            for t in tasks
        }
        for m in by
    }
    lines += [
        "## 3c. Learning rate tuned on each task (test, x100)",
        "",
        f"`{COMMAND} task_lr`: table 1 tunes every method once, on Rotten "
        "Tomatoes; here AdaLink r4 and full fine-tuning pick their rate from "
        "the same three-point grid on each VADER task's own validation split "
        "(seed 0), then run the same seeds on test.",
        "",
        "| method | task | rate: RT-tuned -> own | table 1 | own rate |",
        "|---|---|---|---|---|",
    ]
    for m, per_task in out["task_lr"].items():
        for t, d in per_task.items():
            lines.append(
                f"| {m} | {TASK_NAMES[t]} | {rates[m]['table 1']:g} -> "
                f"{d['own_rate']:g} | {_fmt(d['table_1'])} | {_fmt(d['own'])} |"
            )
    lines.append("")


def _data(runs, lines, out):
    rows = [r for r in runs if r["key"].startswith("data|")]
    if not rows:
        return
    seeds = {r["seed"] for r in rows}
    methods = sorted({r["method"] for r in rows})
    by = defaultdict(lambda: defaultdict(list))
    for r in rows + _table1(runs, seeds, methods, ["vader_movies"]):
        by[r["method"]][r["train_examples"]].append(r["test"])
    sizes = sorted({n for m in methods for n in by[m]})
    out["data"] = {
        m: {str(n): _stats(by[m][n]) for n in sizes if by[m][n]}
        for m in methods
    }
    lines += [
        "## 3d. More training data (VADER movies test Pearson r, x100)",
        "",
        f"`{COMMAND} data`: the task with the largest gap, trained on its "
        "whole training split with table 1's rates, 3 epochs; the "
        "smaller column is table 1's runs with the same seeds.",
        "",
        "| method | " + " | ".join(f"{n:,} examples" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for m in methods:
        cells = [_fmt(out["data"][m].get(str(n))) for n in sizes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")


def _cost(results, lines, out):
    path = os.path.join(results, "evidence_cost.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        cost = json.load(f)
    out["cost"] = cost
    lines += [
        "## 4. Training cost (jax, CPU, one process, side by side)",
        "",
        f"`{cost['command']}`: Keras train step (forward, backward, Adam) "
        f"on a {cost['batch']} x {cost['sequence_length']} batch, "
        f"{cost['rounds']} interleaved rounds of {cost['steps_per_round']} "
        "steps; ratios to the lower bound of the same round (median "
        "[IQR]). Memory is XLA's plan for the compiled step (arguments + "
        "temporaries).",
        "",
        "| method | trainable | step time / lower bound | ms / step | "
        "memory / lower bound | MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in cost["rows"]:
        lo, hi = r["time_ratio_iqr"]
        lines.append(
            f"| {r['method']} | {r['trainable']:,} | "
            f"{r['time_ratio_median']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{1000 * r['step_seconds_median']:.0f} | "
            f"{r['memory_ratio']:.2f} | {r['memory_bytes'] / 2**20:.0f} |"
        )
    lines.append("")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [r["method"] for r in cost["rows"]]
    axes[0].barh(names, [r["time_ratio_median"] for r in cost["rows"]])
    axes[0].set_xlabel("train step time / lower bound")
    axes[1].barh(names, [r["memory_ratio"] for r in cost["rows"]])
    axes[1].set_xlabel("train step memory / lower bound")
    axes[1].set_yticks([])
    for ax in axes:
        ax.axvline(1.0, color="gray", lw=0.8)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(os.path.join(results, "evidence_cost.png"), dpi=120)
    plt.close(fig)
    lines += ["![Training cost](evidence_cost.png)", ""]


def _peer(runs, results, lines, out):
    path = os.path.join(results, "peft_peer_check.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        peer = json.load(f)
    rows = [
        ("HF PEFT LoRA q,v r4 (torch)", [r["test"] for r in peer["peft_lora"]])
    ]
    for method in ("LoRA q,v r4", "AdaLink r4", "full fine-tuning"):
        scores = [
            r["test"]
            for r in runs
            if r["key"].startswith(f"single|{method}|rotten_tomatoes|")
        ]
        rows.append((f"keras-adalink {method} (jax)", scores))
    out["peer_check"] = {name: _stats(v) for name, v in rows if v}
    versions = ", ".join(f"{k} {v}" for k, v in peer["versions"].items())
    lines += [
        "## 5. Peer check: HF PEFT LoRA (Rotten Tomatoes test, x100)",
        "",
        f"`{peer['command']}` ({versions}): the same MiniLM files, split, "
        "budget, head and schedule; PEFT LoRA rank 4 on query/value with "
        f"alpha = rank, peak lr {peer['learning_rate']:g} (our LoRA's tuned "
        "rate). PEFT factorises each d x d projection (textbook LoRA, "
        f"{peer['peft_lora'][0]['trainable_with_head']:,} trainable with the "
        "head); Keras' `enable_lora` on KerasHub's per-head EinsumDense "
        "kernels factorises only the last axis (per-head rank 4, 6x the "
        "parameters), which is what our LoRA rows use.",
        "",
        "| method | accuracy | seeds |",
        "|---|---|---|",
    ]
    for name, s in out["peer_check"].items():
        lines.append(f"| {name} | {_fmt(s)} | {s['n']} |")
    lines.append("")


def _bar_plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(table)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(TASK_NAMES)
    for i, (task, label) in enumerate(TASK_NAMES.items()):
        means = [table[m].get(task, {}).get("mean", np.nan) for m in methods]
        stds = [table[m].get(task, {}).get("std", 0) for m in methods]
        xs = np.arange(len(methods)) + (i - 1) * width
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=label)
    ax.set_xticks(np.arange(len(methods)))
    ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(40, 100)
    ax.set_ylabel("test score x100")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs_path, results):
    with open(runs_path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    one = next((r for r in runs if "train_examples" in r), {})
    lines = [
        "# Evidence on real data: AdaLink vs LoRA, prompt tuning, full FT",
        "",
        "Frozen pretrained all-MiniLM-L6-v2; fixed splits (docs/data.md); "
        f"{one.get('train_examples', '?')} training examples per task, "
        f"{one.get('epochs', '?')} epochs, batch 32, sequence length 48; "
        "mean-pooled linear head, Adam + WarmupRsqrtDecay for every method. "
        "Every run is a line of `evidence_runs.jsonl`; this page is rebuilt "
        f"from it by `{COMMAND} report`.",
        "",
    ]
    out = {}
    _tune(runs, lines, out)
    _single(runs, lines, out, results)
    _multi(runs, lines, out)
    _ablation(runs, lines, out, results)
    _gap(runs, lines, out)
    _task_lr(runs, lines, out)
    _data(runs, lines, out)
    _cost(results, lines, out)
    _peer(runs, results, lines, out)
    with open(os.path.join(results, "evidence.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(results, "evidence.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
