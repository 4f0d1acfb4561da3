"""export_peft(): HF transformers + PEFT compute what the adapted model does.

Against the real clients (transformers, peft: the `peft` extra) on CPU:
the real MiniLM, and tiny random HF decoders and encoders saved with
`save_pretrained` and read by KerasHub's own converters. Torch backend
only (the HF side is torch; the export itself is numpy).
"""

import importlib.util
import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.families import build

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "torch", reason="the HF side is torch"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("peft") is None,
        reason="needs the `peft` extra (transformers, peft)",
    ),
]

ATOL = 1e-4
NEW_TOKENS = 4
_CAUSAL_LM = {
    "gemma": keras_hub.models.GemmaCausalLM,
    "gemma4": keras_hub.models.Gemma4CausalLM,
    "gpt2": keras_hub.models.GPT2CausalLM,
    "llama": keras_hub.models.LlamaCausalLM,
    "mistral": keras_hub.models.MistralCausalLM,
    "mixtral": keras_hub.models.MixtralCausalLM,
    "qwen2": keras_hub.models.QwenCausalLM,
    "qwen2_moe": keras_hub.models.QwenMoeCausalLM,
    "qwen3": keras_hub.models.Qwen3CausalLM,
    "qwen3_5": keras_hub.models.Qwen3_5CausalLM,
    "qwen3_5_moe": keras_hub.models.Qwen3_5MoeCausalLM,
    "qwen3_moe": keras_hub.models.Qwen3MoeCausalLM,
    "smollm3": keras_hub.models.SmolLM3CausalLM,
}
_EXPERTS = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
_SHARED_EXPERT = dict(**_EXPERTS, shared_expert_intermediate_size=32)
_MOE = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": _SHARED_EXPERT,
    "qwen3_moe": _EXPERTS,
    "qwen3_5_moe": _SHARED_EXPERT,
}
# Decoders whose HF config class and model class are not `{name}Config`
# and `{name}ForCausalLM`: text-only classes of multimodal families.
_TEXT_CONFIG = {"gemma4", "qwen3_5", "qwen3_5_moe"}


def _hf_decoder(kind, folder):
    """A tiny random HF causal LM of `kind`, saved in `folder`."""
    import torch
    import transformers

    torch.manual_seed(0)
    # Wider than the default 0.02, so greedy picks are clear-cut.
    size = dict(vocab_size=96, initializer_range=0.2)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=32, **size
        )
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
        return str(folder)
    names = {
        "gemma": "Gemma",
        "gemma4": "Gemma4",
        "llama": "Llama",
        "mistral": "Mistral",
        "mixtral": "Mixtral",
        "qwen2": "Qwen2",
        "qwen2_moe": "Qwen2Moe",
        "qwen3": "Qwen3",
        "qwen3_5": "Qwen3_5",
        "qwen3_5_moe": "Qwen3_5Moe",
        "qwen3_moe": "Qwen3Moe",
        "smollm3": "SmolLM3",
    }
    extra = dict(_MOE.get(kind, {}))
    if kind == "gemma4":
        # Its global layers' head_dim (512) and per-layer input table
        # (262144 x 256 per layer) at the tiny model's sizes; a window of 4,
        # so prompts and generation reach past it.
        extra.update(
            global_head_dim=8,
            hidden_size_per_layer_input=8,
            vocab_size_per_layer_input=96,
            sliding_window=4,
        )
    if kind.startswith("qwen3_5"):
        # Full attention only: KerasHub's GatedDeltaNet layers take over
        # ten seconds here (one, checked once by hand, matched HF to 3e-6);
        # the LoRA sits before every block kind alike.
        extra.update(layer_types=["full_attention"] * 2)
    if kind == "smollm3":
        # Its defaults name Llama-3 token ids outside a 96-token vocabulary;
        # one of its two layers NoPE (no rotary), as every 4th in SmolLM3.
        extra.update(
            pad_token_id=0,
            bos_token_id=None,
            eos_token_id=None,
            no_rope_layer_interval=2,
        )
    text = "Text" if kind in _TEXT_CONFIG else ""
    config = getattr(transformers, f"{names[kind]}{text}Config")(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        **size,
        **extra,
    )
    model_class = getattr(transformers, f"{names[kind]}ForCausalLM")
    model_class(config).eval().save_pretrained(folder)
    if kind == "qwen3_moe":
        # transformers 5 saves the expert count as `num_local_experts`;
        # Hub Qwen3-MoE checkpoints (and KerasHub 0.32's converter) name it
        # `num_experts`: write it as the Hub's do.
        _rewrite(folder, lambda c: {**c, "num_experts": c["num_local_experts"]})
    if kind.startswith("qwen3_5"):
        _as_hub_qwen3_5(folder, kind)
    return str(folder)


