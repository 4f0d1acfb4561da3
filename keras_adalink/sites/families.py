"""What keras_adalink knows of backbone families beyond the rule.

One table, `FAMILIES`, keyed by class name and looked up through the class
hierarchy (`Llama3Backbone` finds `LlamaBackbone`'s entry), the first match
winning. A family absent from it is adapted by the rule (`rule.py`) alone,
so families added to KerasHub later are adapted too. Each entry says one
thing with its one-line reason: sites of its own, adapted text-only,
refused, or (for `get_layout_map`) a model-parallel layout rule.
"""

import dataclasses
from collections.abc import Callable

from keras_adalink.sites import encoder_heads
from keras_adalink.sites import gemma3n
from keras_adalink.sites import keras_cv
from keras_adalink.sites import layouts
from keras_adalink.sites import query_tokens
from keras_adalink.sites import sam3
from keras_adalink.sites import text_recognizer
from keras_adalink.sites.rule import block_input_sites
from keras_adalink.sites.rule import token_embedding_sites
from keras_adalink.sites.site import after_layer
from keras_adalink.sites.site import before_layer


@dataclasses.dataclass(frozen=True)
class Family:
    """One entry of the family table.

    Args:
        why: str. The reason for the entry, one line ("" for layout only).
        token_embedding: `sites(backbone)` for `insertion="token_embedding"`
            where the rule will not do; `None`: the rule's.
        block_input: the same for `insertion="block_input"`.
        refused: bool. No place for the method: `adapt()` raises `why`.
        text_only: bool. Adapted text-only; built with a vision or audio
            encoder it is refused with `why`.
        layout: `rule(model_axis, data_axis)` of `layouts.py`, for
            families without a KerasHub layout map.
        subclasses: bool. Whether subclasses inherit the entry. Defaults to
            `True`; `False` for a base class that is refused while some of
            its subclasses adapt.
        task_calls: names of backbone methods and properties its tasks
            call (`denoise_step`), given to the adapted backbone.
    """

    why: str = ""
    token_embedding: Callable | None = None
    block_input: Callable | None = None
    refused: bool = False
    text_only: bool = False
    layout: Callable | None = None
    subclasses: bool = True
    task_calls: tuple = ()

    @property
    def has_sites(self):
        return self.token_embedding is not None or self.block_input is not None


def lookup(cls, where=None):
    """The `Family` entry of backbone class `cls` (None: the rule alone).

    With `where(entry)`, the first entry up the hierarchy it accepts; the
    class that holds it is `entry_class(cls, where)`.
    """
    klass = entry_class(cls, where)
    return None if klass is None else FAMILIES[klass.__name__]


def entry_class(cls, where=None):
    """The class in `cls`'s hierarchy whose entry `lookup` returns."""
    for klass in cls.__mro__:
        entry = FAMILIES.get(klass.__name__)
        if entry is None or not (klass is cls or entry.subclasses):
            continue
        if where is None or where(entry):
            return klass
    return None


# --- Sites of the families the rule alone would get wrong. ---


def _image_and_text(backbone):
    # PaliGemma's `vit_encoder`, Gemma3's and Gemma4's `vision_encoder`
    # (None when the model is text-only), Gemma4's `audio_encoder`: image
    # and audio embeddings already at the LM width, merged into the text
    # sequence after both lookups.
    vision = getattr(backbone, "vit_encoder", None) or getattr(
        backbone, "vision_encoder", None
    )
    audio = getattr(backbone, "audio_encoder", None)
    sites = [after_layer(vision, "image")] if vision is not None else []
    if audio is not None:
        sites.append(after_layer(audio, "audio"))
    return [*sites, after_layer(backbone.token_embedding, modality="text")]


def _image_and_seq2seq_text(backbone):
    # T5Gemma2: with a vision encoder (a Gemma3 one, at the encoder's
    # width), its image embeddings are interleaved into the encoder's
    # token embeddings after the lookup, scaling and end-of-image ops;
    # the tables are the rule's (the decoder's an optional site).
    encoder, decoder = token_embedding_sites(backbone)
    if backbone.vision_encoder is None:
        return [encoder, decoder]
    image = after_layer(backbone.vision_encoder, "image")
    return [image, encoder.replace(modality="text"), decoder]


