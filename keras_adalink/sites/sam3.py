"""SAM3: one site inside each of its subclassed encoders.

`SAM3PromptableConceptBackbone`'s graph calls its vision encoder
(`SAM3VisionEncoder`) and its text encoder (`SAM3TextEncoder`) as one layer
each; both embed inside their Python calls, so the graph holds no tensor of
either stream before the encoders' first transformer layers. Each site here
replaces the graph's call of one encoder with a mirror of its call, split
in two sub-models at the site (the embedding stage, then the layers after
it), with the adapter between them in the adapted graph itself, where the
router reads its ids (`task_id`) like at any other site. The sub-models
run the encoder's own sublayers (its weights stay the frozen ones; nothing
is changed on the model); two sub-models, because one graph cannot hold
both encoders' sublayers (each has a `layer_norm`). The mirrors follow
KerasHub 0.32; tests check that each equals its encoder at init.

Sites: image patches (after the ViT's pre-norm, positions added) before
its first layer, at either insertion point; text tokens after the token
lookup (`token_embedding`, before positions) or, with positions, before
the first text layer (`block_input`).
"""

import keras
from keras import ops

from keras_adalink.sites.site import Site


def _sub_model(name, inputs, body):
    """`body` over fresh inputs shaped like `inputs`, as a model called on
    `inputs`; on tensors (a direct call of the encoder), `body` itself."""
    if not any(isinstance(t, keras.KerasTensor) for t in inputs):
        return body(*inputs)
    fresh = [
        keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"{name}_{i}")
        for i, t in enumerate(inputs)
    ]
    return keras.Model(fresh, body(*fresh), name=name)(list(inputs))


def _image_site(encoder):
    vit = encoder.backbone  # SAM3ViTEncoder, then the FPN `vision_neck`.
    height = encoder.image_shape[0] // encoder.patch_size
    width = encoder.image_shape[1] // encoder.patch_size
    grid = (-1, height, width, encoder.hidden_dim)
    tokens = (-1, height * width, encoder.hidden_dim)

    def embed(pixels):
        x = ops.reshape(vit.embeddings(pixels), grid)
        return ops.reshape(vit.layer_norm(x), tokens)

    def blocks(x):
        x = ops.reshape(x, grid)
        for layer in vit.layers:
            x = layer(x)
        return encoder.vision_neck(x)

    def apply(call, args, kwargs, adapter):
        x = _sub_model(f"{encoder.name}_embeddings", [args[0]], embed)
        return _sub_model(f"{encoder.name}_blocks", [adapter(x)], blocks)

    first = vit.layers[0].name
    return Site(encoder, apply, "image", where=f"before `{first}` inside")


def _text_site(encoder, insertion):
    embedding = encoder.embedding  # TokenAndPositionEmbedding

    def embed(token_ids):
        if insertion == "token_embedding":
            return embedding.token_embedding(token_ids)
        return embedding(token_ids)

    def blocks(x, padding_mask):
        if insertion == "token_embedding":
            x = x + embedding.position_embedding(x)
        # `create_bidirectional_mask` of KerasHub's sam3_utils (a tile to
        # `[batch, 1, length, length]`), by broadcasting: a symbolic tile
        # cannot repeat by the unknown length.
        rows = ops.cast(ops.ones_like(x[:, None, :, :1]), "bool")
        mask = ops.logical_and(padding_mask[:, None, None, :], rows)
        for layer in encoder.encoder_layers:
            x = layer(x, mask)
        return encoder.layer_norm(x)

    def apply(call, args, kwargs, adapter):
        args = [*args, *kwargs.values()]
        x = _sub_model(f"{encoder.name}_embeddings", [args[0]], embed)
        return _sub_model(
            f"{encoder.name}_blocks", [adapter(x), args[1]], blocks
        )

    if insertion == "token_embedding":
        where = "after `token_embedding` inside"
    else:
        where = f"before `{encoder.encoder_layers[0].name}` inside"
    return Site(encoder, apply, "text", where=where)


def sam3_sites(insertion):
    """The sites of a `SAM3PromptableConceptBackbone` for `insertion`."""

    def sites(backbone):
        return [
            _image_site(backbone.vision_encoder),
            _text_site(backbone.text_encoder, insertion),
        ]

    return sites
