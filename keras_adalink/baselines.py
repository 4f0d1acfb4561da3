"""The methods AdaLink is compared with, so users can compare on their data.

- `prompt_tuning(backbone, num_tokens)`: P learned soft tokens inserted
  into the sequence before the first block (non-intrusive, like AdaLink,
  but it lengthens every sequence by P), with the residual
  reparameterisation of Razdaibiedina et al. (2023) that the AdaLink paper
  uses for its prompt-tuning baseline.
- `lora(backbone, rank, targets)`: Keras' own `enable_lora` on the
  attention query/value projections (`"query_value"`) or on every dense
  projection of every block (`"all"`).

Full fine-tuning (`backbone.trainable = True`) and a head-only probe
(`backbone.trainable = False`) need no helper. `benchmarks/glue_table.py`
compares all of them on the same data.
"""

from keras_adalink.layers.soft_prompt import SoftPrompt
from keras_adalink.models.prompt_tuning_backbone import PromptTuningBackbone

_LORA_TARGETS = {
    "query_value": ("query", "value", "query_dense", "value_dense"),
    "all": (
        "query",
        "key",
        "value",
        "attention_output",
        "feedforward_intermediate_dense",
        "feedforward_output_dense",
        "query_dense",
        "key_dense",
        "value_dense",
        "attention_output_dense",
    ),
}


def lora(backbone, rank, targets="query_value"):
    """Enables Keras LoRA on `backbone` in place; returns it.

    Everything else in the backbone is frozen, biases of the targeted
    layers included, as in the LoRA paper. The update is unmerged: each targeted
    layer computes `x W + (x A) B`.

    Args:
        backbone: a KerasHub backbone.
        rank: int. LoRA rank.
        targets: `"query_value"` (the LoRA paper's choice) or `"all"`
            (query, key, value, attention output and both feed-forward
            projections of every block).

    Example:
    >>> backbone = keras_adalink.baselines.lora(backbone, rank=4)
    """
    if targets not in _LORA_TARGETS:
        raise ValueError(
            f"`targets` must be one of {list(_LORA_TARGETS)}. "
            f"Received: targets={targets!r}"
        )
    backbone.enable_lora(rank, target_layer_names=list(_LORA_TARGETS[targets]))
    # Keras leaves the targeted layers' biases trainable; LoRA (and PEFT's
    # default, bias="none") trains only the low-rank factors.
    for variable in backbone.trainable_weights:
        if "lora_kernel" not in variable.path:
            variable.trainable = False
    if not backbone.trainable_weights:
        raise ValueError(
            f"No layer of {type(backbone).__name__} matched the LoRA "
            f"targets {_LORA_TARGETS[targets]}."
        )
    return backbone


def prompt_tuning(backbone, num_tokens=20, bottleneck=128):
    """Freezes `backbone` and returns it with `num_tokens` soft tokens.

    Args:
        backbone: a KerasHub BERT-family backbone.
        num_tokens: int. P, the number of soft tokens (the AdaLink paper
            uses 64; each one adds a position to every sequence).
        bottleneck: int or `None`. Residual reparameterisation width.

    Example:
    >>> prompted = keras_adalink.baselines.prompt_tuning(backbone, 20)
    >>> model = keras_adalink.heads.mean_pooled_classifier(prompted, 2)
    """
    return PromptTuningBackbone(
        backbone, SoftPrompt(num_tokens, bottleneck, name="soft_prompt")
    )
