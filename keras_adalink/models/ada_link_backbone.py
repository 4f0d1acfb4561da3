import keras
from keras_hub.models import Backbone

from keras_adalink.insertion_points import default_insertion
from keras_adalink.insertion_points import find_insertion_point
from keras_adalink.layers import ModalityRouter
from keras_adalink.layers import TaskRouter


def _rerun_graph(model, inputs, call_function):
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


def _needs_call_inputs(adapter):
    """Whether the adapter reads a model input besides the embeddings."""
    return isinstance(adapter, TaskRouter) or isinstance(
        adapter, ModalityRouter
    )


class AdaptedCall:
    """The insertion-point layer, with the adapter, for direct callers.

    KerasHub's `CausalLM.call_with_cache` (the cached decoding loop of
    `generate()`) calls `backbone.token_embedding` and
    `backbone.transformer_layers` itself instead of running the functional
    graph. On an `AdaLinkBackbone` those attributes hand out this object,
    which applies the adapter exactly as the graph does. `reverse=True`
    calls (the tied output projection) go to the original layer, so logits
    keep using the original vocabulary table. Everything else is read from
    the wrapped layer.
    """

    def __init__(self, layer, apply, adapter, direct):
        self.layer = layer
        self._apply = apply
        self._adapter = adapter
        self._direct = direct

    def __call__(self, *args, **kwargs):
        if kwargs.get("reverse"):
            return self.layer(*args, **kwargs)
        if not self._direct:
            raise NotImplementedError(
                f"{type(self._adapter).__name__} needs per-example ids "
                "(task_id / modality_ids) that direct layer calls such as "
                "`CausalLM.generate()`'s cached decoding do not pass. Use "
                "a single `AdaLink` for generation, or call the model on "
                "its inputs."
            )
        return self._apply(self.layer, args, kwargs, self._adapter)

    def __getattr__(self, name):
        if name == "layer":
            raise AttributeError(name)
        return getattr(self.layer, name)


@keras.saving.register_keras_serializable(package="keras_adalink")
class AdaLinkBackbone(Backbone):
    """A frozen KerasHub backbone with an AdaLink layer spliced in.

    Rebuilds the backbone's functional graph over the backbone's own layers
    (weights are shared, not copied) with `adapter` applied at `insertion`:
    `embeddings -> adapter -> frozen transformer blocks`. The backbone is
    frozen; only the adapter trains. Inputs and outputs are the backbone's,
    plus an int `task_id` input (`[batch]`) for a `TaskRouter` and an int
    `modality_ids` input (`[batch, sequence]`) for a `ModalityRouter` without
    a static layout. Usually made by `keras_adalink.adapt()`.

    Args:
        backbone: `keras_hub.models.Backbone`. The model to adapt; it is
            frozen in place.
        adapter: `AdaLink`, `TaskRouter` or `ModalityRouter`. The adapter
            layer; name it so that its name contains `"adalink"`.
        insertion: str. `"token_embedding"` or `"block_input"`; see
            `keras_adalink.insertion_points`. Defaults to `None`: the
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
        layer, apply = find_insertion_point(backbone, insertion)
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
        if isinstance(adapter, ModalityRouter) and adapter.layout is None:
            extra["modality_ids"] = keras.Input(
                shape=(None,), dtype="int32", name="modality_ids"
            )
        adapter_kwargs = dict(extra)
        inputs = graph_inputs
        if extra:
            if not isinstance(inputs, dict):
                inputs = {graph_inputs.name: graph_inputs}
            inputs = {**inputs, **extra}

        inserted = []

        def call_function(graph_layer, *args, **kwargs):
            if graph_layer is not layer or inserted:
                return graph_layer(*args, **kwargs)
            inserted.append(True)
            return apply(
                graph_layer,
                args,
                kwargs,
                lambda x: adapter(x, **adapter_kwargs),
            )

        outputs = _rerun_graph(backbone, graph_inputs, call_function)
        if not inserted:
            raise ValueError(
                f"Could not find the '{insertion}' insertion point in the "
                f"graph of {type(backbone).__name__}: layer '{layer.name}' "
                "is not called there."
            )
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.backbone = backbone
        self.adapter = adapter
        self.insertion = insertion
        self._forward_attributes(
            backbone,
            AdaptedCall(
                layer, apply, adapter, direct=not _needs_call_inputs(adapter)
            ),
        )

    def _forward_attributes(self, backbone, adapted_call):
        """Exposes the backbone's public attributes on this model.

        Tasks read hyperparameters (`hidden_dim`, `cls_token_index`) and,
        in `CausalLM.call_with_cache` (what `generate()` runs), call layers
        directly: `token_embedding`, `transformer_layers`, `layer_norm`.
        The layer at the insertion point is exposed as `adapted_call`, so
        that direct path gets the adapter exactly like the graph does.
        """

        def swap(value):
            if value is adapted_call.layer:
                return adapted_call
            if isinstance(value, (list, tuple)):
                return [swap(v) for v in value]
            return value

        self.token_embedding = swap(backbone.token_embedding)
        for key, value in vars(backbone).items():
            if key.startswith("_") or hasattr(self, key):
                continue
            if isinstance(value, (list, tuple)):
                # Lists of layers stay plain lists: these layers are already
                # tracked (and saved) through `self.backbone`.
                object.__setattr__(self, key, swap(list(value)))
            elif isinstance(value, (bool, int, float, str, type(None))):
                setattr(self, key, value)
            elif isinstance(value, keras.layers.Layer):
                object.__setattr__(self, key, swap(value))

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
        config = dict(config)
        for key in ("backbone", "adapter"):
            if isinstance(config[key], dict):
                config[key] = keras.layers.deserialize(config[key])
        return super().from_config(config)
