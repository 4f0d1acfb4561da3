"""Where AdaLink goes in a KerasHub backbone, found from the model itself.

An insertion point is found by object (a layer of the backbone's functional
graph), never by class name or generated op name:

- `"token_embedding"`: the output of the layer that reads the `token_ids`
  input (`*token_ids` in encoder-decoders), before positions, segments and
  the embedding LayerNorm are added. The adapter then acts on vocabulary
  rows only, so it can be folded into the vocabulary table. A table shared
  by two stacks (BART) is adapted at every lookup, in the graph and in
  cached decoding alike. In `TokenAndPositionEmbedding` the adapter goes
  between the token lookup and the position add.
- `"block_input"`: the input of the first block of the stack (the public
  list attribute of blocks, `transformer_layers` and the like), after the
  embedding stage (LayerNorm, dropout, projection) has run. Vision encoders
  that keep the stack in one graph layer (ViT, DeiT, DINOv2: an `...Encoder`
  called once) are adapted at that layer's input: patches, class token and
  positions. In an
  encoder-decoder the encoder's first block; the decoder's first block is
  an optional second site, adapted when a `ModalityRouter` names
  `"decoder"` (`modalities=["encoder", "decoder"]`).

Two-tower models (CLIP, SigLIP, MetaCLIP 2: a `vision_encoder` and a
`text_encoder` sub-model) get one site inside each tower, found by the same
rule in the tower: the text tower's token lookup (or first block), the
vision tower's first block (patches, class token, positions).

`EXCEPTIONS` lists the few families that need more than this rule, each
with its reason, and `REFUSED` the backbones with no place for the method,
each with its reason. Everything else is found by the rule, so families
added to KerasHub after this file was written are adapted too.
"""

import collections
import inspect

import keras
import keras_hub

INSERTIONS = ("token_embedding", "block_input")

# `apply(call, args, kwargs, adapter)` replaces a graph call
# `call(*args, **kwargs)` of `layer`: its first call, or every call where
# `every_call` (a table shared by two stacks). `modality` names the tokens it
# sees (None: any, routed by ids or layout). An `optional` site is adapted
# only by a ModalityRouter that names its modality (a decoder stack).
# `where` says it in words: "after", "before" or "inside" the layer. A
# `tower` site is a sub-model (CLIP's towers) replayed with its own site
# `inner` inside. A site that is not `per_example` sees rows that are not
# the batch's (VideoPrism's frames), so it cannot be routed by task.
Site = collections.namedtuple(
    "Site",
    [
        "layer",
        "apply",
        "modality",
        "optional",
        "every_call",
        "where",
        "tower",
        "inner",
        "per_example",
    ],
    defaults=[None, False, False, "after", False, None, True],
)


def _first_output(outputs, adapter):
    # A composite embedding (XLNet's content-and-query) returns the token
    # stream first and auxiliary tensors after it.
    if isinstance(outputs, (list, tuple)):
        return type(outputs)([adapter(outputs[0]), *outputs[1:]])
    return adapter(outputs)


def after_layer(layer, modality=None, optional=False, every_call=False):
    """Adapt the output (the first output) of a call of `layer`."""

    def apply(call, args, kwargs, adapter):
        return _first_output(call(*args, **kwargs), adapter)

    return Site(layer, apply, modality, optional, every_call)


def before_layer(layer, modality=None, optional=False):
    """Adapt the hidden states a call of `layer` receives.

    The first positional argument, or, for blocks called with keywords only,
    the keyword argument named by `call`'s first parameter.
    """

    def apply(call, args, kwargs, adapter):
        if args:
            # T5Gemma's decoder blocks take `(hidden, encoder_output)`.
            return call(_first_output(args[0], adapter), *args[1:], **kwargs)
        key = next(iter(inspect.signature(layer.call).parameters))
        return call(**{**kwargs, key: adapter(kwargs[key])})

    return Site(layer, apply, modality, optional, where="before")


def inside_token_and_position(layer, modality=None):
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

    return Site(layer, apply, modality, every_call=True, where="inside")