def _rewrite(folder, config=None, tensors=None):
    """Rewrites `folder`'s config.json with `config(dict)` and its
    model.safetensors with `tensors(dict)`, each returning the new dict."""
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    if config is not None:
        path = os.path.join(folder, "config.json")
        with open(path) as f:
            new = config(json.load(f))
        with open(path, "w") as f:
            json.dump(new, f)
    if tensors is not None:
        path = os.path.join(folder, "model.safetensors")
        save_file(tensors(load_file(path)), path, {"format": "pt"})


def _as_hub_qwen3_5(folder, kind):
    """As the Hub's Qwen3.5 checkpoints, which KerasHub 0.32's converters
    read (without their vision part): the text config nested under
    `text_config`, weights under `model.language_model`."""

    def nest(config):
        return {
            "model_type": kind,
            "architectures": config["architectures"],
            "tie_word_embeddings": config["tie_word_embeddings"],
            "text_config": config,
        }

    def rename(tensors):
        return {
            k.replace("model.", "model.language_model.", 1): v
            for k, v in tensors.items()
        }

    _rewrite(folder, nest, rename)


def _hf_encoder(kind, folder):
    """A tiny random HF encoder of `kind`, saved in `folder` with its
    pretraining head (KerasHub's converters read the `roberta.`/`albert.`
    prefixed names those checkpoints carry)."""
    import torch
    import transformers

    torch.manual_seed(0)
    size = dict(vocab_size=96, initializer_range=0.2)
    layers = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=40,
    )
    if kind == "distilbert":
        config = transformers.DistilBertConfig(
            dim=32,
            hidden_dim=64,
            n_layers=2,
            n_heads=2,
            max_position_embeddings=40,
            **size,
        )
        model = transformers.DistilBertForMaskedLM(config)
    elif kind == "albert":
        # embedding_size 16 < hidden_size 32: the adapter sits at 16.
        config = transformers.AlbertConfig(embedding_size=16, **layers, **size)
        model = transformers.AlbertForPreTraining(config)
    else:
        # RoBERTa's own epsilon (its Hub configs say 1e-5; the config
        # class defaults to BERT's 1e-12), which KerasHub hard-codes.
        name = {"roberta": "Roberta", "xlm_roberta": "XLMRoberta"}[kind]
        config = getattr(transformers, f"{name}Config")(
            layer_norm_eps=1e-5, **layers, **size
        )
        model = getattr(transformers, f"{name}ForMaskedLM")(config)
        if kind == "roberta":
            # As in every RoBERTa checkpoint (fairseq has no segments; HF's
            # conversion zeroed the row), which KerasHub's converter drops.
            with torch.no_grad():
                model.roberta.embeddings.token_type_embeddings.weight.zero_()
    model.eval().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    """`{kind: HF checkpoint folder}`, each built once."""
    root = tmp_path_factory.mktemp("hf")
    return {kind: _hf_decoder(kind, root / kind) for kind in _CAUSAL_LM}


_ENCODERS = ("albert", "distilbert", "roberta", "xlm_roberta")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """`{kind: HF checkpoint folder}`, each built once."""
    root = tmp_path_factory.mktemp("hf_encoders")
    return {kind: _hf_encoder(kind, root / kind) for kind in _ENCODERS}


_SEQ2SEQ_LM = {"bart": keras_hub.models.BartSeq2SeqLM}


