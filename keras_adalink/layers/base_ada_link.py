"""Weights, arguments and config shared by every AdaLink layer (not public)."""

import keras
import numpy as np
from keras import ops


def concrete_numpy(x):
    """`x` as a numpy array when it holds values, `None` inside a graph.

    Eager calls get their ids checked; traced calls (`jax.jit`,
    `tf.function`) cannot look at values, so the layers there fall back to
    a defined behaviour (an unknown id leaves the token unchanged). Each
    backend signals a symbolic tensor with a different exception, hence the
    broad `except`.
    """
    if keras.backend.is_keras_tensor(x):
        return None
    try:
        return keras.ops.convert_to_numpy(x)
    except Exception:  # jax tracer / tf symbolic tensor: no value to check.
        return None


class BaseAdaLink(keras.layers.Layer):
    """Holds `num_modules` low-rank residual modules as stacked tensors.

    Subclasses choose which module each token uses. Weights are
    `adalink_down` (`[num_modules, d, r]`) and `adalink_up`
    (`[num_modules, r, d]`), or `[d, r]` and `[r, d]` when `num_modules` is
    `None` (a single module). They are always float32, and their variable
    paths contain `adalink` whatever the layer is called.
    """

    def __init__(
        self,
        rank,
        activation=None,
        dropout=0.1,
        scale=1.0,
        down_initializer="he_uniform",
        up_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(
                f"`rank` must be a positive int. Received: rank={rank!r}"
            )
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(
                "`dropout` must be a float in [0, 1). "
                f"Received: dropout={dropout!r}"
            )
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            raise ValueError(
                f"`scale` must be a number. Received: scale={scale!r}"
            )
        self.rank = rank
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.scale = float(scale)
        self.down_initializer = keras.initializers.get(down_initializer)
        self.up_initializer = keras.initializers.get(up_initializer)
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="dropout"
        )
        self.supports_masking = True

    @property
    def num_modules(self):
        raise NotImplementedError

    def _stacked(self, initializer):
        if self.num_modules is None or isinstance(
            initializer, (keras.initializers.Zeros, keras.initializers.Ones)
        ):
            return initializer

        # Initialise each module on its own [d, r] shape: a [T, d, r] fan-in
        # would otherwise shrink the initial scale with the number of modules.
        def init(shape, dtype=None):
            return ops.stack(
                [initializer(shape[1:], dtype) for _ in range(shape[0])]
            )

        return init

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                f"The last axis (embedding width) of the input to "
                f"'{self.name}' must be known. Received: "
                f"input_shape={input_shape}"
            )
        if self.rank > dim:
            raise ValueError(
                f"`rank` must not exceed the embedding width {dim}. "
                f"Received: rank={self.rank}"
            )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: dim})
        prefix = () if self.num_modules is None else (self.num_modules,)
        self.adalink_down = self.add_weight(
            name="adalink_down",
            shape=prefix + (dim, self.rank),
            initializer=self._stacked(self.down_initializer),
            dtype="float32",
        )
        self.adalink_up = self.add_weight(
            name="adalink_up",
            shape=prefix + (self.rank, dim),
            initializer=self._stacked(self.up_initializer),
            dtype="float32",
        )
        self.built = True

    def _check_ids(self, values, name, high, low=None, note=""):
        """`check_ids` for this layer: the routers' eager call checks and
        `keras_adalink.validation`, which runs them before `fit`/`predict`."""
        check_ids(values, name, high, low=low, note=note, layer=self.name)

    def _kernels(self, dtype):
        # Weights stay float32; compute runs in the input's dtype.
        return (
            ops.cast(self.adalink_down, dtype),
            ops.cast(self.adalink_up, dtype),
        )

    def _finish(self, inputs, hidden, up_equation, up, training, gate=None):
        """Activation, gate, up-projection, scale, dropout; the residual.

        `gate` (broadcast against the activated hidden units) zeroes the
        branch where a token must pass through unchanged.
        """
        hidden = self.activation(hidden)
        if gate is not None:
            hidden = hidden * gate
        delta = ops.einsum(up_equation, hidden, up)
        if self.scale != 1.0:
            delta = delta * ops.cast(self.scale, delta.dtype)
        delta = self.dropout_layer(delta, training=training)
        return inputs + delta

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rank": self.rank,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "scale": self.scale,
                "down_initializer": keras.initializers.serialize(
                    self.down_initializer
                ),
                "up_initializer": keras.initializers.serialize(
                    self.up_initializer
                ),
            }
        )
        return config


def check_ids(values, name, high, low=None, note="", layer=""):
    """Raises unless numpy `values` are ints below `high` (and >= `low`)."""
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(
            f"`{name}` must hold ints (an int tensor). Received dtype "
            f"{values.dtype} for layer '{layer}'."
        )
    bad = values >= high
    if low is not None:
        bad |= values < low
    if bad.any():
        bounds = f"[{low}, {high})" if low is not None else f"< {high}"
        raise ValueError(
            f"`{name}` must be {bounds}{note} for layer '{layer}'. "
            f"Received out-of-range ids: "
            f"{sorted(set(values[bad].tolist()))[:10]}"
        )
