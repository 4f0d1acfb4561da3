"""Every KerasHub backbone family keras_adalink covers, as tiny test models.

`FAMILIES` maps each covered backbone class to a tiny randomly initialised
model built from constructor arguments (a task where the family has an LM
task, for generate() and fold checks). The families with tests of their
own (BERT family, the first decoder LMs, T5, PaliGemma, Gemma3, ViT) point
to those files; the rest are checked here, in tests/test_families.py.
docs/coverage.md is generated from this table (docs/make_coverage.py).
"""

import dataclasses

import keras_hub

M = keras_hub.models
VOCAB = 40
_TINY = dict(vocabulary_size=VOCAB, num_layers=2, hidden_dim=16)
_HEADS = dict(num_heads=2, intermediate_dim=32)
_VIT = dict(
    patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32
)
# Contrastive two-tower models: a tiny vision and text tower each.
_TOWER = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
_IMAGE_TOWER = dict(patch_size=4, image_shape=(16, 16, 3), **_TOWER)
_TEXT_TOWER = dict(
    vocabulary_size=VOCAB, embedding_dim=16, max_sequence_length=8, **_TOWER
)
_GQA = dict(num_query_heads=2, num_key_value_heads=1, intermediate_dim=32)
_SMOLLM = dict(
    intermediate_dim=32,
    num_attention_heads=2,
    num_key_value_heads=1,
    attention_bias=False,
    attention_dropout=0.0,
    rope_layer_enabled_list=[True, True],
    layer_types=["attention", "attention"],
    mlp_bias=False,
    layer_norm_epsilon=1e-6,
    max_position_embeddings=32,
    rope_theta=10000.0,
    partial_rotary_factor=1.0,
    **_TINY,
)
# Qwen3.5's GatedDeltaNet layers run a Python-level recurrence that takes
# over a minute per tiny model on CPU; the adapter sits before every block
# kind alike, so the tests use the full-attention kind.
_FULL_ATTENTION = ["full_attention", "full_attention"]
_T5GEMMA = dict(
    vocabulary_size=VOCAB,
    **{
        f"{stack}_{key}": value
        for stack in ("encoder", "decoder")
        for key, value in dict(
            hidden_dim=16,
            intermediate_dim=32,
            num_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            layer_types=["full_attention", "full_attention"],
        ).items()
    },
)


# Where KerasHub's own generate() does not follow its training path even
# unadapted, generate() is checked against the folded model's instead.
GENERATE_DIFFERS = {
    "Gemma4Backbone": "KerasHub's Gemma4CausalLM greedy generate() differs "
    "from the argmax of its own forward pass even unadapted",
}
# Where generate() needs inputs only the family's preprocessor makes.
GENERATE_UNTESTED = {
    "Gemma3Backbone": "KerasHub's Gemma3CausalLM.generate() without a "
    "preprocessor fails on text-only inputs even unadapted; its cached path "
    "is checked against the training path in test_causal_lm.py",
    "WhisperBackbone": "KerasHub 0.32 has no Whisper generation task",
    "RWKV7Backbone": "KerasHub's RWKV7CausalLM.generate_step() reads "
    "`predict_token_ids` and `input_padding_mask`, which only its "
    "preprocessor makes",
}

# Audio-to-text families whose generate() is checked with the default
# one module per modality (tests/test_families.py): their task class.
GENERATE_PER_MODALITY = {"MoonshineBackbone": "MoonshineAudioToText"}

# Families whose SavedModel export is tested (tests/test_export.py): one
# encoder, decoder and encoder-decoder at least.
EXPORT_TESTED = {
    "BertBackbone": "yes",
    "GemmaBackbone": "yes (folded)",
    "BartBackbone": "yes",
    "WhisperBackbone": "yes",
    "CLIPBackbone": "yes, with image and text signatures",
    "SigLIPBackbone": "yes, with image and text signatures (jax: at its "
    "fixed text length)",
    "MixtralBackbone": "tensorflow backend only; jax: its MoE router's "
    "top_k lowers to a StableHLO op (`vhlo.composite_v2`) the pinned "
    "TensorFlow cannot read",
}