def _hf_bart(folder):
    """A tiny random HF BART, saved in `folder`."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BartConfig(
        vocab_size=96,
        init_std=0.2,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=40,
    )
    transformers.BartForConditionalGeneration(config).save_pretrained(folder)
    # Hub BART configs carry `num_hidden_layers`, which KerasHub 0.32's
    # converter reads; transformers 5 no longer writes it.
    _rewrite(folder, lambda c: {**c, "num_hidden_layers": 2})
    return str(folder)


@pytest.fixture(scope="module")
def seq2seqs(tmp_path_factory):
    """`{kind: HF checkpoint folder}`, each built once."""
    root = tmp_path_factory.mktemp("hf_seq2seq")
    return {"bart": _hf_bart(root / "bart")}


def _keras_lm(kind, folder, **adapt_kwargs):
    """`(lm, adapted)`: KerasHub's CausalLM (or Seq2SeqLM) of the HF
    checkpoint, and it adapted with a random adapter."""
    lm = {**_CAUSAL_LM, **_SEQ2SEQ_LM}[kind](
        backbone=keras_hub.models.Backbone.from_preset(folder),
        preprocessor=None,
    )
    adapted = keras_adalink.adapt(lm, rank=3, dropout=0.0, **adapt_kwargs)
    randomize_adapter(adapted, scale=0.4)
    adapted.compile(sampler="greedy")  # Llama's and Qwen's default: top-k
    return lm, adapted


def _peft_model(model, folders):
    """`model` (HF) with the exported `folders` loaded, each its own name."""
    import peft
    from safetensors import safe_open

    first, *rest = folders
    name = os.path.basename
    model = peft.PeftModel.from_pretrained(
        model, first, adapter_name=name(first)
    )
    for folder in rest:
        model.load_adapter(folder, adapter_name=name(folder))
    # Each tensor written is one PEFT reads back (none left at its init).
    for folder in folders:
        path = os.path.join(folder, "adapter_model.safetensors")
        with safe_open(path, "np") as f:
            written = {k: f.get_tensor(k) for k in f.keys()}
        loaded = peft.get_peft_model_state_dict(
            model, adapter_name=name(folder), save_embedding_layers=False
        )
        assert set(loaded) == set(written)
        for key, value in written.items():
            np.testing.assert_array_equal(loaded[key].numpy(), value)
    return model.eval()


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _prompts(vocab, batch=2, length=5):
    ids = np.random.default_rng(3).integers(1, vocab, size=(batch, length))
    return ids.astype("int32")


def _lm_inputs(lm, ids):
    """A causal LM's inputs for `ids`, unpadded (Gemma4 reads positions)."""
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    if "position_ids" in lm.backbone.input:
        x["position_ids"] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    return x


def _logits(hf, ids, **kwargs):
    import torch

    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids, dtype=torch.long), **kwargs)
    return out.logits.numpy()


def test_minilm_hidden_states_equal_adapted_backbone(tmp_path):
    import torch
    import transformers

    from keras_adalink.datasets import minilm_path

    path = str(minilm_path())
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    adapted = keras_adalink.adapt(backbone, rank=4, dropout=0.0, scale=0.7)
    randomize_adapter(adapted, scale=0.3)
    folders = keras_adalink.export_peft(adapted, tmp_path / "a", path)
    with open(os.path.join(folders[0], "adapter_config.json")) as f:
        config = json.load(f)
    assert config["base_model_name_or_path"] == path
    assert config["target_modules"] == ["word_embeddings"]

    ids = np.array(
        [[101, 2023, 3185, 2001, 2307, 102], [101, 7592, 102, 0, 0, 0]],
        "int32",
    )
    mask = ids != 0
    x = {"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": mask}
    want = _numpy(adapted(x)["sequence_output"])
    # KerasHub's BERT uses the tanh GELU where this checkpoint says the
    # exact one (a ~4e-3 gap between the base models themselves, whatever
    # the adapter): the HF twin gets KerasHub's GELU.
    hf = transformers.AutoModel.from_pretrained(
        path, hidden_act="gelu_pytorch_tanh"
    )
    model = _peft_model(hf, folders)
    torch_x = dict(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
    )
    with torch.no_grad():
        have = model(**torch_x).last_hidden_state.numpy()
        with model.disable_adapter():
            base = model(**torch_x).last_hidden_state.numpy()
    diff = np.abs(have - want)[mask].max()
    print(f"MiniLM: max abs diff {diff:.2e}")
    assert diff < ATOL
    # The adapter acts: without it HF's outputs are far from the adapted.
    assert np.abs(base - want)[mask].max() > 100 * ATOL


def _sequence(outputs):
    """The token outputs (BERT and ALBERT return a dict with the pooled)."""
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    return _numpy(outputs)


