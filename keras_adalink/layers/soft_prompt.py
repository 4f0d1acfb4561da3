"""Learned soft tokens put before a sequence (the prompt-tuning baseline)."""

import keras


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
