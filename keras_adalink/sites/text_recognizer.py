"""PARSeq: sites in a text recogniser whose task calls its parts directly.

`PARSeqBackbone` reads an image with a ViT (`image_encoder`, a functional
sub-model) and decodes characters with `PARSeqDecoder`, a subclassed layer
that makes its text stream inside its Python call: each token embedding
(`decoder.token_embedding`), scaled by the square root of the width, is
added to a position query (`pos_query_embeddings`). Its task
`PARSeqCausalLM` runs around the graph: `compute_loss` (what `fit` runs)
calls `backbone.image_encoder` and `backbone.decoder` once per permutation;
`call_with_cache` (what `generate()` runs) calls `decoder.token_embedding`
and the decoder blocks itself.

Every one of those paths looks tokens up with `decoder.token_embedding`, so
the text site is its output: the graph's decoder call is replayed (a mirror
of `PARSeqDecoder.call`, KerasHub 0.32, through the decoder's own layers and
weights) with the adapter after the lookup, and on the adapted backbone
`decoder` hands direct callers that replay and an adapted
`decoder.token_embedding` (`Site.sublayer`). The image site is the ViT's,
before its first block (what `adapt` does to a ViT alone), which direct
`image_encoder` calls get through the adapted sub-model.
"""

from keras import ops

from keras_adalink.sites.rule import block_input_sites
from keras_adalink.sites.site import Site


def decoder_call(
    decoder,
    adapter,
    token_ids,
    memory,
    padding_mask=None,
    query_mask=None,
    content_mask=None,
):
    """`PARSeqDecoder.call` with `adapter` after the token lookup.

    Written with ops that also build a functional graph: the position
    queries are looked up by positions derived from `token_ids` (a lookup
    by a constant would be evaluated once, when the graph is built, and
    keep the table's values of that moment).
    """
    tokens = decoder.hidden_dim**0.5 * adapter(
        decoder.token_embedding(token_ids)
    )
    positions = ops.cumsum(ops.ones_like(token_ids, dtype="int32"), axis=1)
    queries = ops.take(decoder.pos_query_embeddings, positions - 1, axis=1)
    query = queries[0]
    # `<bos>` is the null context: no position is added to it.
    content = ops.concatenate(
        [tokens[:, :1], query[:, :-1] + tokens[:, 1:]], axis=1
    )
    content = decoder.dropout(content)
    query = decoder.dropout(query)
    for i, block in enumerate(decoder.decoder_layers):
        query, content = block(
            query=query,
            content=content,
            memory=memory,
            padding_mask=padding_mask,
            update_content=i < decoder.num_layers - 1,
            query_mask=query_mask,
            content_mask=content_mask,
        )
    return decoder.layer_norm(query)


def inside_decoder(decoder, modality="text"):
    """The PARSeq decoder's token stream: after `decoder.token_embedding`."""

    def apply(call, args, kwargs, adapter):
        return decoder_call(decoder, adapter, *args, **kwargs)

    return Site(
        decoder,
        apply,
        modality,
        where="inside, after the `token_embedding` of",
        sublayer="token_embedding",
    )


def image_and_text(backbone):
    # Image patches before the ViT's first block; the decoder's tokens.
    (image,) = block_input_sites(backbone.image_encoder)
    return [image.replace(modality="image"), inside_decoder(backbone.decoder)]