def rerun_graph(model, inputs, call_function):
    """Replays `model`'s functional graph on `inputs` through its own layers.

    `keras.models.clone_model(call_function=...)` does the same replay but
    then wraps the result in a Functional over the backbone's inputs only,
    which fails once the adapter reads an extra input (`task_id`). Its
    engine, `Function._run_through_graph`, is private: this is the one place
    that uses it (tested on every backend by the TaskRouter tests).
    """
    return model._run_through_graph(
        inputs, operation_fn=lambda layer: layer, call_fn=call_function
    )


def inside_model(model, inner, modality):
    """Adapt `inner`, a site of the sub-model `model` (a tower).

    A call of the tower replays its graph with `inner` adapted; its weights
    stay the tower's own. `AdaLinkBackbone` wraps that replay in a sub-model
    of its own (two towers' layers share names), and direct calls
    (`adapted.text_encoder(...)`) run it as is.
    """

    def apply(call, args, kwargs, adapter):
        pending = [inner.layer]

        def call_function(layer, *a, **k):
            if layer is inner.layer and (pending or inner.every_call):
                pending.clear()
                return inner.apply(layer, a, k, adapter)
            return layer(*a, **k)

        inputs = args[0] if args else kwargs["inputs"]
        if isinstance(model.input, dict) and isinstance(inputs, dict):
            # By name, as a Functional call would (a replay zips in order).
            inputs = {name: inputs[name] for name in model.input}
        return rerun_graph(model, inputs, call_function)

    return Site(model, apply, modality, where="inside", tower=True, inner=inner)


# --- The rule: read the sites off the functional graph. ---


def _readers(backbone, input_suffix):
    """Layers whose graph call reads an input named `*input_suffix`."""
    inputs = backbone.input
    named = inputs if isinstance(inputs, dict) else {inputs.name: inputs}
    wanted = {id(t) for k, t in named.items() if k.endswith(input_suffix)}
    found = []
    for layer in backbone.layers:
        for node in layer._inbound_nodes:
            args = node.arguments.keras_tensors if node.arguments else []
            if any(id(t) in wanted for t in args) and layer not in found:
                found.append(layer)
    return found


def _table(backbone, readers):
    """The one embedding layer among `readers` (None if none or several)."""
    # The backbone's own `token_embedding` wins over auxiliary tables that
    # read the ids too (Gemma4's per-layer input embeddings).
    own = getattr(backbone, "token_embedding", None)
    if own is not None and any(layer is own for layer in readers):
        return own
    kinds = (keras.layers.Embedding, keras_hub.layers.TokenAndPositionEmbedding)
    tables = [layer for layer in readers if isinstance(layer, kinds)]
    # No table reads the ids itself: a composite embedding layer does.
    candidates = tables or [
        layer for layer in readers if _float_output(layer, backbone)
    ]
    return candidates[0] if len(candidates) == 1 else None


def token_embedding_sites(backbone):
    """The layer that looks `token_ids` up, adapted at every lookup.

    An encoder-decoder with a table per stack (T5Gemma) has the encoder's as
    its site and the decoder's as an optional second one.
    """
    encoder = _table(backbone, _readers(backbone, "encoder_token_ids"))
    decoder = _table(backbone, _readers(backbone, "decoder_token_ids"))
    if encoder is not None and decoder is not None and encoder is not decoder:
        return [
            after_layer(encoder, "encoder", every_call=True),
            after_layer(decoder, "decoder", optional=True, every_call=True),
        ]
    table = _table(backbone, _readers(backbone, "token_ids"))
    if table is None:
        raise ValueError(
            f"{type(backbone).__name__} has no single layer that looks "
            "`token_ids` up (image and audio models have none); use "
            "insertion='block_input'."
        )
    if isinstance(table, keras_hub.layers.TokenAndPositionEmbedding):
        return [inside_token_and_position(table)]
    return [after_layer(table, every_call=True)]


