"""Sites of models whose head reads a transformer encoder's tokens.

SegFormer and DepthAnything read their encoder (MiT, DINOv2) through a
sub-model over its layers; SAM's mask decoder reads ViTDet's image
embeddings and the prompt encoder's tokens; D-FINE's hybrid encoder
flattens CNN feature maps into tokens inside its call. Each function is
`sites(backbone)` for `families.py`.
"""

from keras_adalink.sites.rule import block_input_sites
from keras_adalink.sites.rule import inside_model
from keras_adalink.sites.site import Site


def encoder_pyramid(backbone):
    # SegFormer, DepthAnything: the head reads its image encoder's (MiT's,
    # DINOv2's) pyramid through `feature_extractor`, a sub-model over the
    # encoder's own layers, replayed with the encoder's first block
    # adapted (the site the encoder alone gets).
    (inner,) = block_input_sites(backbone.image_encoder)
    return [inside_model(backbone.feature_extractor, inner, "image")]


def after_output(layer, key, modality):
    """Adapt output `key` of a call of `layer` that returns a dict."""

    def apply(call, args, kwargs, adapter):
        outputs = dict(call(*args, **kwargs))
        return {**outputs, key: adapter(outputs[key])}

    return Site(layer, apply, modality, where=f"after (its `{key}`)")


def image_and_prompt(backbone):
    # SAM: image patches before the ViTDet encoder's first block; the
    # prompt encoder's sparse (point and box) tokens, which the task's
    # mask decoder reads into its two-way transformer.
    (image,) = block_input_sites(backbone.image_encoder)
    prompt = after_output(
        backbone.prompt_encoder, "prompt_sparse_embeddings", "prompt"
    )
    return [image.replace(modality="image"), prompt]


def detection_encoder(backbone):
    # D-FINE: its hybrid encoder flattens each feature map it encodes
    # (levels `encode_proj_layers`) into tokens inside its Python call; the
    # adapter acts per token, so adapting those maps (channels last) before
    # the call adapts exactly the tokens its transformer layers read.
    encoder = backbone.encoder
    if encoder.data_format != "channels_last":
        raise ValueError(
            "keras_adalink adapts DFineBackbone's encoder tokens on its "
            "channels-last feature maps; this one is channels_first. Build "
            "it with data_format='channels_last'."
        )
    levels = set(encoder.encode_proj_layers)

    def apply(call, args, kwargs, adapter):
        kwargs = dict(kwargs)
        maps = args[0] if args else kwargs.pop("inputs_embeds")
        maps = [adapter(m) if i in levels else m for i, m in enumerate(maps)]
        return call(maps, *args[1:], **kwargs)

    return [Site(encoder, apply, "image", where="before")]
