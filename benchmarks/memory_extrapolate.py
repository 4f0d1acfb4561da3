"""Per-layer fits of `benchmarks/memory.py`'s Gemma rows and the
extrapolation of train-step memory to bigger models.

The extrapolation is arithmetic on measured coefficients, not a
measurement. From the Gemma-shaped ~1B causal LM (`GEMMA_1B`) at batch 1
x length 2048, for one setting:

- argument bytes (weights, optimizer state, batch): a linear fit over depth
  gives bytes per layer; minus 12 bytes (f32 weight + two Adam moments) per
  trainable parameter, divided by the layer's parameter count, it gives the
  frozen bytes per parameter of a block. The vocabulary probe (depth 2,
  vocabulary halved) gives the bytes per embedding-table parameter;
- temp bytes (activations, gradients, buffers): the depth fit's slope is
  what each layer adds. Measured, `remat=True` does not make it one
  layer's input on this Gemma (jax, CPU): a layer keeps buffers sized by
  its query heads (length^2 attention scores) and FFN width. So the slope
  is split: the head and FFN probes (depth 2, at a small vocabulary so the
  logits buffer does not mask them; doubling the heads or the FFN width)
  give the bytes per query head and per FFN unit of a layer (their change
  over the 2 layers), the rest of the slope is taken as proportional to
  the width. The vocabulary probe gives the bytes per vocabulary entry
  (logits and their gradient); what the depth-2 small-vocabulary compile
  holds beyond these is a constant, scaled with the width.

Terms are added, though XLA's temp is a peak over buffers whose lifetimes
differ, so where the logits and a block's buffers are not live at once the
sum overestimates. Attention is the materialised (non-fused) path KerasHub
runs on CPU. jax itself saves only each block's input under remat (checked
with `jax.ad_checkpoint.print_saved_residuals`); the per-layer buffers are
XLA's CPU schedule of the recomputation. So a second, what-if column keeps
per layer only its input plus one block's buffers.
"""

import numpy as np

# The measured shape: Gemma 3 1B's widths in the Gemma (1) architecture,
# ~0.99B parameters at 26 layers. KerasHub's `intermediate_dim` is twice
# the gated FFN width.
GEMMA_1B = dict(
    vocabulary_size=256000,
    hidden_dim=1152,
    num_query_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    intermediate_dim=13824,
)
# name: (vocabulary, width, layers, query heads, kv heads, head dim, gated
# FFN width, tied embeddings). Public configs: Gemma 7B, Gemma 2 27B,
# Llama 3 70B.
SHAPES = {
    "Gemma ~1B (measured shape)": (256000, 1152, 26, 4, 1, 256, 6912, True),
    "Gemma 7B": (256000, 3072, 28, 16, 16, 256, 24576, True),
    "Gemma 2 27B": (256000, 4608, 46, 32, 16, 128, 36864, True),
    "Llama 3 70B": (128256, 8192, 80, 64, 8, 128, 28672, False),
}
EXTRAPOLATED = (("adalink", "int4"), ("lora", "int4"))
DEVICES_GIB = (16, 24, 80)
RANK = 4
MB = 2**20
LENGTH = 2048  # batch 1


def layer_params(vocab, d, n, h, k, hd, f, tied):
    return 2 * d * h * hd + 2 * d * k * hd + 3 * d * f + 2 * d


def params(shape):
    vocab, d, n, *_, tied = shape
    return vocab * d * (1 if tied else 2) + n * layer_params(*shape)


def trainable(method, vocab, d, n, h, k, hd, f, tied):
    if method == "adalink":
        return 2 * d * RANK
    # Keras' EinsumDense LoRA on a `dnh` kernel: A is [d, heads, r] and B
    # [r, head_dim], on query and value of every block.
    return n * RANK * (d * h + d * k + 2 * hd)