@pytest.mark.parametrize("kind", _ENCODERS)
def test_encoder_hidden_states_equal_adapted_backbone(kind, encoders, tmp_path):
    import torch
    import transformers

    folder = encoders[kind]
    backbone = keras_hub.models.Backbone.from_preset(folder)
    adapted = keras_adalink.adapt(backbone, rank=3, dropout=0.0, scale=0.8)
    randomize_adapter(adapted, scale=0.4)
    folders = keras_adalink.export_peft(adapted, tmp_path / kind, folder)
    hf = transformers.AutoModel.from_pretrained(folder)
    model = _peft_model(hf, folders)
    with open(os.path.join(folders[0], "adapter_config.json")) as f:
        assert json.load(f)["target_modules"] == ["word_embeddings"]
    name = os.path.basename(folders[0])
    lora_b = model.get_input_embeddings().lora_embedding_B[name]
    # ALBERT: the LoRA lives at embedding_size (16), not hidden_size (32).
    assert lora_b.shape == (16 if kind == "albert" else 32, 3)

    # The second row is padded at its end with the checkpoint's pad id.
    # RoBERTa's HF positions count non-pad tokens from padding_idx + 1, so
    # real tokens avoid ids 0-2 (pad 1 among them) and get positions
    # 2, 3, ... as KerasHub's 0, 1, ... do; padded places are not compared.
    pad = hf.config.pad_token_id
    ids = np.random.default_rng(3).integers(3, 96, size=(2, 6)).astype("int32")
    ids[1, 4:] = pad
    mask = ids != pad
    x = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in {i.name for i in backbone.inputs}:
        x["segment_ids"] = 0 * ids
    want = _sequence(adapted(x))
    base_keras = _sequence(backbone(x))
    torch_x = dict(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
    )
    with torch.no_grad():
        have = model(**torch_x).last_hidden_state.numpy()
        with model.disable_adapter():
            base = model(**torch_x).last_hidden_state.numpy()
    base_gap = np.abs(base - base_keras)[mask].max()
    diff = np.abs(have - want)[mask].max()
    print(f"{kind}: hidden max abs diff {diff:.2e} (base gap {base_gap:.2e})")
    assert diff < ATOL
    assert np.abs(base - want)[mask].max() > 100 * ATOL  # The adapter acts.


@pytest.mark.parametrize("kind", sorted(_CAUSAL_LM))
def test_decoder_logits_and_greedy_tokens_equal(kind, decoders, tmp_path):
    import torch
    import transformers

    lm, adapted = _keras_lm(kind, decoders[kind], scale=0.8)
    folders = keras_adalink.export_peft(adapted, tmp_path / kind)
    with open(os.path.join(folders[0], "adapter_config.json")) as f:
        assert json.load(f)["task_type"] == "CAUSAL_LM"
    hf = transformers.AutoModelForCausalLM.from_pretrained(decoders[kind])
    model = _peft_model(hf, folders)
    ids = _prompts(96)

    # The export itself: what PEFT's LoRA adds to the lookup is what the
    # adapter adds (times Gemma's sqrt(d), which HF applies inside the
    # lookup and KerasHub right after it, after the adapter).
    embedding = model.get_input_embeddings()
    scale = float(getattr(embedding.base_layer, "embed_scale", 1.0))
    with torch.no_grad():
        tokens = torch.tensor(ids).long()
        hf_delta = embedding(tokens) - embedding.base_layer(tokens)
    keras_delta = _numpy(adapted.backbone.token_embedding(ids)) - _numpy(
        lm.backbone.token_embedding(ids)
    )
    np.testing.assert_allclose(hf_delta.numpy(), scale * keras_delta, atol=1e-5)

    x = _lm_inputs(lm, ids)
    want = _numpy(adapted(x))
    have = _logits(model, ids)
    with model.disable_adapter():
        base = _logits(model, ids)
    # The base models' own gap (KerasHub's conversion vs HF's code, no
    # adapter on either side).
    base_gap = np.abs(base - _numpy(lm(x))).max()
    diff = np.abs(have - want).max()
    print(f"{kind}: logits max abs diff {diff:.2e} (base gap {base_gap:.2e})")
    assert np.abs(base - want).max() > 100 * ATOL  # The adapter acts.
    if base_gap >= ATOL:
        # KerasHub's Mistral converter rounds the checkpoint through
        # float16: the base models differ by ~5e-3 in logits, so the
        # adapted pair can only be as close as that.
        assert diff < 2 * base_gap
        pytest.skip(
            f"{kind}: base models differ by {base_gap:.1e} without the "
            "adapter; lookup exact, logits within that gap; generate() "
            "not compared"
        )
    assert diff < ATOL

    length = ids.shape[1] + NEW_TOKENS
    padded = np.zeros((len(ids), length), "int32")
    padded[:, : ids.shape[1]] = ids
    keras_tokens = _numpy(
        adapted.generate(
            {"token_ids": padded, "padding_mask": padded != 0},
            max_length=length,
            stop_token_ids=None,
        )["token_ids"]
    )
    hf_tokens = model.generate(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.ones(ids.shape, dtype=torch.long),
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
    ).numpy()
    np.testing.assert_array_equal(hf_tokens, keras_tokens)


