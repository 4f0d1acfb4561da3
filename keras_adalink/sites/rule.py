"""The rule: where the adapter goes, read off a backbone's functional graph.

Found by object, never by class name or generated op name:

- `"token_embedding"`: the output of the layer that reads the `token_ids`
  input (`*token_ids` in encoder-decoders), before positions, segments and
  the embedding LayerNorm are added. A table shared by two stacks (BART)
  is adapted at every lookup. In `TokenAndPositionEmbedding` the adapter
  goes between the token lookup and the position add.
- `"block_input"`: the input of the first block of the stack (the public
  list attribute of blocks, `transformer_layers` and the like), after the
  embedding stage has run. Where the graph keeps the stack inside one layer
  (ViT, DeiT, DINOv2), that layer's input; where blocks are called one by
  one but kept in no public list (ViTDet, MiT), the first of the
  repeated class that holds the most weights. An encoder-decoder's decoder
  is an optional second site.
- Two-tower models (a `vision_encoder` and a `text_encoder` sub-model): the
  same rule inside each tower.
"""

import collections

import keras
import keras_hub

from keras_adalink import graph
from keras_adalink.sites.site import Site
from keras_adalink.sites.site import after_layer
from keras_adalink.sites.site import before_layer
from keras_adalink.sites.site import inside_token_and_position

# A block holds its attention and feed-forward weights: at least this many.
# Norms, projections and embeddings, which repeat too, hold two or fewer.
_BLOCK_MIN_WEIGHTS = 4

# Tower attribute: the modality of the tokens it embeds.
TOWERS = {"vision_encoder": "image", "text_encoder": "text"}


def readers(backbone, input_suffix):
    """Layers whose graph call reads an input named `*input_suffix`."""
    inputs = backbone.input
    named = inputs if isinstance(inputs, dict) else {inputs.name: inputs}
    wanted = {id(t) for k, t in named.items() if k.endswith(input_suffix)}
    found = []
    for layer in backbone.layers:
        for tensors, _, _ in graph.calls(layer):
            if any(id(t) in wanted for t in tensors) and layer not in found:
                found.append(layer)
    return found


def _float_sequence_output(layer):
    for _, _, outputs in graph.calls(layer):
        outputs = keras.tree.flatten(outputs)
        if outputs and "float" in str(outputs[0].dtype):
            return len(outputs[0].shape) == 3
    return False


def _table(backbone, found):
    """The one embedding layer among `found` (None if none or several)."""
    # The backbone's own `token_embedding` wins over auxiliary tables that
    # read the ids too (Gemma4's per-layer input embeddings).
    own = getattr(backbone, "token_embedding", None)
    if own is not None and any(layer is own for layer in found):
        return own
    kinds = (keras.layers.Embedding, keras_hub.layers.TokenAndPositionEmbedding)
    tables = [layer for layer in found if isinstance(layer, kinds)]
    # No table reads the ids itself: a composite embedding layer does.
    candidates = tables or [
        layer for layer in found if _float_sequence_output(layer)
    ]
    return candidates[0] if len(candidates) == 1 else None


def token_embedding_sites(backbone):
    """The layer that looks `token_ids` up, adapted at every lookup.

    An encoder-decoder with a table per stack (T5Gemma) has the encoder's as
    its site and the decoder's as an optional second one.
    """
    encoder = _table(backbone, readers(backbone, "encoder_token_ids"))
    decoder = _table(backbone, readers(backbone, "decoder_token_ids"))
    if encoder is not None and decoder is not None and encoder is not decoder:
        return [
            after_layer(encoder, "encoder", every_call=True),
            after_layer(decoder, "decoder", optional=True, every_call=True),
        ]
    table = _table(backbone, readers(backbone, "token_ids"))
    if table is None:
        raise ValueError(
            f"{type(backbone).__name__} has no single layer that looks "
            "`token_ids` up (image and audio models have none); use "
            "insertion='block_input'."
        )
    if isinstance(table, keras_hub.layers.TokenAndPositionEmbedding):
        return [inside_token_and_position(table)]
    return [after_layer(table, every_call=True)]


def _layer_lists(owner):
    """`owner`'s public attributes that hold a list of layers."""
    found = {}
    for key, value in vars(owner).items():
        if key.startswith("_") or not isinstance(value, (list, tuple)):
            continue
        first = value[0] if value else None
        # ALBERT groups its (shared) layers: `transformer_layers[group][i]`.
        if isinstance(first, (list, tuple)):
            first = first[0] if first else None
        if isinstance(first, keras.layers.Layer):
            found[key] = first
    return found


