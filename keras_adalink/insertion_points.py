"""Where AdaLink goes in each supported KerasHub backbone family.

An insertion point is found by object (a layer of the backbone), never by a
generated op name. Each family needs one small entry below; everything else
(graph rewriting, saving, freezing) is shared.

- `"token_embedding"`: right after the token-embedding lookup, before
  positions, segments and the embedding LayerNorm are added. The adapter
  then acts on vocabulary rows only, so it can later be folded into the
  vocabulary table.
- `"block_input"`: at the input of the first transformer block, after the
  embedding stage (LayerNorm, dropout, projection) has run.
"""

import keras_hub

INSERTIONS = ("token_embedding", "block_input")


def after_layer(layer):
    """Adapt the output of the first call of `layer`."""

    def apply(call, args, kwargs, adapter):
        return adapter(call(*args, **kwargs))

    return layer, apply


def before_layer(layer):
    """Adapt the first positional input of the first call of `layer`."""

    def apply(call, args, kwargs, adapter):
        return call(adapter(args[0]), *args[1:], **kwargs)

    return layer, apply


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

    return layer, apply


def first_transformer_layer(backbone):
    first = backbone.transformer_layers[0]
    # ALBERT groups its (shared) layers: `transformer_layers[group][i]`.
    first = first[0] if isinstance(first, (list, tuple)) else first
    return before_layer(first)


def vit_encoder(backbone):
    # KerasHub's ViT keeps its two stages only as named graph layers.
    return before_layer(backbone.get_layer("vit_encoder"))


def _token_embedding(backbone):
    return after_layer(backbone.token_embedding)


def _token_and_position(backbone):
    return inside_token_and_position(backbone.embeddings)


def not_available(reason):
    def entry(backbone):
        raise ValueError(
            f"{type(backbone).__name__} has no such insertion point: {reason}"
        )

    return entry


# One entry per family: (token_embedding point, block_input point).
# Subclasses (Llama3 of Llama, XLMRoberta of Roberta) match their parent's.
_POINTS = {
    # Encoders.
    "BertBackbone": (_token_embedding, first_transformer_layer),
    "AlbertBackbone": (_token_embedding, first_transformer_layer),
    "ElectraBackbone": (_token_embedding, first_transformer_layer),
    "DebertaV3Backbone": (_token_embedding, first_transformer_layer),
    "DistilBertBackbone": (_token_and_position, first_transformer_layer),
    "RobertaBackbone": (_token_and_position, first_transformer_layer),
    "XLMRobertaBackbone": (_token_and_position, first_transformer_layer),
    # Decoder-only LMs: the graph and `call_with_cache` both start from
    # `token_embedding`; Gemma scales by sqrt(hidden_dim) after it.
    "GPT2Backbone": (_token_embedding, first_transformer_layer),
    "GemmaBackbone": (_token_embedding, first_transformer_layer),
    "LlamaBackbone": (_token_embedding, first_transformer_layer),
    "MistralBackbone": (_token_embedding, first_transformer_layer),
    "QwenBackbone": (_token_embedding, first_transformer_layer),
    "Qwen3Backbone": (_token_embedding, first_transformer_layer),
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
            # Most specific match: XLMRoberta subclasses Roberta, both map
            # to the same entry, so the first hit is right.
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
    token_embedding, _ = _POINTS[_family(backbone)]
    try:
        token_embedding(backbone)
    except ValueError:
        return "block_input"
    return "token_embedding"


def find_insertion_point(backbone, insertion):
    """Returns `(layer, apply)` for `insertion` in `backbone`.

    `apply(call, args, kwargs, adapter)` replaces the first graph call
    `call(*args, **kwargs)` of `layer`.
    """
    if insertion not in INSERTIONS:
        raise ValueError(
            f"`insertion` must be one of {INSERTIONS}. "
            f"Received: insertion={insertion!r}"
        )
    token_embedding, block_input = _POINTS[_family(backbone)]
    if insertion == "token_embedding":
        return token_embedding(backbone)
    return block_input(backbone)