# The token-embedding site is not a plain vocabulary table.
NOT_FOLDABLE = {
    "XLNetBackbone": "the token stream leaves a composite content-and-query "
    "embedding layer, not a table",
    **dict.fromkeys(
        ["WhisperBackbone", "MoonshineBackbone", "VideoPrismBackbone"]
        + ["CLIPBackbone", "SigLIPBackbone", "MetaCLIP2Backbone"],
        "one module per modality: a ModalityRouter is not a vocabulary table",
    ),
    **dict.fromkeys(
        ["DeiTBackbone", "DINOV2Backbone", "DINOV3Backbone"]
        + ["SwinTransformerBackbone", "ViTDetBackbone", "MiTBackbone"],
        "no vocabulary table: the adapter sees patches and positions",
    ),
}


@dataclasses.dataclass(frozen=True)
class Family:
    """A covered backbone class and how the tests build a tiny one.

    `build()` returns the backbone, or a task around it (`preprocessor=None`)
    where the family has a causal or seq2seq LM. `tested_in` names the test
    file of families checked elsewhere.
    """

    backbone: str
    build: object
    # or "decoder", "seq2seq", "vision", "video", "audio", "two_tower",
    # "diffusion"
    kind: str = "encoder"
    tested_in: str = "tests/test_families.py"


def _lm(task, backbone_class, **kwargs):
    kind = "seq2seq" if task.endswith("Seq2SeqLM") else "decoder"
    return lambda: getattr(M, task)(
        backbone=getattr(M, backbone_class)(**kwargs), preprocessor=None
    ), kind


def _backbone(backbone_class, **kwargs):
    return lambda: getattr(M, backbone_class)(**kwargs), "encoder"


def _vision(backbone_class, **kwargs):
    return lambda: getattr(M, backbone_class)(**kwargs), "vision"


def _two_tower(prefix, **kwargs):
    def build():
        vision = getattr(M, f"{prefix}VisionEncoder")(**_IMAGE_TOWER)
        text = getattr(M, f"{prefix}TextEncoder")(**_TEXT_TOWER)
        return getattr(M, f"{prefix}Backbone")(vision, text, **kwargs)

    return Family(f"{prefix}Backbone", build, "two_tower")


def _family(backbone, build_and_kind):
    return Family(backbone, *build_and_kind)


def _elsewhere(backbone, test_file, kind):
    return Family(backbone, None, kind, test_file)


