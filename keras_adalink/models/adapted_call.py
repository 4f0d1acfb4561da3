"""The adapter as seen by code that calls backbone layers directly."""

from keras import ops

from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter
from keras_adalink.sites.site import after_layer


class Routing:
    """Ids for direct calls, set around a call by `AdaLinkBackbone.routing`."""

    task_id = None


def site_calls(adapter, site, graph_inputs, routing):
    """`(graph_call, direct_call)`: `x -> adapter(x, ...)` at one site.

    `graph_call` reads ids from the model's extra inputs. `direct_call`
    serves callers outside the graph (cached decoding); it is `None` where
    the adapter needs ids such callers cannot give (per-token
    `modality_ids`, `modality_lengths` positions).
    """
    if site.streams:
        return _stream_calls(adapter, site, graph_inputs, routing)
    if isinstance(adapter, TaskRouter):
        stacked = {"stacked": True} if site.stacked else {}

        def direct(x):
            if routing.task_id is None:
                raise NotImplementedError(
                    "TaskRouter needs `task_id` in direct layer calls such "
                    "as `CausalLM.generate()`'s cached decoding. Pass "
                    "`task_id` in the generate() inputs of a model made by "
                    "`keras_adalink.adapt` (after `load_model`, call "
                    "`keras_adalink.reattach(model)` once), or wrap "
                    "calls in `backbone.routing(task_id)`."
                )
            return adapter(x, task_id=routing.task_id, **stacked)

        def graph_call(x):
            return adapter(x, task_id=graph_inputs["task_id"], **stacked)

        return graph_call, direct
    if isinstance(adapter, ModalityRouter):
        if site.modality is None:
            graph = {}
            if "modality_ids" in graph_inputs:
                graph = {"modality_ids": graph_inputs["modality_ids"]}
            return lambda x: adapter(x, **graph), None
        if site.modality not in adapter.modalities:
            raise ValueError(
                f"This insertion point feeds '{site.modality}' tokens, but "
                f"the ModalityRouter's modalities are {adapter.modalities}."
            )
        call = lambda x: adapter(x, modality=site.modality)  # noqa: E731
        return call, call
    return adapter, adapter


def _stream_calls(adapter, site, graph_inputs, routing):
    """`site_calls` of a site whose tokens carry their streams' ids:
    `call(x, ids)`, `ids` indexing into `site.streams`. A ModalityRouter
    routes each token to its stream's module; other adapters ignore ids."""
    if isinstance(adapter, ModalityRouter):
        missing = [m for m in site.streams if m not in adapter.modalities]
        if missing:
            raise ValueError(
                f"This insertion point feeds {list(site.streams)} tokens, but "
                f"the ModalityRouter's modalities are {adapter.modalities}."
            )
        table = [adapter.modalities.index(m) for m in site.streams]

        def routed(x, ids):
            index = ops.take(ops.convert_to_tensor(table, "int32"), ids)
            return adapter(x, modality_ids=index)

        return routed, routed
    graph, direct = site_calls(
        adapter, site.replace(streams=()), graph_inputs, routing
    )
    return (lambda x, ids: graph(x)), (lambda x, ids: direct(x))


class AdaptedCall:
    """The insertion-site layer, with the adapter, for direct callers.

    KerasHub's `CausalLM.call_with_cache` (the cached decoding loop of
    `generate()`) calls `backbone.token_embedding` and
    `backbone.transformer_layers` itself instead of running the functional
    graph. On an `AdaLinkBackbone` those attributes hand out this object,
    which applies the adapter exactly as the graph does. `reverse=True`
    calls (the tied output projection) go to the original layer, so logits
    keep using the original vocabulary table. A site inside the layer
    hands out its `sublayer` adapted (PARSeq's `decoder.token_embedding`,
    which `PARSeqCausalLM.call_with_cache` calls itself). Everything else
    is read from the wrapped layer.
    """

    def __init__(self, site, direct_call, adapter_name):
        self.layer = site.layer
        self._apply = site.apply
        self._sublayer = site.sublayer
        self._direct_call = direct_call
        self._adapter_name = adapter_name

    def __call__(self, *args, **kwargs):
        if kwargs.get("reverse"):
            return self.layer(*args, **kwargs)
        if self._direct_call is None:
            raise NotImplementedError(
                f"{self._adapter_name} needs per-token ids (modality_ids or "
                "`modality_lengths` positions) that direct layer calls such as "
                "`CausalLM.generate()`'s cached decoding do not pass. Use a "
                "single `AdaLink`, a `TaskRouter`, or on PaliGemma a "
                "ModalityRouter at insertion='token_embedding' for "
                "generation, or call the model on its inputs."
            )
        return self._apply(self.layer, args, kwargs, self._direct_call)

    def __getattr__(self, name):
        if name == "layer":
            raise AttributeError(name)
        if name and name == self.__dict__.get("_sublayer"):
            inner = after_layer(getattr(self.layer, name))
            return AdaptedCall(inner, self._direct_call, self._adapter_name)
        return getattr(self.layer, name)
