"""Where AdaLink goes in each supported KerasHub backbone family.

An insertion point is found by object (a layer of the backbone), never by a
generated op name. Each family needs one small entry in `_POINTS`;
everything else (graph rewriting, generate(), saving, freezing) is shared.

- `"token_embedding"`: right after the token-embedding lookup, before
  positions, segments and the embedding LayerNorm are added. The adapter
  then acts on vocabulary rows only, so it can later be folded into the
  vocabulary table. In PaliGemma and Gemma3 (with vision) this point has
  two sites: the image embeddings (vision encoder output, projected to the
  LM width) and the text token embeddings, each tagged with its modality
  for `ModalityRouter`.
- `"block_input"`: at the input of the first transformer block, after the
  embedding stage (LayerNorm, dropout, projection) has run.

T5 shares one token-embedding table between encoder and decoder, and its
embedding stage is only lookup + dropout, so both points are the input of
the first encoder block; the decoder's first block is an optional second
site, adapted when a `ModalityRouter` names `"decoder"` among its
modalities (`modalities=["encoder", "decoder"]`).
"""

import collections

import keras_hub

INSERTIONS = ("token_embedding", "block_input")

# `apply(call, args, kwargs, adapter)` replaces the first graph call
# `call(*args, **kwargs)` of `layer`; `modality` names the tokens it sees
# (None: any, routed by ids or layout). An `optional` site is adapted only
# by a ModalityRouter that names its modality (T5's decoder).
Site = collections.namedtuple(
    "Site", ["layer", "apply", "modality", "optional"], defaults=[None, False]
)


def after_layer(layer, modality=None):
    """Adapt the output of the first call of `layer`."""

    def apply(call, args, kwargs, adapter):
        return adapter(call(*args, **kwargs))

    return Site(layer, apply, modality)


def before_layer(layer, modality=None, optional=False):
    """Adapt the first positional input of the first call of `layer`."""

    def apply(call, args, kwargs, adapter):
        return call(adapter(args[0]), *args[1:], **kwargs)

    return Site(layer, apply, modality, optional)


def inside_token_and_position(layer):
    """`TokenAndPositionEmbedding`: adapt the tokens before positions add.

    Mirrors `TokenAndPositionEmbedding.call` with the adapter in between;
    the sublayers (and so the weights) are the backbone's own.
    """

    def apply(call, args, kwargs, adapter):
        tokens = adapter(layer.token_embedding(args[0]))
        positions = layer.position_embedding(
            tokens, start_index=kwargs.get("start_index", 0)
        )
        return tokens + positions

    return Site(layer, apply)


def first_transformer_layer(backbone):
    first = backbone.transformer_layers[0]
    # ALBERT groups its (shared) layers: `transformer_layers[group][i]`.
    first = first[0] if isinstance(first, (list, tuple)) else first
    return [before_layer(first)]


def token_embedding(backbone):
    return [after_layer(backbone.token_embedding)]


def token_and_position(backbone):
    return [inside_token_and_position(backbone.embeddings)]


def image_and_text(backbone):
    # PaliGemma's `vit_encoder`, Gemma3's `vision_encoder` (None when the
    # model is text-only): image embeddings already at the LM width.
    vision = getattr(backbone, "vit_encoder", None) or getattr(
        backbone, "vision_encoder", None
    )
    text = after_layer(backbone.token_embedding, modality="text")
    if vision is None:
        return [text]
    return [after_layer(vision, modality="image"), text]


def encoder_and_decoder(backbone):
    # T5 shares `token_embedding` between its stacks, so each stack is
    # adapted at its first block (T5's embedding stage is lookup + dropout).
    return [
        before_layer(backbone.encoder_transformer_layers[0], "encoder"),
        before_layer(
            backbone.decoder_transformer_layers[0], "decoder", optional=True
        ),
    ]


def vit_encoder(backbone):
    # KerasHub's ViT keeps its two stages only as named graph layers.
    return [before_layer(backbone.get_layer("vit_encoder"))]


def not_available(reason):
    def entry(backbone):
        raise ValueError(
            f"{type(backbone).__name__} has no such insertion point: {reason}"
        )

    return entry


# One entry per family: (token_embedding sites, block_input sites).
# Subclasses (Llama3 of Llama, XLMRoberta of Roberta) match their parent's.
_POINTS = {
    # Encoders.
    "BertBackbone": (token_embedding, first_transformer_layer),
    "AlbertBackbone": (token_embedding, first_transformer_layer),
    "ElectraBackbone": (token_embedding, first_transformer_layer),
    "DebertaV3Backbone": (token_embedding, first_transformer_layer),
    "DistilBertBackbone": (token_and_position, first_transformer_layer),
    "RobertaBackbone": (token_and_position, first_transformer_layer),
    "XLMRobertaBackbone": (token_and_position, first_transformer_layer),
    # Decoder-only LMs: the graph and `call_with_cache` both start from
    # `token_embedding`; Gemma scales by sqrt(hidden_dim) after it.
    "GPT2Backbone": (token_embedding, first_transformer_layer),
    "GemmaBackbone": (token_embedding, first_transformer_layer),
    "LlamaBackbone": (token_embedding, first_transformer_layer),
    "MistralBackbone": (token_embedding, first_transformer_layer),
    "QwenBackbone": (token_embedding, first_transformer_layer),
    "Qwen3Backbone": (token_embedding, first_transformer_layer),
    # Vision-language: [image tokens; text tokens] into a Gemma decoder.
    "PaliGemmaBackbone": (image_and_text, first_transformer_layer),
    # Gemma3: image embeddings are scattered into the text sequence after
    # both lookups, so the two sites work as for PaliGemma.
    "Gemma3Backbone": (image_and_text, first_transformer_layer),
    # Encoder-decoder: encoder inputs; decoder inputs on request.
    "T5Backbone": (encoder_and_decoder, encoder_and_decoder),
    # Vision: block_input adapts [class token; patches] + positions.
    "ViTBackbone": (
        not_available(
            "ViT has no vocabulary table; use insertion='block_input' "
            "(patch embeddings with class token and positions)"
        ),
        vit_encoder,
    ),
}
SUPPORTED_BACKBONES = tuple(_POINTS)


def _family(backbone):
    for name in SUPPORTED_BACKBONES:
        cls = getattr(keras_hub.models, name, None)
        if cls is not None and isinstance(backbone, cls):
            return name
    raise ValueError(
        "keras_adalink does not support backbone class "
        f"{type(backbone).__name__}. Supported: "
        f"{', '.join(SUPPORTED_BACKBONES)}."
    )


def default_insertion(backbone):
    """`"token_embedding"` where the family has one, else `"block_input"`.

    On text models the token-embedding point measured better than the block
    input and can be folded into the vocabulary table (docs/concepts.md).
    """
    token_sites, _ = _POINTS[_family(backbone)]
    try:
        token_sites(backbone)
    except ValueError:
        return "block_input"
    return "token_embedding"


def find_insertion_sites(backbone, insertion):
    """The list of `Site`s for `insertion` in `backbone`."""
    if insertion not in INSERTIONS:
        raise ValueError(
            f"`insertion` must be one of {INSERTIONS}. "
            f"Received: insertion={insertion!r}"
        )
    token_sites, block_sites = _POINTS[_family(backbone)]
    if insertion == "token_embedding":
        return token_sites(backbone)
    return block_sites(backbone)
