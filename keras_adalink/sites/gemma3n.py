"""Gemma3n: text, image and audio tokens, merged inside one layer's call.

`Gemma3nBackbone`'s graph calls its embedding processor
(`Gemma3nMultimodalEmbeddingProcessor`) once, and that layer's Python call
looks the text tokens up, embeds the vision- and audio-vocabulary tokens,
runs the vision and audio encoders and scatters their embeddings (each at
the LM width, after its `Gemma3nMultimodalEmbedder`) into the sequence at
the image and audio tokens, then projects the per-layer inputs from the
merged sequence. No graph tensor holds one modality's tokens alone.

The merge is a per-position choice: each position of the processor's
output is exactly one stream's embedding, chosen by the token id (the same
comparisons the call makes, mirrored in `stream_ids`). AdaLink acts per
token, so adapting the merged output with each position's module equals
adapting each stream before the merge. The site is the processor's call:
its embeddings are adapted there, routed by those ids, and the per-layer
inputs (which the processor projects from the merged embeddings) are
projected again from the adapted ones, as its call does
(`PerLayerInputs`). The first block then sees AltUp's stacked copies of
the adapted sequence, as it would of the original.
"""

import keras
from keras import ops

from keras_adalink.sites.site import Site

# Stream order: as Gemma4's sites (image, audio, text).
_ORDER = ("image", "audio", "text")


def streams(processor):
    """The modalities `processor` merges: text, and each present encoder's."""
    present = {
        "image": processor.vision_encoder is not None
        and processor.embed_vision is not None,
        "audio": processor.audio_encoder is not None
        and processor.embed_audio is not None,
        "text": True,
    }
    return tuple(m for m in _ORDER if present[m])


def stream_ids(processor, inputs, names):
    """`[batch, sequence]` ints: each token's stream, an index into `names`.

    Mirrors the selections of `Gemma3nMultimodalEmbeddingProcessor.call`
    (KerasHub 0.32), in its order: vision-vocabulary ids, then
    audio-vocabulary ids, then the image token (where images are given),
    then the audio token (where audio is given) replace the text lookup.
    """
    ids = inputs["token_ids"]
    found = ops.full_like(ids, names.index("text"))
    vision, audio = processor.embed_vision, processor.embed_audio
    if "image" in names:
        upper = (
            audio.vocab_offset
            if audio is not None
            else vision.vocab_offset + vision.vocab_size
        )
        hard = ops.logical_and(ids >= vision.vocab_offset, ids < upper)
        found = ops.where(hard, names.index("image"), found)
    if "audio" in names:
        found = ops.where(
            ids >= audio.vocab_offset, names.index("audio"), found
        )
    if "image" in names and inputs.get("pixel_values") is not None:
        soft = ops.equal(ids, processor.image_token_id)
        found = ops.where(soft, names.index("image"), found)
    features = inputs.get("input_features")
    if (
        "audio" in names
        and features is not None
        and inputs.get("input_features_mask") is not None
        and (features.shape[2] is None or features.shape[2] > 0)
    ):
        soft = ops.equal(ids, processor.audio_token_id)
        found = ops.where(soft, names.index("audio"), found)
    return found


class PerLayerInputs(keras.layers.Layer):
    """The processor's per-layer inputs, from (adapted) merged embeddings.

    Mirrors the tail of `Gemma3nMultimodalEmbeddingProcessor.call`: the
    per-layer token embeddings of the ids in the per-layer vocabulary,
    projected with the merged embeddings through the language model's own
    methods (its weights). A layer, so the functional graph gets its output
    shape from `compute_output_spec`, as the processor does: those methods
    do not run on symbolic tensors. Holds no weights, and is not
    registered for saving: it lives only in the adapted graph, which
    `AdaLinkBackbone.from_config` builds again.
    """

    def __init__(self, language_model, **kwargs):
        super().__init__(**kwargs)
        # Bound methods: the language model's weights stay tracked (and
        # saved) through the backbone only.
        self.get_per_layer = language_model.get_per_layer_inputs
        self.project = language_model.project_per_layer_inputs
        self.vocabulary = language_model.vocab_size_per_layer_input
        self.shape_tail = (
            language_model.num_hidden_layers,
            language_model.hidden_size_per_layer_input,
        )

    def call(self, token_ids, embeddings):
        known = ops.logical_and(token_ids >= 0, token_ids < self.vocabulary)
        tokens = ops.where(known, token_ids, ops.zeros_like(token_ids))
        return self.project(embeddings, self.get_per_layer(tokens))

    def compute_output_spec(self, token_ids, embeddings):
        return keras.KerasTensor(
            (*embeddings.shape[:2], *self.shape_tail), dtype=embeddings.dtype
        )


def embedding_streams(backbone):
    """The one site of a `Gemma3nBackbone`, at either insertion point: the
    embedding processor's call, each token adapted by its stream's module
    (a stream per modality the model has)."""
    processor = backbone.embedding_processor
    names = streams(processor)
    per_layer = PerLayerInputs(
        processor.language_model,
        dtype=processor.dtype_policy,
        name="per_layer_inputs_adapted",
    )

    def apply(call, args, kwargs, adapter):
        inputs = args[0] if args else kwargs["inputs"]
        embeddings, _ = call(*args, **kwargs)
        embeddings = adapter(embeddings, stream_ids(processor, inputs, names))
        return embeddings, per_layer(inputs["token_ids"], embeddings)

    return [Site(processor, apply, where="inside", streams=names)]