def _float_output(layer, backbone):
    for node in layer._inbound_nodes:
        outputs = keras.tree.flatten(node.outputs)
        if outputs and "float" in str(outputs[0].dtype):
            return len(outputs[0].shape) == 3
    return False


def _stacks(backbone):
    """Public attributes holding the list of blocks: `{name: first block}`."""
    graph = {id(layer) for layer in backbone.layers}
    stacks = {}
    for key, value in vars(backbone).items():
        if key.startswith("_") or not isinstance(value, (list, tuple)):
            continue
        first = value[0] if value else None
        # ALBERT groups its (shared) layers: `transformer_layers[group][i]`.
        if isinstance(first, (list, tuple)):
            first = first[0] if first else None
        if isinstance(first, keras.layers.Layer) and id(first) in graph:
            stacks[key] = first
    return stacks


_BLOCK_NAMES = ("Encoder", "Block", "Layer", "Transformer")


def _repeated_blocks(backbone):
    """Graph layers of the block class called most (two at least)."""
    by_class = collections.defaultdict(list)
    for layer in backbone.layers:
        if isinstance(
            layer, (keras.layers.InputLayer, keras_hub.models.Backbone)
        ):
            continue  # Inputs; towers (two `...Encoder` backbones).
        if type(layer).__name__.endswith(_BLOCK_NAMES):
            by_class[type(layer)].append(layer)
    blocks = max(by_class.values(), key=len, default=[])
    return blocks if len(blocks) > 1 else []


def block_input_sites(backbone):
    """The input of the first block; an encoder-decoder's decoder optional."""
    stacks = _stacks(backbone)
    encoder = [k for k in stacks if "encoder" in k]
    decoder = [k for k in stacks if "decoder" in k]
    if len(encoder) == 1 and len(decoder) == 1:
        return [
            before_layer(stacks[encoder[0]], "encoder"),
            before_layer(stacks[decoder[0]], "decoder", optional=True),
        ]
    if "transformer_layers" in stacks:
        return [before_layer(stacks["transformer_layers"])]
    if len(stacks) == 1:
        return [before_layer(*stacks.values())]
    # Vision encoders (DeiT, DINOv2) keep the whole stack in one graph
    # layer, the one `...Encoder` of the graph.
    packed = [
        layer
        for layer in backbone.layers
        if type(layer).__name__.endswith("Encoder")
    ]
    if not stacks and len(packed) == 1:
        return [before_layer(packed[0])]
    # ViTDet, MiT: blocks called one by one in the graph but kept in no
    # public list: the first of the block class the graph calls most.
    repeated = _repeated_blocks(backbone)
    if not stacks and repeated:
        return [before_layer(repeated[0])]
    raise ValueError(
        f"keras_adalink found no block stack in {type(backbone).__name__} "
        "(a public list of the layers its graph calls, like "
        f"`transformer_layers`; found {sorted(stacks) or 'none'}), so it "
        "does not know where to insert the adapter. docs/coverage.md lists "
        "every KerasHub backbone."
    )


# --- Two towers: a site inside each. ---

# Tower attribute: the modality of the tokens it embeds.
TOWERS = {"vision_encoder": "image", "text_encoder": "text"}


def two_towers(backbone):
    """`{modality: tower}` for a two-tower model, else None."""
    graph = {id(layer) for layer in backbone.layers}
    found = {
        modality: getattr(backbone, name, None)
        for name, modality in TOWERS.items()
    }
    if all(
        isinstance(tower, keras.Model) and id(tower) in graph
        for tower in found.values()
    ):
        return found
    return None


def _tower_sites(insertion):
    def sites(backbone):
        found = []
        for modality, tower in two_towers(backbone).items():
            # A vision tower has no token lookup: its first block.
            kind = insertion if modality == "text" else "block_input"
            (inner,) = find_insertion_sites(tower, kind)
            found.append(inside_model(tower, inner, modality))
        return found

    return sites


# --- The exceptions, each with its reason. ---


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


