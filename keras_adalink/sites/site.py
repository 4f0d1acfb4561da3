"""A site: one graph call of a backbone layer where the adapter acts."""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Site:
    """Where an adapter acts: a call of `layer` in the backbone's graph.

    Args:
        layer: the backbone layer (or sub-model) whose call is adapted.
        apply: `apply(call, args, kwargs, adapter)` replaces the graph call
            `call(*args, **kwargs)` of `layer` with the adapted one.
        modality: the tokens it sees (`"text"`, `"image"`, `"encoder"`...),
            or `None`: any, routed by ids or layout.
        optional: adapted only by a `ModalityRouter` that names its
            modality (a decoder stack).
        every_call: adapt every call (a table shared by two stacks), not
            only the first.
        where: `"after"`, `"before"` or `"inside"` the layer, in words.
        inner: for a tower (a sub-model replayed with a site of its own
            inside), that inner `Site`; `None` otherwise.
        per_example: rows are the batch's examples (`False` for
            VideoPrism's frames and Qwen3.5's images, all in one row,
            which cannot be routed by task).
        streams: for a layer whose one output holds several modalities'
            tokens, merged per position (Gemma3n's embedding processor),
            those modalities; `apply` then receives `adapter(x, ids)`,
            `ids` (`[batch, sequence]` ints) indexing into them.
        sublayer: for a site inside `layer`, the attribute of `layer`
            whose output the adapter takes; code that calls that sublayer
            itself (PARSeq's cached decoding calls
            `decoder.token_embedding`) gets it adapted too. `""`: none.
        stacked: rows are the batch's examples stacked in copies
            (classifier-free guidance: conditional rows, then unconditional
            ones), so a `TaskRouter` tiles its task ids in that order.
    """

    layer: Any
    apply: Callable
    modality: str | None = None
    optional: bool = False
    every_call: bool = False
    where: str = "after"
    inner: "Site | None" = None
    per_example: bool = True
    streams: tuple = ()
    sublayer: str = ""
    stacked: bool = False

    @property
    def tower(self):
        return self.inner is not None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


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
