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

import keras
from keras_hub.models import Backbone

from keras_adalink import graph
from keras_adalink.models.ada_link_backbone import deserialize_layers

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


@keras.saving.register_keras_serializable(package="keras_adalink")
class SoftPrompt(keras.layers.Layer):
    """Inserts P learned tokens after the first position of a sequence.

    The tokens go after position 0 so a `[CLS]` token stays first (BERT's
    pooler reads it). With `bottleneck`, the tokens are reparameterised as
    `P + LayerNorm(relu(P W1) W2)` (residual prompt tuning), which trains
    faster and more stably than raw soft tokens.

    Args:
        num_tokens: int. P, the number of soft tokens.
        bottleneck: int or `None`. Width of the reparameterisation MLP;
            `None` trains the raw tokens.

    Example:
    >>> prompt = SoftPrompt(16, bottleneck=128)
    >>> prompt(keras.ops.zeros((2, 10, 384))).shape
    (2, 26, 384)
    """

    def __init__(self, num_tokens, bottleneck=128, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = num_tokens
        self.bottleneck = bottleneck

    def build(self, input_shape):
        dim = input_shape[-1]
        # Lester et al. (2021): uniform in [-0.5, 0.5], about the scale of
        # the LayerNormed embeddings the tokens sit among.
        self.prompt = self.add_weight(
            shape=(self.num_tokens, dim),
            initializer=keras.initializers.RandomUniform(-0.5, 0.5),
            name="prompt",
        )
        if self.bottleneck:
            self.down = keras.layers.Dense(
                self.bottleneck, activation="relu", name="reparam_down"
            )
            self.up = keras.layers.Dense(dim, name="reparam_up")
            self.norm = keras.layers.LayerNormalization(name="reparam_norm")
            self.down.build((self.num_tokens, dim))
            self.up.build((self.num_tokens, self.bottleneck))
            self.norm.build((self.num_tokens, dim))

    def tokens(self):
        tokens = self.prompt
        if self.bottleneck:
            tokens = tokens + self.norm(self.up(self.down(tokens)))
        return tokens

    def call(self, x):
        tokens = keras.ops.cast(self.tokens(), x.dtype)
        batch = keras.ops.shape(x)[0]
        tokens = keras.ops.broadcast_to(
            tokens[None], (batch, self.num_tokens, keras.ops.shape(x)[-1])
        )
        return keras.ops.concatenate([x[:, :1], tokens, x[:, 1:]], axis=1)

    def extend_mask(self, mask):
        ones = keras.ops.ones_like(mask[:, :1])
        ones = keras.ops.repeat(ones, self.num_tokens, axis=1)
        return keras.ops.concatenate([mask[:, :1], ones, mask[:, 1:]], axis=1)

    def remove(self, x):
        return keras.ops.concatenate(
            [x[:, :1], x[:, 1 + self.num_tokens :]], axis=1
        )

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        if length is not None:
            length += self.num_tokens
        return (input_shape[0], length, *input_shape[2:])

    def get_config(self):
        return {
            **super().get_config(),
            "num_tokens": self.num_tokens,
            "bottleneck": self.bottleneck,
        }


@keras.saving.register_keras_serializable(package="keras_adalink")
class PromptTuningBackbone(Backbone):
    """A frozen encoder with soft tokens in front of its first block.

    Replays the backbone's graph (as `AdaLinkBackbone` does) with the
    `SoftPrompt` tokens inserted before the first transformer block, the
    padding mask extended to cover them, and the tokens removed again after
    the last block, so outputs have the input's length and heads built for
    the backbone work unchanged. Tested on the BERT family (blocks called as
    `block(x, padding_mask=...)`).

    Args:
        backbone: a KerasHub encoder backbone; it is frozen in place.
        prompt: a `SoftPrompt` layer.

    Example:
    >>> prompted = PromptTuningBackbone(backbone, SoftPrompt(16))
    >>> prompted(inputs)["sequence_output"].shape  # same as backbone(inputs)
    (2, 8, 16)
    """

    def __init__(self, backbone, prompt, **kwargs):
        blocks = list(getattr(backbone, "transformer_layers", []))
        if not blocks:
            raise ValueError(
                f"{type(backbone).__name__} has no `transformer_layers`; "
                "prompt tuning needs the blocks to insert tokens before."
            )
        backbone.trainable = False
        first, last = blocks[0], blocks[-1]
        block_ids = {id(block) for block in blocks}

        def call_function(layer, *args, **kwargs):
            if id(layer) not in block_ids:
                return layer(*args, **kwargs)
            if "padding_mask" not in kwargs:
                raise ValueError(
                    f"{type(backbone).__name__}'s blocks take no "
                    "`padding_mask` keyword; prompt tuning supports the "
                    "BERT family."
                )
            x, *rest = args
            if layer is first:
                x = prompt(x)
            kwargs["padding_mask"] = prompt.extend_mask(kwargs["padding_mask"])
            y = layer(x, *rest, **kwargs)
            return prompt.remove(y) if layer is last else y

        inputs = keras.tree.map_structure(
            lambda t: keras.Input(
                shape=t.shape[1:], dtype=t.dtype, name=t.name
            ),
            backbone.input,
        )
        outputs = graph.replay(backbone, inputs, call_function)
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.prompt = prompt

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "prompt": keras.layers.serialize(self.prompt),
        }

    @classmethod
    def from_config(cls, config):
        return super().from_config(
            deserialize_layers(config, ("backbone", "prompt"))
        )


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
