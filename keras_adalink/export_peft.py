"""Export of an AdaLink to a HuggingFace PEFT LoRA adapter folder.

A linear AdaLink right after the token lookup is exactly a LoRA on the
input embedding: for token id `i` the adapter adds
`scale * (E[i] @ W_down) @ W_up`, which PEFT's embedding LoRA computes as
`(alpha / r) * A^T[i] @ B^T`. With `A = (E @ W_down)^T` (`[r, vocab]`),
`B = scale * W_up^T` (`[d, r]`) and `lora_alpha = r` (so PEFT's scaling
`alpha / r` is 1; `use_rslora` is off), the HF twin of the KerasHub
backbone computes what the adapted Keras model computes.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import keras_hub
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from keras_adalink.adapter_file import adapter_variables
from keras_adalink.fold import check_foldable
from keras_adalink.fold import module_weights
from keras_adalink.graph import hf_converter_exists
from keras_adalink.layers import TaskRouter
from keras_adalink.models import find_adalink_backbone
from keras_adalink.quantization import quantization_modes
from keras_adalink.version import __version__


@dataclasses.dataclass(frozen=True)
class HFTwin:
    """The HF transformers model a KerasHub backbone's checkpoint maps to.

    Args:
        module: str. Path of the input token embedding in `hf_class`.
        hf_class: str. The transformers auto class the folder targets.
        task_type: str. PEFT's `task_type` for that class.
        why: str. Why the export is exact for this family, one line.
        also: tuple of str. Further modules of `hf_class` that look the
            same table up and get the same LoRA (BART's decoder). Defaults
            to `()`.
    """

    module: str
    hf_class: str
    task_type: str
    why: str
    also: tuple[str, ...] = ()

    @property
    def modules(self):
        return (self.module, *self.also)


def _decoder(why):
    return HFTwin(
        "model.embed_tokens", "AutoModelForCausalLM", "CAUSAL_LM", why
    )


def _encoder(why):
    return HFTwin(
        "embeddings.word_embeddings", "AutoModel", "FEATURE_EXTRACTION", why
    )


_PLAIN_DECODER = (
    "embed_tokens is the plain lookup KerasHub's token_embedding converts "
    "from; the blocks read it directly (rotary positions), and the LM head "
    "uses the original table in both (PEFT adds to the lookup only)"
)
_MOE = (
    _PLAIN_DECODER + "; the experts' routers read the first block's normed "
    "hidden states, which already hold the adapter, in both"
)
_SCALED = (
    "HF multiplies by sqrt(d) inside embed_tokens (embed_scale), KerasHub "
    "right after token_embedding, with the adapter in between; PEFT 0.21 "
    "multiplies the LoRA output by embed_scale too: both give "
    "sqrt(d) * (E + dE)"
)

# KerasHub backbone class (subclasses follow, e.g. Llama3Backbone) -> its
# HF twin. Only families whose equality with PEFT is tested in
# tests/test_export_peft.py; multimodal ones (Gemma3, PaliGemma: image tokens
# join the text after the lookup) are left out, and so are families
# KerasHub cannot convert from an HF checkpoint (OPT, GPT-NeoX, Falcon,
# Bloom, Phi-3, ...: no HF twin to check against) and those in `NO_TWIN`.
TWINS = {
    "BertBackbone": _encoder(
        "word_embeddings is the plain lookup; positions, segments and the "
        "LayerNorm follow it in both"
    ),
    "RobertaBackbone": _encoder(
        "word_embeddings is the plain lookup; positions (HF's start at "
        "padding_idx + 1, rows KerasHub's converter drops) and the LayerNorm "
        "follow it in both; RoBERTa checkpoints' one token_type row is zero "
        "(KerasHub has none)"
    ),
    "XLMRobertaBackbone": _encoder(
        "word_embeddings is the plain lookup; positions (offset as in "
        "RoBERTa; KerasHub's converter folds token_type row 0 into them) "
        "and the LayerNorm follow it in both"
    ),
    "DistilBertBackbone": _encoder(
        "word_embeddings is the plain lookup; positions and the LayerNorm "
        "follow it in both (no segments)"
    ),
    "AlbertBackbone": _encoder(
        "word_embeddings is the plain lookup at embedding_size (the LoRA's "
        "B is [embedding_size, r]); positions, segments, the LayerNorm and "
        "the projection to hidden_size follow it in both"
    ),
    "GPT2Backbone": HFTwin(
        "transformer.wte",
        "AutoModelForCausalLM",
        "CAUSAL_LM",
        "wte is the plain lookup; positions (wpe) are added after it in "
        "both, and the tied LM head uses the original table in both",
    ),
    "LlamaBackbone": _decoder(_PLAIN_DECODER),
    "MistralBackbone": _decoder(
        _PLAIN_DECODER + "; KerasHub's converter rounds the checkpoint "
        "through float16, so the base models differ by that rounding"
    ),
    "QwenBackbone": _decoder(_PLAIN_DECODER),
    "Qwen3Backbone": _decoder(_PLAIN_DECODER),
    "SmolLM3Backbone": _decoder(
        _PLAIN_DECODER + " (in its rotary layers; its NoPE layers read it "
        "as is)"
    ),
    "MixtralBackbone": _decoder(_MOE),
    "QwenMoeBackbone": _decoder(_MOE),
    "Qwen3MoeBackbone": _decoder(_MOE),
    "GemmaBackbone": _decoder(_SCALED),
    "Gemma4Backbone": _decoder(
        _SCALED + "; the per-layer inputs project that scaled sum in both "
        "(their own per-layer table, embed_tokens_per_layer, is not "
        "adapted in either)"
    ),
    "Qwen3_5Backbone": _decoder(
        _PLAIN_DECODER + "; text-only (with a vision encoder, adapt() "
        "makes a ModalityRouter, which a PEFT adapter cannot hold); "
        "HF's AutoModelForCausalLM reads the checkpoint's "
        "model.language_model weights into model"
    ),
    "Qwen3_5MoeBackbone": _decoder(_MOE + "; text-only, as Qwen3.5"),
    "BartBackbone": HFTwin(
        "model.encoder.embed_tokens",
        "AutoModelForSeq2SeqLM",
        "SEQ_2_SEQ_LM",
        "one table for both stacks (HF's shared, looked up by the "
        "encoder's and the decoder's embed_tokens; KerasHub's "
        "token_embedding, adapted at both lookups): both modules get the "
        "LoRA; positions and the LayerNorm follow the lookup, and the tied "
        "LM head uses the original table, in both (BART checkpoints leave "
        "scale_embedding off)",
        also=("model.decoder.embed_tokens",),
    ),
}

# Families KerasHub converts from HF checkpoints, but whose HF model
# computes something else than the Keras one even unadapted, or which
# have no HF twin: the reason export_peft refuses them, one line each.
NO_TWIN = {
    "ESMBackbone": (
        "HF's EsmEmbeddings multiplies the looked-up embeddings by "
        "0.88 / (1 - the share of mask tokens) when the config sets "
        "token_dropout, as the Hub's ESM-2 checkpoints do, and KerasHub's "
        "ESMBackbone does not: the base models already differ (by ~8e-2 "
        "in hidden states on a tiny model)"
    ),
    "GptOssBackbone": (
        "KerasHub's GptOssBackbone ignores the checkpoint's layer_types: it "
        "puts the sliding window on the odd layers where HF (and the Hub "
        "configs) put it on the even ones, and its window spans "
        "sliding_window + 1 keys where HF's spans sliding_window; past "
        "sliding_window tokens (128 in the Hub checkpoints) the base models "
        "differ (by 2 to 6 in logits on a tiny model)"
    ),
    "T5GemmaBackbone": (
        "KerasHub's T5Gemma encoder ignores sliding_window, where HF's "
        "sliding layers let a token see only those at most sliding_window "
        "away, and its decoder's window spans one key more than HF's: past "
        "sliding_window tokens (4096 in the Hub checkpoints) the base "
        "models differ (by ~1 in encoder outputs on a tiny model with a "
        "window of 4)"
    ),
    "T5Gemma2Backbone": (
        "transformers' T5Gemma2 always carries a vision tower, which "
        "KerasHub's converter turns into a vision encoder, so adapt() makes "
        "an image and a text module (a ModalityRouter, which a PEFT adapter "
        "cannot hold); a text-only T5Gemma2Backbone has no HF twin (HF's "
        "embedding also replaces the end-of-image token's row with a "
        "learned vector that the text-only backbone lacks)"
    ),
}


def _lookup(table, backbone_class):
    for klass in backbone_class.__mro__:
        if klass.__name__ in table:
            return table[klass.__name__]
    return None


def hf_twin(backbone_class):
    """The `HFTwin` of a KerasHub backbone class, or `None`."""
    return _lookup(TWINS, backbone_class)


def no_twin_reason(backbone_class):
    """Why a converted family has no exact HF twin (`NO_TWIN`), or `None`."""
    return _lookup(NO_TWIN, backbone_class)


def _refuse(reason):
    raise ValueError(f"Cannot export to PEFT (nothing written): {reason}")


def _check(model, adalink_backbone):
    base = adalink_backbone.backbone
    name = type(base).__name__
    twin = hf_twin(type(base))
    if twin is None:
        converter = hf_converter_exists(type(base))
        reason = no_twin_reason(type(base))
        if reason:
            why = (
                "KerasHub converts HF checkpoints to it, but the HF model "
                f"is no exact twin: {reason}"
            )
        elif converter is None:
            why = "no HF twin of it has been checked"
        elif converter:
            why = (
                "KerasHub converts HF checkpoints to it, but PEFT's "
                "equality with it is not tested"
            )
        else:
            why = (
                f"KerasHub {keras_hub.__version__} has no converter from an "
                "HF transformers checkpoint to it, so there is no HF twin "
                "to target or check"
            )
        _refuse(
            f"{name} is not in the table of families with a known HF "
            f"embedding module: {why} (the table: "
            f"{', '.join(sorted(TWINS))}; see keras_adalink/export_peft.py)."
        )
    try:
        check_foldable(adalink_backbone)
        if not isinstance(adalink_backbone.adapter, TaskRouter):
            module_weights(adalink_backbone.adapter, None)
    except ValueError as error:
        _refuse(f"a PEFT embedding LoRA is a fold of the table. {error}")
    modes = quantization_modes(base)
    if modes:
        _refuse(
            f"the backbone is quantized ({modes}); the adapter was trained "
            "on other embeddings than the float HF checkpoint's. Export it "
            "from the float backbone."
        )
    own = {id(v) for v in adalink_backbone.adapter.weights}
    head = [p for p, v in adapter_variables(model).items() if id(v) not in own]
    if head:
        _refuse(
            f"the model trains variables outside the adapter ({head[:3]}), "
            "a head PEFT's embedding LoRA cannot carry. Export the adapted "
            "backbone (`model.backbone`) and serve the head yourself."
        )
    return twin


def _check_base(base_model, table, module):
    """Where `base_model` is a local HF folder, its input embedding must be
    the table the adapter was trained on: a LoRA for another checkpoint
    would load in PEFT and silently compute something else."""
    if base_model is None or not os.path.isdir(str(base_model)):
        return
    files = [
        os.path.join(base_model, f)
        for f in sorted(os.listdir(base_model))
        if f.endswith(".safetensors")
    ]
    # HF names it with or without its class's prefix (`bert.`, `model.`).
    tail = module.split(".", 1)[1] if module.startswith("model.") else module
    for file in files:
        with safe_open(file, "np") as f:
            for key in f.keys():
                if key.endswith(f"{tail}.weight"):
                    theirs = f.get_tensor(key).astype("float32")
                    # Converters round (Mistral's through float16): equal
                    # up to that, another checkpoint is far off.
                    if theirs.shape != table.shape or not np.allclose(
                        theirs, table, rtol=1e-2, atol=1e-3
                    ):
                        _refuse(
                            f"base_model '{base_model}' is another "
                            f"checkpoint: its {key} differs from the table "
                            "the adapter was trained on."
                        )
                    return


def _folder_names(adapter):
    """`[(slot, folder name)]`; free slots of a live model are left out."""
    if not isinstance(adapter, TaskRouter):
        return [(None, None)]
    names = adapter.task_names or [
        f"task_{i}" for i in range(adapter.num_tasks)
    ]
    slots = [(i, name) for i, name in enumerate(names) if name is not None]
    for _, name in slots:
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            _refuse(f"task name {name!r} is not a folder name.")
    return slots


def _lora_tensors(table, down, up, scale, modules):
    down = keras.ops.convert_to_numpy(down).astype("float32")
    up = keras.ops.convert_to_numpy(up).astype("float32")
    lora_a = np.ascontiguousarray((table @ down).T)
    lora_b = np.ascontiguousarray(scale * up.T)
    tensors = {}
    for module in modules:  # The same LoRA at each lookup of the table.
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_embedding_A"] = lora_a
        tensors[f"{prefix}.lora_embedding_B"] = lora_b
    return tensors


def _config(twin, rank, base_model):
    return {
        "peft_type": "LORA",
        "task_type": twin.task_type,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "use_rslora": False,
        "use_dora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": [twin.module.rsplit(".", 1)[-1]],
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _write_folder(folder, config, tensors, record):
    os.makedirs(folder)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    metadata = {"format": "pt", "keras_adalink": json.dumps(record)}
    save_file(
        tensors, os.path.join(folder, "adapter_model.safetensors"), metadata
    )


def export_peft(model, path, base_model: str | None = None) -> list[str]:
    """Writes `model`'s adapter as a HuggingFace PEFT LoRA adapter folder.

    The folder (`adapter_config.json`, `adapter_model.safetensors`) holds
    an embedding LoRA equal to the adapter (see the module docstring), for
    the HF checkpoint the KerasHub backbone was converted from: load it
    with `peft.PeftModel.from_pretrained(hf_model, path)`. Decoders target
    `AutoModelForCausalLM` (tensor names under `model.embed_tokens`, GPT-2
    `transformer.wte`), encoders `AutoModel` (`embeddings.word_embeddings`),
    BART `AutoModelForSeq2SeqLM` (the encoder's and the decoder's
    `embed_tokens`, which look its one table up).
    A `TaskRouter` writes one sub-folder per task, named by its
    `task_names` (else `task_0`, `task_1`, ...), loadable side by side and
    mixed per row with PEFT's `adapter_names=`.

    Everything is checked before anything is written, and the folder
    appears complete or not at all: a nonlinear adapter, one not right
    after the token lookup (`insertion="block_input"`), a `ModalityRouter`,
    a quantized backbone, a trained head, a family outside `TWINS` (those
    in `NO_TWIN` with the reason their HF model differs), or a
    local `base_model` folder whose input embedding is not the adapted
    model's table (another checkpoint) raise `ValueError` with the reason.

    Args:
        model: an adapted backbone or task (from `keras_adalink.adapt`).
        path: str or path-like. The folder to write (replaced if present).
        base_model: str. `base_model_name_or_path` in the config: the HF
            model id or folder of the base checkpoint. Defaults to `None`.

    Returns:
        The folders written: `[path]`, or one per task.

    Example:
    >>> lm = keras_adalink.adapt(gemma_lm, rank=2)
    >>> keras_adalink.export_peft(lm, "gemma_peft", base_model="./gemma")
    ['...gemma_peft']
    >>> sorted(os.listdir("gemma_peft"))
    ['adapter_config.json', 'adapter_model.safetensors']

    Then, with `transformers` and `peft`:
    `peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
    "./gemma"), "gemma_peft")`.
    """
    path = os.path.abspath(os.fspath(path))
    adalink_backbone = find_adalink_backbone(model)
    twin = _check(model, adalink_backbone)
    if os.path.exists(path) and not os.path.isdir(path):
        _refuse(f"'{path}' exists and is not a folder.")
    adapter = adalink_backbone.adapter
    table = keras.ops.convert_to_numpy(
        adalink_backbone.backbone.token_embedding.embeddings
    ).astype("float32")
    _check_base(base_model, table, twin.module)
    names = _folder_names(adapter)
    config = _config(twin, adapter.rank, base_model)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".peft-partial-")
    root = os.path.join(tmp, "out")
    try:
        for index, name in names:
            down, up = module_weights(adapter, index)
            tensors = _lora_tensors(
                table, down, up, adapter.scale, twin.modules
            )
            record = {
                "keras_adalink_version": __version__,
                "backbone": type(adalink_backbone.backbone).__name__,
                "hf_class": twin.hf_class,
                "task": name,
            }
            folder = os.path.join(root, name) if name else root
            _write_folder(folder, config, tensors, record)
        if os.path.exists(path):  # Replaced only once the new one is whole.
            os.replace(path, os.path.join(tmp, "old"))
        os.replace(root, path)
    finally:
        shutil.rmtree(tmp)
    if names[0][1] is None:
        return [path]
    return [os.path.join(path, name) for _, name in names]
