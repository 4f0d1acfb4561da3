import keras
from keras import ops

from keras_adalink.layers.base_ada_link import BaseAdaLink


@keras.saving.register_keras_serializable(package="keras_adalink")
class AdaLink(BaseAdaLink):
    """Low-rank residual adapter between embeddings and transformer blocks.

    Computes `y = x + dropout(f(x @ W_down) @ W_up) * scale` on the last axis,
    where `W_down` has shape `[d, rank]` and `W_up` `[rank, d]`. `W_up` starts
    at zeros, so a freshly inserted layer returns its input unchanged and
    training starts from the frozen model. `f` is the identity by default, as
    in the paper. Weights are float32 even under a mixed-precision policy;
    the computation runs in the input's dtype.

    Input shape `[..., d]` (typically `[batch, sequence, d]`); the output has
    the same shape and dtype.

    Args:
        rank: int. Width of the bottleneck, `1 <= rank <= d`.
        activation: string or callable. `f` between the projections.
            Defaults to `None` (identity).
        dropout: float. Dropout rate on the adapter branch. Defaults to `0.1`,
            the paper's setting.
        scale: float. Multiplier on the adapter branch. Defaults to `1.0`.
        down_initializer: string or initializer for `W_down`. Defaults to
            `"he_uniform"`.
        up_initializer: string or initializer for `W_up`. Defaults to
            `"zeros"`.
        **kwargs: other `keras.layers.Layer` arguments (`name`, `dtype`...).

    Call arguments:
        inputs: float tensor `[..., d]`, the embeddings.
        token_mask: optional bool or int tensor `inputs.shape[:-1]`. Where it
            is false the input passes through unchanged.
        training: bool. Whether dropout is active.

    Example:
    >>> layer = AdaLink(rank=4)
    >>> x = np.random.rand(2, 10, 32).astype("float32")
    >>> bool(np.allclose(layer(x), x))
    True

    Reference:
        - [Wang et al., 2023](https://arxiv.org/abs/2310.12100), "Non-intrusive
          adaptation: input-centric parameter-efficient fine-tuning for
          versatile multimodal modeling".
    """

    @property
    def num_modules(self):
        return None

    def call(self, inputs, token_mask=None, training=None):
        down, up = self._kernels(inputs.dtype)
        hidden = ops.matmul(inputs, down)
        gate = None
        if token_mask is not None:
            gate = ops.cast(token_mask, hidden.dtype)[..., None]
        return self._finish(
            inputs, hidden, "...r,rd->...d", up, training, gate=gate
        )
