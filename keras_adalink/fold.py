"""Folding an AdaLink into the vocabulary table for zero-overhead serving.

With the adapter right after the token lookup, every token's adapted
embedding depends only on its id: row `v` of the table becomes
`e_v + scale * (e_v @ W_down) @ W_up`, i.e. `E (I + scale * W_down W_up)`.
The folded model is the original architecture with that table: no adapter
layer, no extra compute.
"""

import inspect

import keras
import keras_hub
import numpy as np

from keras_adalink import graph
from keras_adalink.layers import AdaLink
from keras_adalink.layers import TaskRouter
from keras_adalink.models import find_adalink_backbone
from keras_adalink.models.tasks import rebuild_task
from keras_adalink.quantization import float_table
from keras_adalink.quantization import requantized
from keras_adalink.sites import find_insertion_sites

# Tasks whose outputs go through the (possibly tied) reverse projection.
_LM_TASKS = tuple(
    getattr(keras_hub.models, name)
    for name in ("CausalLM", "MaskedLM", "Seq2SeqLM")
    if hasattr(keras_hub.models, name)
)
_UNTIE_KEYS = ("tie_word_embeddings", "tie_embedding_weights")


def module_weights(adapter, task_id):
    """`(W_down, W_up)` of `adapter`'s module (a TaskRouter's `task_id`)."""
    if isinstance(adapter, TaskRouter):
        if task_id is None or not 0 <= task_id < adapter.num_tasks:
            raise ValueError(
                "A TaskRouter folds one task at a time: pass "
                f"`task_id` in [0, {adapter.num_tasks}). "
                f"Received: task_id={task_id}"
            )
        return adapter.adalink_down[task_id], adapter.adalink_up[task_id]
    if not isinstance(adapter, AdaLink):
        raise ValueError(
            f"A {type(adapter).__name__} routes tokens by modality or "
            "position, which a vocabulary table cannot express. Serve the "
            "adapted model unfolded (it costs O(N*d*r) per sequence)."
        )
    return adapter.adalink_down, adapter.adalink_up


def check_foldable(adalink_backbone):
    """Raises unless the adapter is linear and right after the one token
    lookup: then each token's adapted embedding depends only on its id
    (what `fold` and `export_peft` need)."""
    base = adalink_backbone.backbone
    table = getattr(base, "token_embedding", None)
    reason = None
    if adalink_backbone.insertion != "token_embedding":
        reason = (
            f"this one is at '{adalink_backbone.insertion}', where it sees "
            "positions, LayerNorm or patches"
        )
    else:
        other = [
            f"{site.where} `{site.layer.name}`"
            for site in find_insertion_sites(base, "token_embedding")
            if not site.optional
            and not (
                table is site.layer
                or table is getattr(site.layer, "token_embedding", 0)
            )
        ]
        if other:
            reason = (
                f"this one sits {' and '.join(other)}, not right after the "
                "one vocabulary table `token_embedding`"
            )
    if reason is not None:
        raise ValueError(
            "Only an adapter right after the token lookup can be folded "
            f"({reason}). Serve it unfolded, or adapt with "
            "insertion='token_embedding' where that is a plain lookup."
        )
    if keras.activations.serialize(adalink_backbone.adapter.activation) != (
        "linear"
    ):
        raise ValueError(
            "An adapter with an activation is not linear in the embedding, "
            "so it cannot be folded into the table. Serve it unfolded."
        )


def _untie_in_place(embedding):
    """Gives a built, tied `ReversibleEmbedding` its own output table.

    For families whose constructor hard-codes `tie_weights=True` (Gemma,
    GPT-2): the layer's `call(reverse=True)` then uses `reverse_embeddings`,
    exactly as a layer built with `tie_weights=False` would.
    """
    with graph.unlocked(embedding):
        embedding.tie_weights = False
        embedding.reverse_embeddings = embedding.add_weight(
            shape=(embedding.output_dim, embedding.input_dim),
            initializer="zeros",
            name="reverse_embeddings",
            trainable=embedding.embeddings.trainable,
        )

    def refuse_save(store):
        # A `.keras` or weights file of this model would reload as tied
        # (the class's config cannot say otherwise) and fail to load.
        raise ValueError(
            "This folded model has an output table of its own that "
            "KerasHub's config for this family cannot record, so a saved "
            "copy would not reload. Save the adapter (`save_adapter`) and "
            "fold after loading, or serve it with `export_saved_model`."
        )

    embedding.save_own_variables = refuse_save