@pytest.mark.parametrize("kind", sorted(_SEQ2SEQ_LM))
def test_seq2seq_logits_and_greedy_tokens_equal(kind, seq2seqs, tmp_path):
    """BART's one table is adapted at both lookups (encoder and decoder),
    and its LoRA goes on both HF modules that look it up."""
    import torch
    import transformers

    _, adapted = _keras_lm(kind, seq2seqs[kind], scale=0.8)
    folders = keras_adalink.export_peft(adapted, tmp_path / kind)
    with open(os.path.join(folders[0], "adapter_config.json")) as f:
        config = json.load(f)
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert config["target_modules"] == ["embed_tokens"]
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(seq2seqs[kind])
    model = _peft_model(hf, folders)
    wrapped = {
        name
        for name, module in model.named_modules()
        if hasattr(module, "lora_embedding_A")
    }
    assert wrapped == {
        f"base_model.model.model.{stack}.embed_tokens"
        for stack in ("encoder", "decoder")
    }

    pad = hf.config.pad_token_id
    rng = np.random.default_rng(3)
    encoder_ids = rng.integers(3, 96, size=(2, 6)).astype("int32")
    encoder_ids[1, 4:] = pad
    decoder_ids = rng.integers(3, 96, size=(2, 5)).astype("int32")
    decoder_ids[:, 0] = hf.config.decoder_start_token_id  # As BART's do.
    x = {
        "encoder_token_ids": encoder_ids,
        "encoder_padding_mask": encoder_ids != pad,
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": np.ones_like(decoder_ids, bool),
    }
    torch_x = dict(
        input_ids=torch.tensor(encoder_ids, dtype=torch.long),
        attention_mask=torch.tensor(encoder_ids != pad, dtype=torch.long),
    )

    def logits(**kwargs):
        ids = torch.tensor(decoder_ids, dtype=torch.long)
        with torch.no_grad():
            out = model(**torch_x, decoder_input_ids=ids, **kwargs)
        return out.logits.numpy()

    want = _numpy(adapted(x))
    have = logits()
    with model.disable_adapter():
        base = logits()
    diff = np.abs(have - want).max()
    print(f"{kind}: logits max abs diff {diff:.2e}")
    assert np.abs(base - want).max() > 100 * ATOL  # The adapter acts.
    assert diff < ATOL

    # Greedy continuation of the decoder's first 2 tokens.
    length = 2 + NEW_TOKENS
    prompt = np.zeros((2, length), "int32")
    prompt[:, :2] = decoder_ids[:, :2]
    keras_tokens = _numpy(
        adapted.generate(
            {
                **x,
                "decoder_token_ids": prompt,
                "decoder_padding_mask": prompt != 0,
            },
            stop_token_ids=None,
        )["decoder_token_ids"]
    )
    # Greedy, without BART's forced end token (KerasHub has none).
    hf.generation_config = transformers.GenerationConfig(
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        pad_token_id=pad,
        decoder_start_token_id=hf.config.decoder_start_token_id,
    )
    hf_tokens = model.generate(
        **torch_x,
        decoder_input_ids=torch.tensor(prompt[:, :2], dtype=torch.long),
    ).numpy()
    np.testing.assert_array_equal(hf_tokens, keras_tokens)