def _qwen_image_and_text(backbone):
    # Qwen3.5: its vision encoder folds the batch's images into one row
    # (`[1, tokens of every image, d]`) that the interleave layer scatters
    # into the text after the lookup, so image rows are not examples.
    if backbone.vision_encoder is None:
        return token_embedding_sites(backbone)
    image = after_layer(backbone.vision_encoder, "image")
    text = after_layer(backbone.token_embedding, "text")
    return [image.replace(per_example=False), text]


def _audio_and_text_tokens(backbone):
    # Whisper, Moonshine: audio frames after the convolutional front end
    # and positions (the first encoder block's input); text tokens at the
    # decoder's token lookup.
    audio = block_input_sites(backbone)[0]
    (text,) = token_embedding_sites(backbone)
    return [audio.replace(modality="audio"), text.replace(modality="text")]


def _audio_and_text_blocks(backbone):
    audio, text = block_input_sites(backbone)
    return [
        audio.replace(modality="audio"),
        text.replace(modality="text", optional=False),
    ]


def _video_and_text(insertion):
    # VideoPrism: video patches (with positions) before the spatial
    # encoder; the text tower's tokens where the model has one.
    def sites(backbone):
        # Rows are frames (`[batch * frames, patches, d]`), not examples.
        video = before_layer(backbone.spatial_encoder, "video").replace(
            per_example=False
        )
        if getattr(backbone, "text_encoder", None) is None:
            if insertion == "token_embedding":
                raise ValueError(
                    "VideoPrismBackbone without text has no single layer "
                    "that looks `token_ids` up; use insertion='block_input'."
                )
            return [video]
        if insertion == "token_embedding":
            text = after_layer(backbone.text_embedding, "text")
        else:
            text = before_layer(backbone.text_encoder, "text")
        return [video, text]

    return sites


_IMAGE_AND_TEXT = dict(
    token_embedding=_image_and_text, block_input=block_input_sites
)
_AUDIO_AND_TEXT = Family(
    "audio frames and text tokens each get a site, tagged for a "
    "ModalityRouter; the rule alone would adapt the text side only",
    _audio_and_text_tokens,
    _audio_and_text_blocks,
)
_CONVOLUTIONAL = Family(
    "a convolutional image model: no token sequence enters a stack of "
    "blocks, so there is no embedding/block boundary to adapt",
    refused=True,
)
_CONVOLUTIONAL_HEAD = Family(
    "a detection or segmentation head over a convolutional image encoder: "
    "no token sequence enters a stack of transformer blocks",
    refused=True,
)


def _context_and_latents(backbone):
    # SD3: the diffusion transformer (`diffuser`, a functional MMDiT that
    # the backbone graph calls as one layer, replayed inline) embeds the
    # text context (`context_embedding`) and the latent patches (with
    # positions, `position_embedding_add`) before its first joint block.
    # With guidance, `denoise_step` stacks the batch twice (conditional
    # rows, then unconditional) before the transformer.
    diffuser = backbone.diffuser
    return [
        after_layer(diffuser.context_embedding, "text").replace(stacked=True),
        after_layer(diffuser.position_embedding_add, "image").replace(
            stacked=True
        ),
    ]


def _text_and_image_tokens(backbone):
    # Flux: the text tokens (`text_input_embedder`) and the packed latent
    # patches (`image_input_embedder`) enter the first double block side
    # by side; rotary positions act inside the blocks.
    return [
        after_layer(backbone.text_input_embedder, "text"),
        after_layer(backbone.image_input_embedder, "image"),
    ]


_SD3_TASK_CALLS = (
    "latent_shape",
    "clip_hidden_dim",
    "t5_hidden_dim",
    "encode_text_step",
    "encode_image_step",
    "configure_scheduler",
    "add_noise_step",
    "denoise_step",
    "decode_step",
)
_BERT_LAYOUT = Family(layout=layouts.bert_family)
_TWO_TOWER_LAYOUT = Family(layout=layouts.two_tower)