def coefficients(rows, method, base):
    """Per-layer and per-term bytes of one setting (remat on), or None if
    the rows needed are missing."""
    main = sorted(
        (
            r
            for r in rows
            if r["model"] == "gemma"
            and r["probe"] is None
            and (r["method"], r["base"], r["remat"]) == (method, base, True)
        ),
        key=lambda r: r["layers"],
    )
    probes = {
        r["probe"]: r
        for r in rows
        if r["model"] == "gemma"
        and r["probe"]
        and (r["method"], r["base"], r["remat"]) == (method, base, True)
    }
    two = next((r for r in main if r["layers"] == 2), None)
    needed = ("vocab_half", "vocab_eighth", "vocab_eighth_heads_x2")
    if len(main) < 2 or two is None or not all(p in probes for p in needed):
        return None
    depth = np.array([r["layers"] for r in main], float)
    args = np.array([r["argument_mb"] for r in main]) * MB
    temp = np.array([r["temp_mb"] for r in main]) * MB
    args_slope, args_zero = np.polyfit(depth, args, 1)
    temp_slope, _ = np.polyfit(depth, temp, 1)
    shape = SHAPES["Gemma ~1B (measured shape)"]
    v0, d0, _, h0, _, _, f0, _ = shape
    per_layer = trainable(method, *shape) / shape[2] if method == "lora" else 0
    fixed = trainable(method, *shape) if method == "adalink" else 0
    half, eighth = probes["vocab_half"], probes["vocab_eighth"]
    emb = (two["argument_mb"] - half["argument_mb"]) * MB / ((v0 / 2) * d0)
    t_vocab = (two["temp_mb"] - half["temp_mb"]) * MB / (v0 / 2)
    heads = probes["vocab_eighth_heads_x2"]
    per_head = (heads["temp_mb"] - eighth["temp_mb"]) * MB / (2 * h0)
    ffn = probes.get("vocab_eighth_ffn_x2")
    per_ffn = (ffn["temp_mb"] - eighth["temp_mb"]) * MB / (2 * f0) if ffn else 0
    per_width = (temp_slope - per_head * h0 - per_ffn * f0) / d0
    rest = eighth["temp_mb"] * MB - 2 * temp_slope - t_vocab * v0 / 8
    return {
        "depths": [int(x) for x in depth],
        "args_per_layer_mb": args_slope / MB,
        "frozen_bytes_per_block_param": (args_slope - 12 * per_layer)
        / layer_params(*shape),
        "bytes_per_embedding_param": emb,
        "args_rest_mb": (args_zero - emb * v0 * d0 - 12 * fixed) / MB,
        "temp_per_layer_mb": temp_slope / MB,
        "layer_mb_per_query_head": per_head / MB,
        "layer_kb_per_ffn_unit": per_ffn / 1024,
        "layer_kb_per_width_unit": per_width / 1024,
        "temp_per_vocab_entry_kb": t_vocab / 1024,
        "temp_rest_mb": rest / MB,
        "out_mb": two["output_mb"] - two["alias_mb"],
    }


def extrapolate(coef, method, shape, one_block=False):
    vocab, d, n, h, k, hd, f, tied = shape
    d0 = GEMMA_1B["hidden_dim"]
    args = (
        coef["bytes_per_embedding_param"] * vocab * d * (1 if tied else 2)
        + coef["frozen_bytes_per_block_param"] * layer_params(*shape) * n
        + 12 * trainable(method, *shape)
        + coef["args_rest_mb"] * MB * d / d0
    )
    layer = (
        coef["layer_mb_per_query_head"] * MB * h
        + coef["layer_kb_per_ffn_unit"] * 1024 * f
        + coef["layer_kb_per_width_unit"] * 1024 * d
    )
    if one_block:
        # jax saves only each block's input under remat (f32 [1, 2048, d],
        # checked with jax.ad_checkpoint.print_saved_residuals); a schedule
        # that recomputes one block at a time holds those plus one block.
        layer_total = n * LENGTH * d * 4 + layer
    else:
        layer_total = n * layer
    temp = (
        layer_total
        + coef["temp_per_vocab_entry_kb"] * 1024 * vocab
        + coef["temp_rest_mb"] * MB * d / d0
    )
    return (args + temp) / 2**30 + coef["out_mb"] / 1024, args / 2**30