_NEW = [
    # Encoders.
    _family("ESMBackbone", _backbone("ESMBackbone", **_HEADS, **_TINY)),
    _family("ESM2Backbone", _backbone("ESM2Backbone", **_HEADS, **_TINY)),
    _family(
        "FNetBackbone",
        _backbone(
            "FNetBackbone", intermediate_dim=32, max_sequence_length=16, **_TINY
        ),
    ),
    _family(
        "RoformerV2Backbone",
        _backbone("RoformerV2Backbone", head_size=8, **_HEADS, **_TINY),
    ),
    _family("XLNetBackbone", _backbone("XLNetBackbone", **_HEADS, **_TINY)),
    # Vision encoders: the stack is one graph layer; patches in, no vocabulary.
    _family(
        "DeiTBackbone",
        _vision("DeiTBackbone", image_shape=(16, 16, 3), **_VIT),
    ),
    _family(
        "DINOV2Backbone",
        _vision("DINOV2Backbone", image_shape=(16, 16, 3), **_VIT),
    ),
    _family(
        "DINOV3Backbone",
        _vision("DINOV3Backbone", image_shape=(16, 16, 3), **_VIT),
    ),
    # Decoder-only LMs.
    _family(
        "BloomBackbone",
        _lm("BloomCausalLM", "BloomBackbone", **_HEADS, **_TINY),
    ),
    _family(
        "FalconBackbone",
        _lm(
            "FalconCausalLM",
            "FalconBackbone",
            num_attention_heads=2,
            intermediate_dim=32,
            **_TINY,
        ),
    ),
    _family(
        "GPTNeoXBackbone",
        _lm(
            "GPTNeoXCausalLM",
            "GPTNeoXBackbone",
            max_sequence_length=32,
            **_HEADS,
            **_TINY,
        ),
    ),
    _family(
        "Gemma4Backbone",
        _lm(
            "Gemma4CausalLM",
            "Gemma4Backbone",
            image_size=16,
            head_dim=8,
            **_GQA,
            **_TINY,
        ),
    ),
    _family(
        "GptOssBackbone",
        _lm("GptOssCausalLM", "GptOssBackbone", num_experts=2, **_GQA, **_TINY),
    ),
    _family(
        "MixtralBackbone",
        _lm(
            "MixtralCausalLM", "MixtralBackbone", num_experts=2, **_GQA, **_TINY
        ),
    ),
    _family(
        "OPTBackbone",
        _lm(
            "OPTCausalLM",
            "OPTBackbone",
            max_sequence_length=32,
            **_HEADS,
            **_TINY,
        ),
    ),
    _family(
        "Phi3Backbone", _lm("Phi3CausalLM", "Phi3Backbone", **_GQA, **_TINY)
    ),
    _family(
        "Qwen2Backbone", _lm("Qwen2CausalLM", "Qwen2Backbone", **_GQA, **_TINY)
    ),
    _family(
        "QwenMoeBackbone",
        _lm(
            "QwenMoeCausalLM",
            "QwenMoeBackbone",
            moe_intermediate_dim=8,
            shared_expert_intermediate_dim=16,
            num_experts=2,
            top_k=1,
            **_GQA,
            **_TINY,
        ),
    ),
    _family(
        "Qwen3MoeBackbone",
        _lm(
            "Qwen3MoeCausalLM",
            "Qwen3MoeBackbone",
            moe_intermediate_dim=8,
            num_experts=2,
            top_k=1,
            head_dim=8,
            **_GQA,
            **_TINY,
        ),
    ),
    _family(
        "Qwen3_5Backbone",
        _lm(
            "Qwen3_5CausalLM",
            "Qwen3_5Backbone",
            head_dim=8,
            layer_types=_FULL_ATTENTION,
            **_GQA,
            **_TINY,
        ),
    ),
    _family(
        "Qwen3_5MoeBackbone",
        _lm(
            "Qwen3_5MoeCausalLM",
            "Qwen3_5MoeBackbone",
            head_dim=8,
            layer_types=_FULL_ATTENTION,
            num_query_heads=2,
            num_key_value_heads=1,
            moe_intermediate_dim=8,
            shared_expert_intermediate_size=16,
            num_experts=2,
            top_k=1,
            **_TINY,
        ),
    ),
    _family(
        "RWKV7Backbone",
        _lm(
            "RWKV7CausalLM",
            "RWKV7Backbone",
            hidden_size=16,
            head_size=8,
            num_layers=2,
            vocabulary_size=VOCAB,
            intermediate_dim=32,
        ),
    ),
    _family(
        "SmolLMBackbone", _lm("SmolLMCausalLM", "SmolLMBackbone", **_SMOLLM)
    ),
    _family(
        "SmolLM3Backbone", _lm("SmolLM3CausalLM", "SmolLM3Backbone", **_SMOLLM)
    ),
    # Audio encoder + text decoder: a site per modality.
    Family(
        "WhisperBackbone",
        lambda: M.WhisperBackbone(
            max_encoder_sequence_length=8,
            max_decoder_sequence_length=16,
            **_HEADS,
            **_TINY,
        ),
        "audio",
    ),
    # Image and video encoders without a list of blocks, or hierarchical.
    _family(
        "SwinTransformerBackbone",
        _vision(
            "SwinTransformerBackbone",
            image_shape=(32, 32, 3),
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=4,
            patch_size=4,
        ),
    ),
    _family(
        "ViTDetBackbone",
        _vision(
            "ViTDetBackbone",
            hidden_size=8,
            num_layers=2,
            intermediate_dim=16,
            num_heads=2,
            global_attention_layer_indices=[1],
            image_shape=(32, 32, 3),
            patch_size=8,
            num_output_channels=8,
            window_size=2,
        ),
    ),
    _family(
        "MiTBackbone",
        _vision(
            "MiTBackbone",
            layerwise_depths=[1, 1],
            num_layers=2,
            layerwise_num_heads=[1, 2],
            layerwise_sr_ratios=[2, 1],
            max_drop_path_rate=0.0,
            layerwise_patch_sizes=[7, 3],
            layerwise_strides=[4, 2],
            image_shape=(32, 32, 3),
            hidden_dims=[8, 16],
        ),
    ),
    # Video and text: video patches before the spatial encoder, text tokens.
    Family(
        "VideoPrismBackbone",
        lambda: M.VideoPrismBackbone(
            num_frames=2,
            patch_size=8,
            hidden_dim=8,
            intermediate_dim=16,
            num_heads=2,
            num_spatial_layers=1,
            num_temporal_layers=1,
            num_auxiliary_layers=1,
            vocabulary_size=VOCAB,
            num_text_layers=1,
            image_shape=(16, 16, 3),
        ),
        "video",
    ),
    # Contrastive image-text: a site inside each tower.
    _two_tower("CLIP", projection_dim=8),
    _two_tower("SigLIP"),
    _two_tower("MetaCLIP2", projection_dim=8),
    Family(
        "MoonshineBackbone",
        lambda: M.MoonshineBackbone(
            vocabulary_size=VOCAB,
            hidden_dim=16,
            filter_dim=16,
            encoder_num_layers=1,
            decoder_num_layers=1,
            encoder_num_heads=2,
            decoder_num_heads=2,
            intermediate_dim=32,
        ),
        "audio",
    ),
    # Encoder-decoders.
    _family(
        "BartBackbone",
        _lm(
            "BartSeq2SeqLM",
            "BartBackbone",
            max_sequence_length=16,
            **_HEADS,
            **_TINY,
        ),
    ),
    _family(
        "T5GemmaBackbone",
        _lm("T5GemmaSeq2SeqLM", "T5GemmaBackbone", **_T5GEMMA),
    ),
    _family(
        "T5Gemma2Backbone",
        _lm("T5Gemma2Seq2SeqLM", "T5Gemma2Backbone", **_T5GEMMA),
    ),
]
NEW_FAMILIES = {f.backbone: f for f in _NEW}

