"""Sites of BLIP-2: Q-Former query tokens and text tokens into its LM.

`BLIP2Backbone` runs a vision encoder, a Q-Former (whose learned query
tokens cross-attend to the image patches) and a language model, three
nested models. The language model (`BLIP2CustomOPT`, a functional model
the backbone calls as one layer, replayed inline) projects the query
tokens to its width (`language_projection`), looks the text tokens up and
adds positions to both (`embeddings_layer`), and reads `[queries; text]`
into its first block. `BLIP2CausalLM.generate()` calls those two layers
directly (`_encode_images`, `call_with_cache`) through
`backbone.language_model`, which the adapted backbone hands out with the
sites applied (`models/nested.py`).
"""

from keras import ops

from keras_adalink.sites.site import Site
from keras_adalink.sites.site import after_layer

FLAN_T5_REFUSAL = (
    "keras_adalink adapts BLIP2Backbone with its OPT language model "
    "(`BLIP2CustomOPT`), not yet with Flan-T5 (`BLIP2FlanT5`): "
    "BLIP2Seq2SeqLM.generate() runs the encoder and decoder through the "
    "language model's own methods (`call_encoder`, "
    "`call_decoder_with_cache`), which read `self.t5` and "
    "`self.language_projection` and call one table, "
    "`t5.token_embedding`, for both stacks' tokens; sites there need those "
    "methods bound to the adapted language model and the encoder's lookup "
    "told from the decoder's, not built yet."
)


def inside_opt_embeddings(layer, modality):
    """`BLIP2OPTEmbeddings`: adapt the text tokens before positions add.

    Mirrors `BLIP2OPTEmbeddings.call`'s text path (token lookup, then
    learned positions from `position_offset` or the `position_ids` given)
    with the adapter after the lookup; the sublayers, and so the weights,
    are the layer's own. The query tokens' position embeddings, when asked
    for, come from the layer's own call (looked up inside it, so a graph
    holds the lookup, not its value at build time).
    """

    def apply(call, args, kwargs, adapter):
        kwargs = dict(kwargs)
        token_ids = args[0] if args else kwargs.pop("token_ids")
        position_ids = kwargs.get("position_ids")
        tokens = adapter(layer.token_embedding(token_ids))
        if position_ids is None:
            # Text positions 0, 1, ... from the offset past the queries.
            ones = ops.ones_like(token_ids, dtype="int32")
            position_ids = ops.cumsum(ones, axis=-1) - 1 + layer.position_offset
        positions = layer.position_embedding(position_ids)
        text = tokens + ops.cast(positions, tokens.dtype)
        if kwargs.get("visual_position_ids") is None:
            return text
        _, queries = call(token_ids, **kwargs)
        return text, queries

    return Site(layer, apply, modality, where="inside")


def image_and_text(backbone):
    # The query tokens at the LM width (before their positions add), and
    # the text tokens after the lookup (before theirs). Without a vision
    # encoder (text-only mode) the LM is built without queries.
    lm = backbone.language_model
    if not hasattr(lm, "embeddings_layer"):
        raise ValueError(FLAN_T5_REFUSAL)
    text = inside_opt_embeddings(lm.embeddings_layer, "text")
    if backbone.qformer is None:
        return [text]
    return [after_layer(lm.language_projection, "image"), text]
