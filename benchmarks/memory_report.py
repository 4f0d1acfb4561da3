"""Tables, the issue's goal figures and the plot for `benchmarks/memory.py`
(memory.json -> memory.md, memory.png); the extrapolation to bigger models
is in `memory_extrapolate.py`.
"""

import json
import os

from memory_extrapolate import DEVICES_GIB
from memory_extrapolate import extrapolation
from memory_extrapolate import extrapolation_md


def _key(row):
    return (
        row.get("model", "minilm"),
        row.get("probe"),
        row["layers"],
        row["method"],
        row["base"],
        row["remat"],
    )


def load(out):
    path = os.path.join(out, "memory.json")
    if not os.path.exists(path):
        return {"meta": {}, "rows": []}
    with open(path) as f:
        saved = json.load(f)
    if "backend" in saved["meta"]:  # written before the meta per model
        saved["meta"] = {"minilm": saved["meta"]}
    for row in saved["rows"]:
        row.setdefault("model", "minilm")
        row.setdefault("probe", None)
    return saved


def save(out, meta, row):
    """Adds (or replaces) one row in memory.json at once, so a run that is
    stopped keeps every setting it finished."""
    os.makedirs(out, exist_ok=True)
    saved = load(out)
    saved["meta"][row["model"]] = meta
    saved["rows"] = [r for r in saved["rows"] if _key(r) != _key(row)]
    saved["rows"].append(row)
    with open(os.path.join(out, "memory.json"), "w") as f:
        json.dump(saved, f, indent=1)


def _find(rows, **want):
    for row in rows:
        if all(row.get(k) == v for k, v in want.items()):
            return row
    return None