FAMILIES = {
    **NEW_FAMILIES,
    **{
        name: _elsewhere(name, "tests/test_adapt.py", "encoder")
        for name in (
            "AlbertBackbone",
            "BertBackbone",
            "DebertaV3Backbone",
            "DistilBertBackbone",
            "ElectraBackbone",
            "RobertaBackbone",
            "XLMRobertaBackbone",
        )
    },
    **{
        name: _elsewhere(name, "tests/test_causal_lm.py", "decoder")
        for name in (
            "GPT2Backbone",
            "GemmaBackbone",
            "Gemma3Backbone",
            "LlamaBackbone",
            "Llama3Backbone",
            "MistralBackbone",
            "QwenBackbone",
            "Qwen3Backbone",
        )
    },
    "T5Backbone": _elsewhere("T5Backbone", "tests/test_seq2seq.py", "seq2seq"),
    "PaliGemmaBackbone": _elsewhere(
        "PaliGemmaBackbone", "tests/test_pali_gemma.py", "decoder"
    ),
    "ViTBackbone": _elsewhere("ViTBackbone", "tests/test_vision.py", "vision"),
    **{
        name: _elsewhere(name, "tests/test_diffusion.py", "diffusion")
        for name in ("StableDiffusion3Backbone", "FluxBackbone")
    },
}


def build(name):
    """A tiny model of any covered family (the other test files' own)."""
    family = FAMILIES[name]
    if family.build is not None:
        return family.build()
    from tests import conftest
    from tests import test_causal_lm
    from tests import test_diffusion
    from tests import test_pali_gemma
    from tests import test_seq2seq
    from tests import test_vision

    stem = name.removesuffix("Backbone")
    encoders = {k.replace("_", ""): v for k, v in conftest.BACKBONES.items()}
    if stem.lower() in encoders:
        return encoders[stem.lower()]()
    if stem.lower() in test_causal_lm.CAUSAL_LMS:
        return test_causal_lm.CAUSAL_LMS[stem.lower()]()
    return {
        "T5": test_seq2seq._lm,
        "PaliGemma": test_pali_gemma._lm,
        "ViT": test_vision._vit,
        "StableDiffusion3": lambda: test_diffusion._sd3().backbone,
        "Flux": test_diffusion._flux,
    }[stem]()