def _audio_and_text_tokens(backbone):
    # Whisper, Moonshine: audio frames after the convolutional front end
    # and positions (the first encoder block's input); text tokens at the
    # decoder's token lookup.
    audio = block_input_sites(backbone)[0]
    (text,) = token_embedding_sites(backbone)
    return [audio._replace(modality="audio"), text._replace(modality="text")]


def _audio_and_text_blocks(backbone):
    audio, text = block_input_sites(backbone)
    return [
        audio._replace(modality="audio"),
        text._replace(modality="text", optional=False),
    ]


def _video_and_text(insertion):
    # VideoPrism: video patches (with positions) before the spatial
    # encoder; the text tower's tokens where the model has one.
    def sites(backbone):
        # Rows are frames (`[batch * frames, patches, d]`), not examples.
        video = before_layer(backbone.spatial_encoder, "video")._replace(
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


# Family: (token_embedding sites, block_input sites, why the rule won't do).
# Subclasses (Llama3 of Llama) match their parent's entry.
EXCEPTIONS = {
    "PaliGemmaBackbone": (
        _image_and_text,
        block_input_sites,
        "two sites: image embeddings (vision encoder output at the LM "
        "width) and text tokens, each tagged for a ModalityRouter",
    ),
    "Gemma3Backbone": (
        _image_and_text,
        block_input_sites,
        "as PaliGemma: image embeddings are scattered into the text "
        "sequence after both lookups",
    ),
    "Gemma4Backbone": (
        _image_and_text,
        block_input_sites,
        "as PaliGemma, with audio: image and audio embeddings (each "
        "encoder's output, at the LM width) are scaled and interleaved "
        "into the text after the token lookup",
    ),
    **dict.fromkeys(
        ["WhisperBackbone", "MoonshineBackbone"],
        (
            _audio_and_text_tokens,
            _audio_and_text_blocks,
            "audio frames and text tokens each get a site, tagged for a "
            "ModalityRouter; the rule alone would adapt the text side only",
        ),
    ),
    "VideoPrismBackbone": (
        _video_and_text("token_embedding"),
        _video_and_text("block_input"),
        "video patches enter a spatial encoder, then a temporal one: the "
        "site is the spatial encoder's input; the text tower, if any, gets "
        "its own",
    ),
    "T5Backbone": (
        block_input_sites,
        block_input_sites,
        "one table for both stacks and an embedding stage that is only "
        "lookup + dropout: both points are the first encoder block",
    ),
}

# Backbones the method does not apply to (yet), with the reason.
_IMAGE = (
    "a convolutional image model: no token sequence enters a stack of "
    "blocks, so there is no embedding/block boundary to adapt"
)
_GENERATIVE_VISION = (
    "an image generation/detection/segmentation pipeline, not a "
    "transformer over an embedded input sequence"
)
REFUSED = {
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
            "FeaturePyramidBackbone",
        ],
        _IMAGE,
    ),
    **dict.fromkeys(
        [
            "BASNetBackbone",
            "DFineBackbone",
            "DeepLabV3Backbone",
            "DepthAnythingBackbone",
            "FluxBackbone",
            "RetinaNetBackbone",
            "SAMBackbone",
            "SAM3PromptableConceptBackbone",
            "StableDiffusion3Backbone",
        ],
        _GENERATIVE_VISION,
    ),
    "BLIP2Backbone": (
        "a vision encoder, a Q-Former and a language model, three nested "
        "models whose image tokens reach the LM width only inside the "
        "language model's graph, and whose generate() rebuilds that path "
        "from attributes; its per-modality sites are not mapped yet"
    ),
    "Gemma3nBackbone": (
        "a model whose text, image and audio embeddings are made and "
        "merged inside one layer's Python call (its multimodal embedding "
        "processor), and whose first block sees AltUp's stacked copies: "
        "no graph tensor holds one modality's tokens, so there is no "
        "per-modality site to splice into"
    ),
    "PARSeqBackbone": (
        "a text recogniser whose text stream (token and position-query "
        "embeddings) exists only inside its decoder's Python call, so only "
        "the image half would be adaptable"
    ),
    "SegFormerBackbone": (
        "a segmentation head over a MiT encoder that it calls through a "
        "nested model sharing MiT's layers; adapt the `MiTBackbone` "
        "(`image_encoder`) itself, which keras_adalink covers"
    ),
    "EdRecBackbone": (
        "a recommendation model over item-id features, not a token "
        "sequence into transformer blocks"
    ),
}


