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
    return first[0] if isinstance(first, (list, tuple)) else first


def _token_embedding(backbone):
    return after_layer(backbone.token_embedding)


def _token_and_position(backbone):
    return inside_token_and_position(backbone.embeddings)


# One entry per family: how to reach the token-embedding output. Subclasses
# (Llama3 of Llama, XLMRoberta of Roberta) match their parent's entry.
_TOKEN_EMBEDDING = {
    # Encoders.
    "BertBackbone": _token_embedding,
    "AlbertBackbone": _token_embedding,
    "ElectraBackbone": _token_embedding,
    "DebertaV3Backbone": _token_embedding,
    "DistilBertBackbone": _token_and_position,
    "RobertaBackbone": _token_and_position,
    "XLMRobertaBackbone": _token_and_position,
    # Decoder-only LMs: the graph and `call_with_cache` both start from
    # `token_embedding`; Gemma scales by sqrt(hidden_dim) after it.
    "GPT2Backbone": _token_embedding,
    "GemmaBackbone": _token_embedding,
    "LlamaBackbone": _token_embedding,
    "Llama3Backbone": _token_embedding,
    "MistralBackbone": _token_embedding,
    "QwenBackbone": _token_embedding,
    "Qwen3Backbone": _token_embedding,
}
SUPPORTED_BACKBONES = tuple(_TOKEN_EMBEDDING)


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
    family = _family(backbone)
    if insertion == "token_embedding":
        return _TOKEN_EMBEDDING[family](backbone)
    return before_layer(first_transformer_layer(backbone))