def fold(model, task_id: int | None = None, requantize: bool = False):
    """Returns `model` without the adapter, its effect folded into the table.

    The result has the original KerasHub class (backbone or task, same
    preprocessor, head weights copied) and a token-embedding table
    `E + scale * (E @ W_down) @ W_up`; outputs equal the adapted model's to
    float32 rounding. Where input and output tables are tied and the task
    uses the output projection (causal/masked/seq2seq LMs), the folded model
    is untied so logits keep the original table: through the config where
    the family has a switch (Llama, Qwen, ...), else by giving the folded
    model's embedding layer its own output table (Gemma, GPT-2). KerasHub's
    config cannot record the latter, so such a folded model serves in
    process or through `export_saved_model`; store the adapter file, not a
    `.keras` of it.

    On a quantized backbone (`adapt(..., quantize=...)`) the folded model
    is quantized the same way. Where the table itself is float (float8,
    GPTQ and AWQ quantize only the dense layers) the fold is exact. An int8
    or int4 table cannot hold the folded values exactly: with
    `requantize=True` the table is dequantized, folded in float and
    quantized again by Keras' own `quantize` for that mode and config
    (as Keras merges LoRA into a quantized embedding), which moves outputs
    by up to one quantization step of the table; without it, fold refuses.

    Args:
        model: an adapted backbone or task (from `keras_adalink.adapt`).
        task_id: for a `TaskRouter`, which task's module to fold.
        requantize: bool. Whether to fold into an int8/int4 table by
            re-quantizing it (not exact). Defaults to `False`.

    Example:
    >>> served = keras_adalink.fold(model)  # an adapted classifier
    """
    adalink_backbone = find_adalink_backbone(model)
    check_foldable(adalink_backbone)
    down, up = module_weights(adalink_backbone.adapter, task_id)
    base = adalink_backbone.backbone
    embedding = base.token_embedding
    table = float_table(embedding)
    scale = adalink_backbone.adapter.scale
    down, up = keras.ops.convert_to_numpy(down), keras.ops.convert_to_numpy(up)
    folded_table = table + scale * (table @ down) @ up

    tied = getattr(embedding, "tie_weights", False)
    untie = tied and isinstance(model, _LM_TASKS)
    accepted = inspect.signature(type(base).__init__).parameters
    key = next((k for k in _UNTIE_KEYS if k in accepted), None)
    mode = embedding.quantization_mode
    if mode is not None and not requantize:
        raise ValueError(
            f"fold cannot be exact on this {mode} vocabulary table: the "
            f"folded table is re-quantized to {mode}, which moves outputs by "
            "up to one quantization step of the table. Pass "
            "`requantize=True` to accept that (docs/big_models.md states "
            "the error), or serve the adapter unfolded."
        )
    if untie and key is None and mode is not None:
        raise ValueError(
            f"fold cannot untie {type(base).__name__}'s {mode} table: the "
            "family ties its input and output tables in its constructor, "
            "and fold adds the output table in place only to float tables "
            "(a quantized one needs the scales Keras makes when it builds "
            "the layer). Serve the adapter unfolded, or fold on the float "
            "backbone and then quantize the folded model."
        )
    config = base.get_config()
    config.pop("name", None)
    if untie and key is not None:
        config[key] = False
    folded = type(base).from_config(config)
    if untie and key is None:
        _untie_in_place(folded.token_embedding)
    # The output table (and its scale) an untie adds: not in `base`.
    added = [
        v
        for v in folded.token_embedding.weights
        if untie and v.name.startswith("reverse_embeddings")
    ]
    if mode is not None:
        # Keras' own quantization of the folded float table, and of the
        # original table as the output table where the fold unties: what
        # `quantize(mode)` of the float folded model would store.
        values = requantized(
            embedding, folded_table, table.T if untie else None
        )
    else:
        values = {"embeddings": folded_table, "reverse_embeddings": table.T}
    table_values = {
        id(v): values[v.name]
        for v in folded.token_embedding.weights
        if v.name in values and (untie or "reverse" not in v.name)
    }
    # Same class and config: the same variables, plus the output table an
    # untie adds. Matched by path (a float8 layer built from its config
    # creates its scales in another order than `quantize` did), else in
    # order (paths can differ where sublayer names are auto-numbered).
    fresh = [v for v in folded.weights if not any(v is a for a in added)]
    by_path = {v.path: v for v in base.weights}
    if sorted(by_path) == sorted(v.path for v in fresh):
        pairs = [(v, by_path[v.path]) for v in fresh]
    else:
        pairs = zip(fresh, base.weights, strict=True)
    for variable, value in pairs:
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(
                f"Could not rebuild {type(base).__name__} to fold into: "
                f"{variable.path} has shape {variable.shape}, the original "
                f"{value.path} {value.shape}."
            )
        if id(variable) not in table_values:
            # A copy: on jax, sharing the buffer would let one model's
            # donated (reused) buffers delete the other's weights.
            value = np.array(keras.ops.convert_to_numpy(value))
            table_values[id(variable)] = value
    for variable in fresh + added:
        variable.assign(table_values[id(variable)].astype(variable.dtype))
    if model is adalink_backbone:
        return folded
    if isinstance(model, keras_hub.models.Task):
        return rebuild_task(model, folded)
    # A user's own model around the adapted backbone (a head, say): the same
    # graph with the folded backbone in its place; other layers are shared.
    extra_inputs = len(keras.tree.flatten(adalink_backbone.input)) - len(
        keras.tree.flatten(folded.input)
    )
    if extra_inputs:
        raise ValueError(
            "The folded backbone has no `task_id` input, so it cannot stand "
            "in for a TaskRouter inside your model: fold the backbone "
            "(`fold(model.get_layer(...), task_id=...)`) and rebuild the "
            "head around it."
        )
    return keras.models.clone_model(
        model,
        clone_function=lambda layer: (
            folded if layer is adalink_backbone else layer
        ),
    )