# KerasCV models refused, by class name (KerasCV's ViTDet, VideoSwin and
# MiT backbones adapt by the rule; its CLIP by keras_cv_sites).
KERAS_CV_REFUSED = {}

# Families adapted text-only: why their vision/audio paths are not mapped.
TEXT_ONLY = {
    "Qwen3_5Backbone": (
        ": KerasHub's own generate() with images fails on jax (its vision "
        "encoder reads `image_grid_thw` as numpy inside the jitted "
        "function), and the backbone fills empty image inputs in an "
        "overridden `__call__` that a rebuilt graph cannot carry"
    ),
    "T5Gemma2Backbone": (
        " yet: its image embeddings join the encoder's tokens after the "
        "end-of-image embedding ops; a site after its vision encoder would "
        "fit, beside the encoder and decoder tables, but is not built and "
        "tested yet"
    ),
}


def _lookup(table, backbone):
    for klass in type(backbone).__mro__:
        if klass.__name__ in table:
            return table[klass.__name__]
    return None


def _points(backbone):
    # By the class's own name: a refused base (FeaturePyramidBackbone) has
    # subclasses that adapt (DINOV2).
    keras_cv = type(backbone).__module__.startswith("keras_cv.")
    reason = (KERAS_CV_REFUSED if keras_cv else REFUSED).get(
        type(backbone).__name__
    )
    if reason is not None:
        raise ValueError(
            f"keras_adalink does not adapt {type(backbone).__name__}: it is "
            f"{reason}. docs/coverage.md lists every KerasHub backbone."
        )
    if keras_cv:
        from keras_adalink.keras_cv_sites import KERAS_CV_EXCEPTIONS

        exception = KERAS_CV_EXCEPTIONS.get(type(backbone).__name__)
    else:
        exception = _lookup(EXCEPTIONS, backbone)
    if exception is not None:
        return exception[:2]
    if two_towers(backbone) is not None:
        return _tower_sites("token_embedding"), _tower_sites("block_input")
    # The rule sees the text path only: image or audio embeddings merged
    # into the sequence later would bypass the adapter.
    towers = [
        name
        for name in ("vision_encoder", "audio_encoder")
        if getattr(backbone, name, None) is not None
    ]
    if towers:
        reason = _lookup(TEXT_ONLY, backbone) or ""
        raise ValueError(
            f"keras_adalink adapts {type(backbone).__name__} text-only: "
            f"this one has a {' and '.join(towers)} whose embeddings "
            "join the sequence after the token lookup, and per-modality "
            f"sites for it are not mapped{reason}. Build it without them "
            "to adapt the text path."
        )
    return token_embedding_sites, block_input_sites


def default_insertion(backbone):
    """`"token_embedding"` where the model has one, else `"block_input"`.

    On text models the token-embedding point measured better than the block
    input and can be folded into the vocabulary table (docs/concepts.md).
    """
    token_sites, _ = _points(backbone)
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
    token_sites, block_sites = _points(backbone)
    if insertion == "token_embedding":
        return token_sites(backbone)
    return block_sites(backbone)


def default_modalities(backbone, insertion=None):
    """The modalities of `backbone`'s sites, when there is more than one.

    `["image", "text"]` for PaliGemma or Gemma3 with a vision encoder: the
    paper adapts each modality with its own module, so `adapt()` makes a
    `ModalityRouter` over them by default. `None` for one-modality models
    (optional sites, such as a decoder stack, do not count).
    """
    insertion = insertion or default_insertion(backbone)
    found = []
    for site in find_insertion_sites(backbone, insertion):
        if site.modality and not site.optional and site.modality not in found:
            found.append(site.modality)
    return found if len(found) > 1 else None