def _stacks(backbone):
    """Public attributes holding the list of blocks: `{name: first block}`."""
    in_graph = {id(layer) for layer in backbone.layers}
    return {
        key: first
        for key, first in _layer_lists(backbone).items()
        if id(first) in in_graph
    }


def _graph_layers(backbone):
    # Inputs and towers (sub-backbones) are not blocks.
    skip = (keras.layers.InputLayer, keras_hub.models.Backbone)
    return [layer for layer in backbone.layers if not isinstance(layer, skip)]


def _packed_stack(backbone):
    """The one graph layer that holds a list of blocks itself (ViT)."""
    holders = [
        layer
        for layer in _graph_layers(backbone)
        if not isinstance(layer, keras.Model) and _layer_lists(layer)
    ]
    return holders[0] if len(holders) == 1 else None


def _repeated_blocks(backbone):
    """Graph layers of the class called two times at least whose layers
    hold the most weights together: the blocks, which hold the bulk of a
    transformer's weights (patch embeddings and norms repeat too)."""
    by_class = collections.defaultdict(list)
    for layer in _graph_layers(backbone):
        if len(layer.weights) >= _BLOCK_MIN_WEIGHTS:
            by_class[type(layer)].append(layer)
    repeated = [layers for layers in by_class.values() if len(layers) > 1]
    return max(
        repeated,
        key=lambda layers: sum(len(layer.weights) for layer in layers),
        default=[],
    )


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
    packed = None if stacks else _packed_stack(backbone)
    if packed is not None:
        return [before_layer(packed)]
    repeated = [] if stacks else _repeated_blocks(backbone)
    if repeated:
        return [before_layer(repeated[0])]
    raise ValueError(
        f"keras_adalink found no block stack in {type(backbone).__name__} "
        "(a public list of the layers its graph calls, like "
        f"`transformer_layers`; found {sorted(stacks) or 'none'}), so it "
        "does not know where to insert the adapter. docs/coverage.md lists "
        "every KerasHub backbone."
    )


def _flat_layers(value):
    found = []
    for item in value:
        if isinstance(item, (list, tuple)):
            found += _flat_layers(item)
        elif isinstance(item, keras.layers.Layer):
            found.append(item)
    return found


def blocks(backbone):
    """Every block of `backbone`'s stacks (both towers' for two towers),
    found as the sites are: the public lists of blocks, the list inside a
    packed stack layer, or the repeated blocks. Empty if none is found."""
    towers = two_towers(backbone)
    if towers is not None:
        return [block for tower in towers.values() for block in blocks(tower)]
    in_graph = {id(layer) for layer in backbone.layers}
    found = []
    for key in _stacks(backbone):
        found += [
            block
            for block in _flat_layers(getattr(backbone, key))
            if id(block) in in_graph
        ]
    if found:
        return list({id(b): b for b in found}.values())
    packed = _packed_stack(backbone)
    if packed is not None:
        lists = [getattr(packed, key) for key in _layer_lists(packed)]
        return max((_flat_layers(v) for v in lists), key=len, default=[])
    return _repeated_blocks(backbone)


def rule_sites(backbone, insertion):
    """The rule's sites for `insertion` (towers: the rule in each)."""
    if two_towers(backbone) is not None:
        return tower_sites(backbone, insertion)
    if insertion == "token_embedding":
        return token_embedding_sites(backbone)
    return block_input_sites(backbone)


# --- Two towers: a site inside each. ---


def two_towers(backbone):
    """`{modality: tower}` for a two-tower model, else None."""
    in_graph = {id(layer) for layer in backbone.layers}
    found = {
        modality: getattr(backbone, name, None)
        for name, modality in TOWERS.items()
    }
    if all(
        isinstance(tower, keras.Model) and id(tower) in in_graph
        for tower in found.values()
    ):
        return found
    return None


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
        return graph.replay(model, inputs, call_function)

    return Site(model, apply, modality, where="inside", inner=inner)


def tower_sites(backbone, insertion):
    found = []
    for modality, tower in two_towers(backbone).items():
        # A vision tower has no token lookup: its first block.
        kind = insertion if modality == "text" else "block_input"
        (inner,) = rule_sites(tower, kind)
        found.append(inside_model(tower, inner, modality))
    return found
