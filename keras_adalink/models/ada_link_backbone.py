import keras
from keras_hub.models import Backbone

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
            `keras_adalink.insertion_points`. Defaults to
            `"token_embedding"`.
        **kwargs: other `keras_hub.models.Backbone` arguments.

    Example:
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32)
    >>> adapted = AdaLinkBackbone(backbone, keras_adalink.AdaLink(rank=4))
    >>> len(adapted.trainable_weights)
    2
    """

    def __init__(
        self, backbone, adapter, insertion="token_embedding", **kwargs
    ):
        layer, apply = find_insertion_point(backbone, insertion)
        backbone.trainable = False

        inputs = {
            name: keras.Input(
                shape=tensor.shape[1:], dtype=tensor.dtype, name=name
            )
            for name, tensor in backbone.input.items()
        }
        adapter_kwargs = {}
        if isinstance(adapter, TaskRouter):
            inputs["task_id"] = keras.Input(
                shape=(), dtype="int32", name="task_id"
            )
            adapter_kwargs["task_id"] = inputs["task_id"]
        if isinstance(adapter, ModalityRouter) and adapter.layout is None:
            inputs["modality_ids"] = keras.Input(
                shape=(None,), dtype="int32", name="modality_ids"
            )
            adapter_kwargs["modality_ids"] = inputs["modality_ids"]

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

        outputs = _rerun_graph(
            backbone, {k: inputs[k] for k in backbone.input}, call_function
        )
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
        self.token_embedding = backbone.token_embedding
        # Forward the wrapped backbone's plain hyperparameters (`hidden_dim`,
        # `cls_token_index`, ...) so tasks and user code read them as usual.
        for key, value in vars(backbone).items():
            plain = isinstance(value, (bool, int, float, str, type(None)))
            if plain and not key.startswith("_") and not hasattr(self, key):
                setattr(self, key, value)

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