def test_task_router_mixed_batch(decoders, tmp_path):
    import transformers

    kind = "llama"
    _, adapted = _keras_lm(kind, decoders[kind], num_tasks=2)
    folders = keras_adalink.export_peft(adapted, tmp_path / "tasks")
    assert [os.path.basename(f) for f in folders] == ["task_0", "task_1"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(decoders[kind])
    model = _peft_model(hf, folders)

    ids = _prompts(96, batch=4)
    task_id = np.array([0, 1, 1, 0], "int32")
    want = _numpy(
        adapted(
            {
                "token_ids": ids,
                "padding_mask": np.ones_like(ids, bool),
                "task_id": task_id,
            }
        )
    )
    have = _logits(model, ids, adapter_names=[f"task_{t}" for t in task_id])
    diff = np.abs(have - want).max()
    print(f"TaskRouter mixed batch: logits max abs diff {diff:.2e}")
    assert diff < ATOL
    # The two tasks' rows differ, so routing is what is tested.
    assert np.abs(want[0] - _numpy(adapted(_one_task(ids, 1)))[0]).max() > 0.1


def _one_task(ids, task):
    return {
        "token_ids": ids,
        "padding_mask": np.ones_like(ids, bool),
        "task_id": np.full(len(ids), task, "int32"),
    }


def _tiny_llama():
    return keras_hub.models.LlamaBackbone(
        vocabulary_size=40,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
    )


REFUSALS = {
    "activation": (
        lambda: keras_adalink.adapt(_tiny_llama(), rank=2, activation="relu"),
        "activation",
    ),
    "block_input": (
        lambda: keras_adalink.adapt(
            _tiny_llama(), rank=2, insertion="block_input"
        ),
        "block_input",
    ),
    "modality_router": (
        lambda: keras_adalink.adapt(_tiny_llama(), rank=2, modalities=["text"]),
        "ModalityRouter",
    ),
    "family_without_hf_converter": (
        lambda: keras_adalink.adapt(BACKBONES["deberta_v3"](), rank=2),
        "DebertaV3Backbone is not in the table .* no converter from an HF",
    ),
    # A converted family with no exact HF twin (NO_TWIN; tests below check
    # the reasons for ESM and T5Gemma).
    "t5gemma2": (
        lambda: keras_adalink.adapt(build("T5Gemma2Backbone"), rank=2),
        "T5Gemma2Backbone .* no exact twin: .* always carries a vision tower",
    ),
    "no_adapter": (_tiny_llama, "holds no keras_adalink adapter"),
    "quantized": (
        lambda: keras_adalink.adapt(_tiny_llama(), rank=2, quantize="int8"),
        "quantized",
    ),
    "head": (
        lambda: keras_adalink.adapt(
            keras_hub.models.BertTextClassifier(
                BACKBONES["bert"](), num_classes=2, preprocessor=None
            ),
            rank=2,
        ),
        "outside the adapter",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_write_nothing(case, tmp_path):
    build, message = REFUSALS[case]
    model = build()
    with pytest.raises(ValueError, match=message):
        keras_adalink.export_peft(model, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_no_twin_rows_are_converted_families():
    """Each NO_TWIN row is a KerasHub class with an HF converter (whose
    refusal gives that row's reason) and no TWINS row."""
    from keras_adalink.export_peft import NO_TWIN
    from keras_adalink.export_peft import TWINS
    from keras_adalink.graph import hf_converter_exists

    for name in NO_TWIN:
        assert name not in TWINS
        assert hf_converter_exists(getattr(keras_hub.models, name))


def _hf_esm(folder):
    """A tiny random HF ESM-2, saved in `folder`, token_dropout on as in
    the Hub's ESM-2 checkpoints."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.EsmConfig(
        vocab_size=33,
        mask_token_id=32,
        pad_token_id=1,
        initializer_range=0.2,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=40,
        position_embedding_type="rotary",
        token_dropout=True,
    )
    transformers.EsmForMaskedLM(config).save_pretrained(folder)
    # transformers 5 saves its LayerNorms' weights as gamma and beta; Hub
    # checkpoints (and KerasHub 0.32's converter) name them weight, bias.
    _rewrite(
        folder,
        tensors=lambda tensors: {
            k.replace(".gamma", ".weight").replace(".beta", ".bias"): v
            for k, v in tensors.items()
        },
    )
    return str(folder)


def test_esm_is_refused_as_keras_hub_skips_token_dropout(tmp_path):
    """NO_TWIN's reason, checked: HF's ESM rescales the looked-up
    embeddings (token_dropout), KerasHub's does not, so the base models
    differ; with the rescaling off in HF they are equal."""
    import torch
    import transformers

    folder = _hf_esm(tmp_path / "esm")
    backbone = keras_hub.models.Backbone.from_preset(folder)
    hf = transformers.AutoModel.from_pretrained(folder).eval()
    ids = np.random.default_rng(3).integers(4, 32, size=(2, 6)).astype("int32")
    ids[1, 4:] = 1  # The pad id.
    mask = ids != 1
    want = _numpy(backbone({"token_ids": ids}))

    def gap():
        with torch.no_grad():
            have = hf(
                input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
            ).last_hidden_state.numpy()
        return np.abs(have - want)[mask].max()

    assert gap() > 1e-2
    hf.embeddings.token_dropout = False
    assert gap() < ATOL
    adapted = keras_adalink.adapt(backbone, rank=2)
    with pytest.raises(ValueError, match="ESMBackbone .* token_dropout"):
        keras_adalink.export_peft(adapted, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_t5gemma_is_refused_as_keras_hub_ignores_its_encoder_window(
    tmp_path,
):
    """NO_TWIN's reason, checked: HF's T5Gemma encoder windows its sliding
    layers (|i - j| <= window), KerasHub's does not, so the encoders agree
    on inputs up to the window and differ past it."""
    import torch
    import transformers

    torch.manual_seed(0)
    stack = transformers.T5GemmaModuleConfig(
        vocab_size=96,
        initializer_range=0.2,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,  # One sliding layer, one full.
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,
    )
    config = transformers.T5GemmaConfig(
        encoder=stack, decoder=stack, vocab_size=96
    )
    folder = str(tmp_path / "t5gemma")
    hf = transformers.T5GemmaForConditionalGeneration(config).eval()
    hf.save_pretrained(folder)
    backbone = keras_hub.models.Backbone.from_preset(folder)

    def gap(length):
        ids = np.random.default_rng(3).integers(3, 96, size=(2, length))
        x = {
            "encoder_token_ids": ids.astype("int32"),
            "encoder_padding_mask": np.ones(ids.shape, bool),
            "decoder_token_ids": ids[:, :1].astype("int32"),
            "decoder_padding_mask": np.ones((2, 1), bool),
        }
        want = _numpy(backbone(x)["encoder_sequence_output"])
        with torch.no_grad():
            have = hf.get_encoder()(input_ids=torch.tensor(ids))
        return np.abs(have.last_hidden_state.numpy() - want).max()

    assert gap(5) < ATOL  # Every |i - j| <= 4.
    assert gap(8) > 1e-2
    adapted = keras_adalink.adapt(backbone, rank=2)
    with pytest.raises(ValueError, match="T5GemmaBackbone .* sliding_window"):
        keras_adalink.export_peft(adapted, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_multimodal_backbone_is_refused(tmp_path):
    from tests.fixtures.gemma3_vision import gemma3_vision_backbone as _backbone

    adapted = keras_adalink.adapt(_backbone(), rank=2)
    with pytest.raises(
        ValueError,
        match="Gemma3Backbone is not in the table.*KerasHub converts HF",
    ):
        keras_adalink.export_peft(adapted, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_existing_folder_is_replaced_whole(tmp_path):
    adapted = keras_adalink.adapt(_tiny_llama(), rank=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    keras_adalink.export_peft(adapted, out)
    assert sorted(os.listdir(out)) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize(
    "run, flags, message",
    [
        ({"task": "classification"}, [], "a head that PEFT"),
        ({"task": "generation", "backbone": "gemma_2b_en"}, [], "--base-model"),
        ({"task": "generation"}, ["--fold"], "drop it for --format peft"),
    ],
)
def test_cli_export_peft_refusals(run, flags, message, tmp_path):
    from tests.fixtures.checks import run_cli

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(run))
    out = tmp_path / "out"
    result = run_cli(
        "export",
        "--adapter",
        folder,
        "--format",
        "peft",
        "--out",
        out,
        *flags,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()


def test_a_base_folder_of_another_checkpoint_is_refused(decoders, tmp_path):
    """`base_model` as a local HF folder is checked: its input embedding
    must be the table the adapter was trained on."""
    _, adapted = _keras_lm("llama", decoders["llama"])
    other = tmp_path / "other_llama"
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(decoders["llama"])
    with __import__("torch").no_grad():
        model.get_input_embeddings().weight.add_(1.0)
    model.save_pretrained(other)
    with pytest.raises(ValueError, match="another checkpoint"):
        keras_adalink.export_peft(
            adapted, tmp_path / "out", base_model=str(other)
        )
    assert sorted(os.listdir(tmp_path)) == ["other_llama"]
    # Its own checkpoint's folder passes the check.
    keras_adalink.export_peft(
        adapted, tmp_path / "out", base_model=decoders["llama"]
    )
