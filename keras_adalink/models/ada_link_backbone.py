import contextlib

import keras
from keras_hub.models import Backbone

from keras_adalink import graph
from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter
from keras_adalink.models.adapted_call import AdaptedCall
from keras_adalink.models.adapted_call import Routing
from keras_adalink.models.adapted_call import site_calls
from keras_adalink.models.nested import AdaptedModel
from keras_adalink.models.nested import bind_task_calls
from keras_adalink.models.nested import expanding
from keras_adalink.models.nested import site_holders
from keras_adalink.models.walk import first_nested
from keras_adalink.sites import default_insertion
from keras_adalink.sites import find_insertion_sites
from keras_adalink.sites import lookup
from keras_adalink.validation import check_inputs


def _like(tensor, name=None):
    return keras.Input(
        shape=tensor.shape[1:], dtype=tensor.dtype, name=name or tensor.name
    )


def tower_model(site, adapter, extra, routing):
    """A tower (sub-model) with its inner site adapted, as a sub-model.

    Its inputs are the tower's, as a dict, plus the router's ids (`extra`);
    replaying the tower inline instead would put two towers' layers, which
    share names (`encoder_block_0`), in one graph.
    """
    tower = site.layer
    inputs = tower.input
    if not isinstance(inputs, dict):
        # One tensor, or a list of them (`keras.Model(encoder.inputs, ...)`).
        inputs = {t.name: t for t in keras.tree.flatten(inputs)}
    inputs = {name: _like(t, name) for name, t in inputs.items()}
    ids = {name: _like(t, name) for name, t in extra.items()}
    graph_call, _ = site_calls(adapter, site, ids, routing)
    outputs = site.apply(tower, (inputs,), {}, graph_call)
    model = keras.Model(
        {**inputs, **ids}, outputs, name=f"{tower.name}_adapted"
    )
    names = list(inputs)

    def call(*args, **kwargs):
        given = args[0] if args else next(iter(kwargs.values()))
        if not isinstance(given, dict):
            given = {names[0]: given}
        return model({**given, **extra})

    return call


def site_widths(backbone, inputs, sites):
    """The embedding width each site hands the adapter, by a symbolic
    replay with an identity in the adapter's place (CLIP's towers differ:
    768 vision, 512 text)."""
    widths = []

    def record(x, *ids):
        widths.append(x.shape[-1])
        return x

    by_layer = {id(site.layer): site for site in sites}

    def call_function(layer, *args, **kwargs):
        site = by_layer.get(id(layer))
        if site is None:
            return layer(*args, **kwargs)
        return site.apply(layer, args, kwargs, record)

    holders = site_holders(backbone, sites)
    graph.replay(backbone, inputs, expanding(call_function, holders))
    return widths


def build_for_widths(adapter, backbone, inputs, sites):
    """Builds a `ModalityRouter` at the widest site when sites differ.

    Its module for a narrower modality uses the leading rows and columns
    of the stacked weights (exactly a module of that width, zero-padded).
    Other adapters need one width.
    """
    if adapter.built or len(sites) < 2:
        return
    widths = sorted(set(site_widths(backbone, inputs, sites)))
    if len(widths) < 2:
        return
    if not isinstance(adapter, ModalityRouter):
        raise ValueError(
            f"{type(backbone).__name__}'s sites have embedding widths "
            f"{widths}: a {type(adapter).__name__} holds modules of one "
            "width. Use a ModalityRouter (the default for this model): one "
            "module per modality, each at its own width."
        )
    adapter.build((None, None, widths[-1]))


def deserialize_layers(config, keys):
    """`config` with the layers serialized under `keys` rebuilt."""
    config = dict(config)
    for key in keys:
        if isinstance(config[key], dict):
            config[key] = keras.layers.deserialize(config[key])
    return config