FAMILIES = {
    # Sites of their own.
    "PaliGemmaBackbone": Family(
        "two sites: image embeddings (vision encoder output at the LM "
        "width) and text tokens, each tagged for a ModalityRouter",
        **_IMAGE_AND_TEXT,
        layout=layouts.pali_gemma,
    ),
    "Gemma3Backbone": Family(
        "as PaliGemma: image embeddings are scattered into the text "
        "sequence after both lookups",
        **_IMAGE_AND_TEXT,
    ),
    "Gemma4Backbone": Family(
        "as PaliGemma, with audio: image and audio embeddings (each "
        "encoder's output, at the LM width) are scaled and interleaved "
        "into the text after the token lookup",
        **_IMAGE_AND_TEXT,
    ),
    "Gemma3nBackbone": Family(
        "its text, image and audio embeddings are made and merged inside "
        "one layer's call (the embedding processor), one stream per "
        "position: that call is the site, each token adapted by its "
        "modality's module (routed by its id, as the merge chooses), the "
        "per-layer inputs projected from the adapted embeddings",
        gemma3n.embedding_streams,
        gemma3n.embedding_streams,
    ),
    "WhisperBackbone": _AUDIO_AND_TEXT,
    "MoonshineBackbone": _AUDIO_AND_TEXT,
    "VideoPrismBackbone": Family(
        "video patches enter a spatial encoder, then a temporal one: the "
        "site is the spatial encoder's input; the text tower, if any, gets "
        "its own",
        _video_and_text("token_embedding"),
        _video_and_text("block_input"),
    ),
    "T5Backbone": Family(
        "one table for both stacks and an embedding stage that is only "
        "lookup + dropout: both points are the first encoder block",
        block_input_sites,
        block_input_sites,
        layout=layouts.t5,
    ),
    "T5Gemma2Backbone": Family(
        "with a vision encoder, image embeddings (its output, at the "
        "encoder width) and the encoder's text tokens each get a site, "
        "tagged for a ModalityRouter, before they are interleaved; the "
        "decoder's tokens get one on request, as in any encoder-decoder",
        _image_and_seq2seq_text,
        block_input_sites,
    ),
    **dict.fromkeys(
        ["Qwen3_5Backbone", "Qwen3_5MoeBackbone"],
        Family(
            "with a vision encoder, two sites: image embeddings (the "
            "encoder's output, every image of the batch in one row, so not "
            "routed by task) and text tokens, each tagged for a "
            "ModalityRouter. Adapted or not, its vision encoder reads "
            "`image_grid_thw` as Python ints (`int(grid_thw[idx][0])` in "
            "`_fast_pos_embed_interpolate`): generate() with images runs "
            "only eagerly (as on torch; `compile(run_eagerly=True)` on jax "
            "and tensorflow), and fit() with images only on tensorflow with "
            "`run_eagerly=True` (on jax and torch, Keras' build before "
            "fit() runs that encoder on placeholder grids and fails)",
            _qwen_image_and_text,
            block_input_sites,
        ),
    ),
    "SegFormerBackbone": Family(
        "its head reads MiT's pyramid through a sub-model over MiT's "
        "layers (`feature_extractor`): replayed with MiT's site inside",
        token_embedding_sites,  # Refuses: no `token_ids`.
        encoder_heads.encoder_pyramid,
    ),
    "DepthAnythingBackbone": Family(
        "its DPT head reads DINOv2's pyramid through a sub-model over "
        "DINOv2's layers (`feature_extractor`): replayed with DINOv2's "
        "site inside",
        token_embedding_sites,  # Refuses: no `token_ids`.
        encoder_heads.encoder_pyramid,
    ),
    "SAMBackbone": Family(
        "two sites: image patches before the ViTDet encoder's first block, "
        "and the prompt encoder's point and box tokens, which the mask "
        "decoder's two-way transformer reads",
        token_embedding_sites,  # Refuses: no `token_ids`.
        encoder_heads.image_and_prompt,
    ),
    "DFineBackbone": Family(
        "a detection transformer: the CNN feature maps its hybrid encoder "
        "flattens into tokens, adapted before that encoder's call",
        token_embedding_sites,  # Refuses: no `token_ids`.
        encoder_heads.detection_encoder,
    ),
    "StableDiffusion3Backbone": Family(
        "two sites inside its diffusion transformer, before the first joint "
        "block: text-context tokens and latent patch tokens; its tasks call "
        "the transformer once per denoising step through backbone methods, "
        "which the adapted backbone carries; guidance stacks each example "
        "twice there, and a TaskRouter routes both copies by its task id",
        _context_and_latents,
        _context_and_latents,
        task_calls=_SD3_TASK_CALLS,
    ),
    "PARSeqBackbone": Family(
        "a text recogniser: image patches before its ViT encoder's first "
        "block, and the decoder's token embeddings, which it makes inside "
        "`PARSeqDecoder.call` and which its task's training "
        "(`compute_loss`, calling `backbone.decoder`) and cached decoding "
        "(`call_with_cache`, calling `decoder.token_embedding`) look up "
        "directly: the site is after that lookup on every path (a mirror of "
        "the decoder call), at either insertion point",
        text_recognizer.image_and_text,
        text_recognizer.image_and_text,
    ),
    "FluxBackbone": Family(
        "two sites before the first double block: text tokens and latent "
        "patch tokens, each after its input projection; FluxTextToImage's "
        "generate() does not run on KerasHub 0.32 even unadapted (no "
        "`FluxBackbone.latent_shape`; `encode_text_step`, `denoise_step` "
        "and `decode_step` raise NotImplementedError)",
        _text_and_image_tokens,
        _text_and_image_tokens,
    ),
    "BLIP2Backbone": Family(
        "two sites inside its language model: the Q-Former's query tokens "
        "after their projection to the LM width, and the text tokens after "
        "the lookup, each before its positions add (at either insertion: "
        "the first block reads both streams as one sequence); its "
        "CausalLM's generate() calls both layers directly, which the "
        "adapted backbone's `language_model` carries with the sites "
        "applied. Built with Flan-T5 (`BLIP2FlanT5`) it is refused: its "
        "Seq2SeqLM's generate() runs both stacks through the language "
        "model's own methods, around the graph, over one shared table",
        query_tokens.image_and_text,
        query_tokens.image_and_text,
        task_calls=("num_query_tokens", "qformer_hidden_dim"),
    ),
    "SAM3PromptableConceptBackbone": Family(
        "its encoders embed inside their Python calls: each is replayed "
        "with its site inside (image patches before the ViT's first layer; "
        "text tokens after the lookup, or before the first text layer), "
        "ahead of the DETR encoder that reads both",
        sam3.sam3_sites("token_embedding"),
        sam3.sam3_sites("block_input"),
    ),
    # KerasCV (the `cv` extra).
    "CLIP": Family(
        "KerasCV's CLIP: its towers are subclassed layers, each replayed "
        "with its module inside (image: before the first vision block; "
        "text: after the token lookup, or before the first text block)",
        keras_cv.clip_sites("token_embedding"),
        keras_cv.clip_sites("block_input"),
    ),
    # Layout rules only (sites by the rule).
    "BertBackbone": _BERT_LAYOUT,
    "RobertaBackbone": _BERT_LAYOUT,
    "XLMRobertaBackbone": _BERT_LAYOUT,
    "DistilBertBackbone": _BERT_LAYOUT,
    "ElectraBackbone": _BERT_LAYOUT,
    "ViTBackbone": Family(layout=layouts.vit),
    "FNetBackbone": Family(layout=layouts.fnet),
    "CLIPBackbone": _TWO_TOWER_LAYOUT,
    "SigLIPBackbone": _TWO_TOWER_LAYOUT,
    "MetaCLIP2Backbone": _TWO_TOWER_LAYOUT,
    # Refused.
    **dict.fromkeys(
        [
            "CSPNetBackbone",
            "DenseNetBackbone",
            "EfficientNetBackbone",
            "HGNetV2Backbone",
            "MobileNetBackbone",
            "MobileNetV5Backbone",
            "ResNetBackbone",
            "VGGBackbone",
            "XceptionBackbone",
        ],
        _CONVOLUTIONAL,
    ),
    "FeaturePyramidBackbone": Family(
        "the base class of multi-scale image backbones; its subclasses are "
        "adapted (DINOv2, DINOv3, MiT) or refused (ResNet...) one by one",
        refused=True,
        subclasses=False,
    ),
    **dict.fromkeys(
        ["BASNetBackbone", "DeepLabV3Backbone", "RetinaNetBackbone"],
        _CONVOLUTIONAL_HEAD,
    ),
    "EdRecBackbone": Family(
        "a recommendation model over item-id features, not a token "
        "sequence into transformer blocks",
        refused=True,
    ),
}


def named(predicate):
    """`{class name: entry}` of the entries `predicate(entry)` selects."""
    return {k: v for k, v in FAMILIES.items() if predicate(v)}