def extrapolation(rows):
    out = []
    for method, base in EXTRAPOLATED:
        coef = coefficients(rows, method, base)
        if coef is None:
            continue
        for name, shape in SHAPES.items():
            step, args = extrapolate(coef, method, shape)
            one_block, _ = extrapolate(coef, method, shape, one_block=True)
            out.append(
                {
                    "method": method,
                    "base": base,
                    "shape": name,
                    "step_gib": step,
                    "step_one_block_gib": one_block,
                    "weights_gib": args,
                    # Full fine-tuning holds at least f32 weights, gradients
                    # and two Adam moments: 16 bytes a parameter.
                    "full_ft_floor_gib": 16 * params(shape) / 2**30,
                    "fits_gib": [g for g in DEVICES_GIB if step <= g],
                    "fits_one_block_gib": [
                        g for g in DEVICES_GIB if one_block <= g
                    ],
                    "coefficients": coef,
                }
            )
    return out


def extrapolation_md(rows, extra):
    if not extra:
        return "No extrapolation: the Gemma rows or probes are missing.\n"
    lines = [
        "Shapes used (vocabulary, width, layers, query heads, kv heads, "
        "head dim, gated FFN width, tied embeddings):\n",
    ]
    for name, shape in SHAPES.items():
        lines.append(
            f"- {name}: {shape}, {params(shape) / 1e9:.2f}B parameters"
        )
    lines += [
        "",
        "Coefficients from the fits (remat on, batch 1 x length 2048):",
        "",
        "| setting | depths | frozen B/block param | B/embedding param "
        "| temp MB/layer | of which MB/query head | KB/FFN unit "
        "| KB/width unit | temp KB/vocab entry | temp rest MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for e in extra:
        c = e["coefficients"]
        if e["method"] in seen:
            continue
        seen.add(e["method"])
        lines.append(
            f"| {e['method']} {e['base']}+remat | {c['depths']} "
            f"| {c['frozen_bytes_per_block_param']:.3f} "
            f"| {c['bytes_per_embedding_param']:.3f} "
            f"| {c['temp_per_layer_mb']:.1f} "
            f"| {c['layer_mb_per_query_head']:.1f} "
            f"| {c['layer_kb_per_ffn_unit']:.2f} "
            f"| {c['layer_kb_per_width_unit']:.2f} "
            f"| {c['temp_per_vocab_entry_kb']:.2f} | {c['temp_rest_mb']:.0f} |"
        )
    lines += [
        "",
        "**Extrapolated** step memory (not measured), batch 1 x length "
        "2048, f32 activations, materialised attention; x full FT floor: "
        "against 16 bytes a parameter (f32 weights, gradients, Adam "
        "moments), a lower bound of full fine-tuning's step. As compiled: "
        "every layer holds what it held in the measured CPU compiles; one "
        "block live: each layer keeps only its input (what jax saves under "
        "remat) and one block's buffers are live, what a schedule that "
        "recomputes one block at a time would hold (a what-if, not "
        "measured):",
        "",
        "| shape | setting | weights+state GiB | step GiB as compiled "
        "| x full FT floor | fits (GiB) | step GiB, one block live "
        "| fits, one block live |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in extra:
        fits = ", ".join(map(str, e["fits_gib"])) or "none"
        fits_ns = ", ".join(map(str, e["fits_one_block_gib"])) or "none"
        name = "QLoRA (Keras LoRA q,v)" if e["method"] == "lora" else "AdaLink"
        lines.append(
            f"| {e['shape']} | {name} {e['base']}+remat "
            f"| {e['weights_gib']:.1f} | {e['step_gib']:.1f} "
            f"| {e['step_gib'] / e['full_ft_floor_gib']:.3f} | {fits} "
            f"| {e['step_one_block_gib']:.1f} | {fits_ns} |"
        )
    measured = [
        r
        for r in rows
        if r["model"] == "gemma"
        and r["probe"] is None
        and r["remat"]
        and (r["method"], r["base"]) in EXTRAPOLATED
        and any(e["method"] == r["method"] for e in extra)
    ]
    if measured:
        lines += ["", "The sum model against the measured Gemma ~1B rows:", ""]
        for r in sorted(measured, key=lambda r: (r["method"], r["layers"])):
            coef = next(
                e["coefficients"] for e in extra if e["method"] == r["method"]
            )
            shape = list(SHAPES["Gemma ~1B (measured shape)"])
            shape[2] = r["layers"]
            step, _ = extrapolate(coef, r["method"], tuple(shape))
            lines.append(
                f"- {r['method']} {r['layers']} layers: measured "
                f"{r['step_mb'] / 1024:.2f} GiB, model {step:.2f} GiB"
            )
    return "\n".join(lines) + "\n"