@keras.saving.register_keras_serializable(package="keras_adalink")
class AdaLinkBackbone(Backbone):
    """A frozen KerasHub backbone with an AdaLink layer spliced in.

    Rebuilds the backbone's functional graph over the backbone's own layers
    (weights are shared, not copied) with `adapter` applied at `insertion`:
    `embeddings -> adapter -> frozen transformer blocks`. The backbone is
    frozen; only the adapter trains. Inputs and outputs are the backbone's,
    plus an int `task_id` input (`[batch]`) for a `TaskRouter` and an int
    `modality_ids` input (`[batch, sequence]`) for a `ModalityRouter` without
    static `modality_lengths`. Usually made by `keras_adalink.adapt()`.

    Args:
        backbone: `keras_hub.models.Backbone`. The model to adapt; it is
            frozen in place.
        adapter: `AdaLink`, `TaskRouter` or `ModalityRouter`. Its weights
            are named `adalink_down` / `adalink_up`, so their paths contain
            `adalink` whatever the layer is called.
        insertion: str. `"token_embedding"` or `"block_input"`; see
            `keras_adalink.sites`. Defaults to `None`: the
            family's default (`"token_embedding"` for text models,
            `"block_input"` for ViT).
        **kwargs: other `keras_hub.models.Backbone` arguments.

    Example:
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32)
    >>> adapted = AdaLinkBackbone(backbone, keras_adalink.AdaLink(rank=4))
    >>> len(adapted.trainable_weights)
    2
    """

    def __init__(self, backbone, adapter, insertion=None, **kwargs):
        if insertion is None:
            insertion = default_insertion(backbone)
        sites = [
            site
            for site in find_insertion_sites(backbone, insertion)
            if not site.optional
            or (
                isinstance(adapter, ModalityRouter)
                and site.modality in adapter.modalities
            )
        ]
        if isinstance(adapter, TaskRouter):
            frames = [s.layer.name for s in sites if not s.per_example]
            if frames:
                raise ValueError(
                    f"{type(backbone).__name__} feeds {frames} rows that are "
                    "not examples (video frames, or every image of the "
                    "batch in one row), so a TaskRouter cannot route them "
                    "by task. Use a single AdaLink or a ModalityRouter."
                )
        backbone.trainable = False

        graph_inputs = keras.tree.map_structure(
            lambda t: keras.Input(
                shape=t.shape[1:], dtype=t.dtype, name=t.name
            ),
            backbone.input,
        )
        extra = {}
        if isinstance(adapter, TaskRouter):
            extra["task_id"] = keras.Input(
                shape=(), dtype="int32", name="task_id"
            )
        routed = isinstance(adapter, ModalityRouter)
        if routed and adapter.modality_lengths is None:
            if any(s.modality is None and not s.streams for s in sites):
                extra["modality_ids"] = keras.Input(
                    shape=(None,), dtype="int32", name="modality_ids"
                )
        inputs = graph_inputs
        if extra:
            if not isinstance(inputs, dict):
                # One input, or a list of them (Gemma3n's).
                inputs = {t.name: t for t in keras.tree.flatten(inputs)}
            inputs = {**inputs, **extra}

        build_for_widths(adapter, backbone, graph_inputs, sites)
        routing = Routing()
        calls = [site_calls(adapter, s, extra, routing) for s in sites]
        towers = {
            i: tower_model(site, adapter, extra, routing)
            for i, site in enumerate(sites)
            if site.tower
        }
        by_layer = {id(site.layer): i for i, site in enumerate(sites)}
        pending = set(by_layer.values())

        def call_function(graph_layer, *args, **kwargs):
            i = by_layer.get(id(graph_layer))
            # Not a site, or a later call of a shared block (ALBERT).
            if i is None or (i not in pending and not sites[i].every_call):
                return graph_layer(*args, **kwargs)
            pending.discard(i)
            if sites[i].tower:
                return towers[i](*args, **kwargs)
            return sites[i].apply(graph_layer, args, kwargs, calls[i][0])

        holders = site_holders(backbone, sites)
        outputs = graph.replay(
            backbone, graph_inputs, expanding(call_function, holders)
        )
        if pending:
            names = [sites[i].layer.name for i in sorted(pending)]
            raise ValueError(
                f"Could not find the '{insertion}' insertion point in the "
                f"graph of {type(backbone).__name__}: layers {names} are "
                "not called there."
            )
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.backbone = backbone
        self.adapter = adapter
        self.insertion = insertion
        graph.expose_model_inputs(self, backbone)
        self._routing = routing
        adapted_calls = [
            AdaptedCall(site, direct, type(adapter).__name__)
            for site, (_, direct) in zip(sites, calls)
        ]
        holders = [AdaptedModel(m, adapted_calls) for m in holders.values()]
        self._forward_attributes(backbone, adapted_calls + holders)
        entry = lookup(type(backbone))
        bind_task_calls(self, backbone, entry.task_calls if entry else ())

    @contextlib.contextmanager
    def routing(self, task_id):
        """Task ids for direct layer calls (cached decoding) in this block.

        Graph calls read the `task_id` input instead. Used by
        `keras_adalink.reattach` around `generate_step`, where
        `task_id` is the traced generate() input.
        """
        self._routing.task_id = task_id
        try:
            yield
        finally:
            self._routing.task_id = None

    def _forward_attributes(self, backbone, adapted_calls):
        """Exposes the backbone's public attributes on this model.

        Tasks read hyperparameters (`hidden_dim`, `cls_token_index`),
        weights (`encoder_eoi_embedding`) and,
        in `CausalLM.call_with_cache` (what `generate()` runs), call layers
        directly: `token_embedding`, `transformer_layers`, `layer_norm`.
        Layers at insertion sites are exposed as their `AdaptedCall` (a
        sub-model holding sites as its `AdaptedModel`), so that direct path
        gets the adapter exactly like the graph does.
        """
        by_layer = {id(c.layer): c for c in adapted_calls}

        def swap(value):
            if id(value) in by_layer:
                return by_layer[id(value)]
            if isinstance(value, (list, tuple)):
                return [swap(v) for v in value]
            return value

        self.token_embedding = swap(getattr(backbone, "token_embedding", None))
        for key, value in vars(backbone).items():
            if key.startswith("__") or hasattr(self, key):
                continue
            if key.startswith("_"):
                if key in graph.TASK_CALLED_PRIVATE_LAYERS:
                    object.__setattr__(self, key, swap(value))
                continue
            if isinstance(value, (list, tuple)):
                # Lists of layers stay plain lists: these layers are already
                # tracked (and saved) through `self.backbone`.
                object.__setattr__(self, key, swap(list(value)))
            elif isinstance(value, (bool, int, float, str, type(None))):
                setattr(self, key, value)
            elif isinstance(value, keras.layers.Layer):
                object.__setattr__(self, key, swap(value))
            elif isinstance(value, keras.Variable):
                # A frozen weight tasks read (T5Gemma2's end-of-image
                # embedding); tracked through `self.backbone`.
                object.__setattr__(self, key, value)
            elif callable(value):  # An activation tasks read (ESM's).
                object.__setattr__(self, key, value)

    # Router ids are checked eagerly, before compiled code can't look at them.
    def fit(self, x=None, *args, **kwargs):
        check_inputs(self.adapter, x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        check_inputs(self.adapter, x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        check_inputs(self.adapter, x)
        return super().predict(x, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.layers.serialize(self.backbone),
                "adapter": keras.layers.serialize(self.adapter),
                "insertion": self.insertion,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(
            deserialize_layers(config, ("backbone", "adapter"))
        )


def find_adalink_backbone(model):
    """The `AdaLinkBackbone` inside `model` (itself, a task's, or nested)."""
    found = first_nested(model, lambda x: isinstance(x, AdaLinkBackbone))
    if found is None:
        raise ValueError(
            f"{type(model).__name__} holds no keras_adalink adapter. Call "
            "`keras_adalink.adapt(model, ...)` first."
        )
    return found