def table(rows, timed):
    lines = [
        "| layers | method | base | remat | trainable | args MB | temp MB "
        "| step MB | x full FT | x LoRA | step s | x no remat |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = dict(layers=row["layers"], probe=None)
        full = _find(rows, method="full", remat=False, **same)
        lora = _find(
            rows, method="lora", base=row["base"], remat=row["remat"], **same
        )
        plain = _find(
            rows, method=row["method"], base=row["base"], remat=False, **same
        )
        x_full = f"{row['step_mb'] / full['step_mb']:.2f}" if full else "-"
        x_lora = "-"
        if row["method"].startswith("adalink") and lora:
            x_lora = f"{row['step_mb'] / lora['step_mb']:.3f}"
        step = x_plain = "-"
        if timed and row.get("step_s"):
            step = f"{row['step_s']:.3f}"
            x_plain = f"{row['step_s'] / plain['step_s']:.2f}" if plain else "-"
        lines.append(
            f"| {row['layers']} | {row['method']} | {row['base']} "
            f"| {'yes' if row['remat'] else 'no'} "
            f"| {row['trainable_params']:,} | {row['argument_mb']:.1f} "
            f"| {row['temp_mb']:.1f} | {row['step_mb']:.1f} | {x_full} "
            f"| {x_lora} | {step} | {x_plain} |"
        )
    return "\n".join(lines) + "\n"


def goals(rows, model):
    """The issue's three figures, worst case over the measured rows."""
    main = [r for r in rows if r["model"] == model and r["probe"] is None]
    lines = []
    ratios = []
    for row in main:
        if row["method"] != "adalink":  # adalink-d0 is listed in the table
            continue
        lora = _find(
            main,
            method="lora",
            base=row["base"],
            remat=row["remat"],
            layers=row["layers"],
        )
        if lora:
            ratios.append((row["step_mb"] / lora["step_mb"], row))
    if ratios:
        worst, row = max(ratios, key=lambda item: item[0])
        lines.append(
            f"- AdaLink / Keras LoRA step memory, same base and remat "
            f"(goal <= 1.0): at most {worst:.3f} ({row['base']}, remat "
            f"{'yes' if row['remat'] else 'no'}, {row['layers']} layers) "
            f"over {len(ratios)} pairs."
        )
    for row in main:
        if (row["method"], row["base"], row["remat"]) != (
            "adalink",
            "int4",
            True,
        ):
            continue
        full = _find(main, method="full", remat=False, layers=row["layers"])
        if full:
            lines.append(
                f"- AdaLink int4+remat / full fine-tuning, {row['layers']} "
                f"layers (goal <= 0.10): {row['step_mb'] / full['step_mb']:.2f}"
            )
    timed = []
    for row in main:
        plain = _find(
            main,
            method=row["method"],
            base=row["base"],
            remat=False,
            layers=row["layers"],
        )
        if row["remat"] and row.get("step_s") and plain:
            timed.append((row["step_s"] / plain["step_s"], row))
    if timed:
        worst, row = max(timed, key=lambda item: item[0])
        lines.append(
            f"- Step time with remat / without (goal <= 1.4): at most "
            f"{worst:.2f} ({row['method']} {row['base']}, {row['layers']} "
            f"layers) over {len(timed)} pairs."
        )
    return f"**{model}**\n\n" + "\n".join(lines) + "\n" if lines else ""


def plot(rows, extra, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, model, unit in ((axes[0], "minilm", 1), (axes[1], "gemma", 1024)):
        main = [r for r in rows if r["model"] == model and r["probe"] is None]
        if not main:
            ax.set_visible(False)
            continue
        depth = max(r["layers"] for r in main)
        main = [r for r in main if r["layers"] == depth]
        labels = [
            f"{r['method']} {r['base']}{' +remat' if r['remat'] else ''}"
            for r in main
        ]
        colors = {
            "full": "tab:gray",
            "adalink": "tab:blue",
            "adalink-d0": "tab:cyan",
            "lora": "tab:orange",
        }
        ax.barh(
            labels,
            [r["step_mb"] / unit for r in main],
            color=[colors[r["method"]] for r in main],
        )
        ax.invert_yaxis()
        ax.set_xlabel("train-step memory, " + ("MiB" if unit == 1 else "GiB"))
        r = main[0]
        ax.set_title(
            f"{model}, {depth} layers, batch {r['batch']} x {r['length']}"
        )
        ax.tick_params(axis="y", labelsize=7)
    ax = axes[2]
    if extra:
        names = list(dict.fromkeys(e["shape"] for e in extra))
        for i, method in enumerate(("adalink", "lora")):
            step = {
                e["shape"]: e["step_gib"]
                for e in extra
                if e["method"] == method
            }
            ax.bar(
                [n + (i - 0.5) * 0.4 for n in range(len(names))],
                [step.get(name, 0) for name in names],
                width=0.4,
                label="AdaLink" if method == "adalink" else "QLoRA (Keras)",
                color="tab:blue" if method == "adalink" else "tab:orange",
            )
        for gib in DEVICES_GIB:
            ax.axhline(gib, color="gray", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylabel("GiB")
        ax.legend(fontsize=8)
        ax.set_title("EXTRAPOLATED int4+remat, batch 1 x 2048")
    else:
        ax.set_visible(False)
    fig.suptitle("XLA memory analysis of the jitted train step (jax, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(out):
    saved = load(out)
    rows, meta = saved["rows"], saved["meta"]
    parts = []
    for model, title, timed in (
        (
            "minilm",
            "MiniLM (hidden 384, 12 heads, FFN 1536, vocab 30522) classifier",
            True,
        ),
        (
            "gemma",
            "Gemma-shaped ~1B causal LM (vocab 256000, hidden 1152, "
            "4 query heads, 1 kv head, head dim 256, gated FFN 6912; depths "
            "cut from 26)",
            False,
        ),
    ):
        main = [r for r in rows if r["model"] == model and r["probe"] is None]
        if not main:
            continue
        m = meta.get(model, {})
        r = main[0]
        parts.append(
            f"### {title}\n\nBatch {r['batch']} x length {r['length']}, jax "
            f"{m.get('jax')}, Keras {m.get('keras')} on {m.get('device')}"
            + ("" if timed else "; compiled only, no step run")
            + ".\n\n"
            + goals(rows, model)
            + "\n"
            + table(main, timed)
        )
    extra = extrapolation(rows)
    parts.append(
        "### Extrapolation to bigger models (arithmetic, not measured)\n\n"
        + extrapolation_md(rows, extra)
    )
    text = (
        "Train step (forward, backward, Adam) under XLA's memory analysis of "
        "the compiled step (args: weights, optimizer state, batch; temp: "
        "activations and buffers; step: args + temp + outputs not reusing "
        "a donated buffer; MB = 2^20 bytes) and the median step time, all "
        "settings of a model in one process: read times as ratios "
        "(`benchmarks/memory.py`). LoRA: Keras `enable_lora`, rank 4 on "
        "query and value; AdaLink rank 4 at the token embedding; bf16: "
        "the frozen backbone's dtype policy `bfloat16`, adapter and LoRA "
        "weights float32.\n\n" + "\n".join(parts)
    )
    with open(os.path.join(out, "memory.md"), "w") as f:
        f.write(text)
    saved["extrapolation"] = extra
    with open(os.path.join(out, "memory.json"), "w") as f:
        json.dump(saved, f, indent=1)
    plot(rows, extra, os.path.join(out, "memory.png"))
    print(text)
