import warnings

import keras
import numpy as np
from keras import ops

from keras_adalink.layers.base_ada_link import BaseAdaLink
from keras_adalink.layers.base_ada_link import concrete_numpy


@keras.saving.register_keras_serializable(package="keras_adalink")
class ModalityRouter(BaseAdaLink):
    """One AdaLink module per modality, picked per token.

    Token `n` of modality `m` computes
    `y_n = x_n + dropout(f(x_n @ W_down[m]) @ W_up[m]) * scale` (equations 1
    and 2 of the paper), so image-patch tokens and text tokens are adapted by
    separate modules before the frozen blocks fuse them. Tokens whose
    modality id is not in `[0, len(modalities))` (use `-1` for padding) pass
    through unchanged. With `unified=True` one shared module adapts every
    token of a known modality (the paper's ablation, Table 3).

    The modality of each token comes from a `modality_ids` call argument
    (`[batch, sequence]` ints, index into `modalities`) or, when that is
    omitted, from the static `modality_lengths`: `modality_lengths=[256,
    None]` means the first 256 positions are `modalities[0]` and the rest
    `modalities[1]`.

    Args:
        modalities: list of str. Modality names; ids index into this list.
        rank: int. Bottleneck width of every module.
        modality_lengths: optional list of int (the last may be `None`,
            "the rest"). Number of positions of each modality, in order.
            Defaults to `None` (ids must be passed at call time). Called
            `layout` in 0.1.0 (still accepted, with a
            `DeprecationWarning`; "layout" now means device sharding only).
        unified: bool. Share one module across modalities. Defaults to
            `False`.
        activation: string or callable. Defaults to `None` (identity).
        dropout: float. Dropout on the adapter branch. Defaults to `0.1`.
        scale: float. Multiplier on the adapter branch. Defaults to `1.0`.
        down_initializer: initializer for `W_down`. Defaults to
            `"he_uniform"`.
        up_initializer: initializer for `W_up`. Defaults to `"zeros"`.
        **kwargs: other `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor `[batch, sequence, d]` (any rank with
            `modality`).
        modality_ids: optional int tensor `[batch, sequence]`.
        modality: optional str. Every token is of this modality (for
            insertion sites that see one modality, e.g. image embeddings):
            the input goes through that module alone.
        training: bool. Whether dropout is active.

    Example:
    >>> router = ModalityRouter(
    ...     ["image", "text"], rank=4, modality_lengths=[6, None]
    ... )
    >>> x = np.random.rand(2, 10, 32).astype("float32")
    >>> router(x).shape
    (2, 10, 32)

    Reference:
        - [Wang et al., 2023](https://arxiv.org/abs/2310.12100), section 3.2,
          "Multimodal AdaLink".
    """

    def __init__(
        self,
        modalities,
        rank,
        modality_lengths=None,
        unified=False,
        layout=None,
        **kwargs,
    ):
        super().__init__(rank=rank, **kwargs)
        modality_lengths = renamed_layout(modality_lengths, layout)
        if isinstance(modalities, str) or not modalities:
            raise ValueError(
                "`modalities` must be a non-empty list of names. "
                f"Received: modalities={modalities!r}"
            )
        modalities = [str(m) for m in modalities]
        if len(set(modalities)) != len(modalities):
            raise ValueError(
                "`modalities` must not repeat a name. "
                f"Received: modalities={modalities}"
            )
        lengths = modality_lengths
        if lengths is not None:
            lengths = list(lengths)
            ok = len(lengths) == len(modalities) and all(
                isinstance(n, int) and n >= 0 for n in lengths[:-1]
            )
            ok = ok and (
                lengths[-1] is None
                or (isinstance(lengths[-1], int) and lengths[-1] >= 0)
            )
            if not ok:
                raise ValueError(
                    "`modality_lengths` must give one non-negative int per "
                    "modality (the last may be None). Received: "
                    f"modality_lengths={lengths} for modalities={modalities}"
                )
        self.modalities = modalities
        self.modality_lengths = lengths
        self.unified = bool(unified)

    @property
    def num_modules(self):
        return 1 if self.unified else len(self.modalities)

    def _static_ids(self, inputs):
        lengths = self.modality_lengths
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32")
        bounds = np.cumsum([n for n in lengths if n is not None])
        if lengths[-1] is None:
            bounds = bounds[: len(lengths) - 1]
        ids = ops.zeros_like(positions)
        for bound in bounds:
            ids = ids + ops.cast(positions >= int(bound), "int32")
        return ops.broadcast_to(ids[None, :], ops.shape(inputs)[:2])

    def check_ids(self, values):
        """Raises unless numpy `values` are modality ids (negative: pass)."""
        self._check_ids(
            values,
            "modality_ids",
            len(self.modalities),
            note=f" (the number of modalities {self.modalities}) or "
            "negative for pass-through",
        )

    def call(self, inputs, modality_ids=None, modality=None, training=None):
        if modality is not None:
            if modality not in self.modalities:
                raise ValueError(
                    f"`modality` must be one of {self.modalities} for layer "
                    f"'{self.name}'. Received: modality={modality!r}"
                )
            # One module for the whole input, of any rank (Gemma4's image
            # and audio embeddings are [batch, items, tokens, d]).
            index = 0 if self.unified else self.modalities.index(modality)
            down, up = self._kernels(inputs.dtype)
            # A narrower modality (CLIP's text tower) uses the leading rows
            # and columns: a module of its own width.
            width = inputs.shape[-1]
            self._check_width(width, fixed=True)
            hidden = ops.matmul(inputs, down[index][:width])
            return self._finish(
                inputs, hidden, "...r,rd->...d", up[index][:, :width], training
            )
        self._check_width(inputs.shape[-1], fixed=False)
        if modality_ids is None:
            if self.modality_lengths is None:
                raise ValueError(
                    f"Layer '{self.name}' has no `modality_lengths`, so "
                    "`modality_ids` must be passed."
                )
            modality_ids = self._static_ids(inputs)
        else:
            values = concrete_numpy(modality_ids)
            if values is not None:
                self.check_ids(values)
        modality_ids = ops.cast(modality_ids, "int32")
        known = ops.logical_and(
            modality_ids >= 0, modality_ids < len(self.modalities)
        )
        if self.unified:
            modality_ids = ops.where(known, 0, -1)
        route = ops.cast(
            ops.equal(modality_ids[..., None], ops.arange(self.num_modules)),
            inputs.dtype,
        )
        down, up = self._kernels(inputs.dtype)
        hidden = ops.einsum("bnd,mdr->bnmr", inputs, down)
        return self._finish(
            inputs, hidden, "bnmr,mrd->bnd", up, training, route[..., None]
        )

    def build(self, input_shape):
        super().build(input_shape)
        # Inputs of a fixed modality may be narrower (`_check_width`).
        self.input_spec = keras.InputSpec(min_ndim=2)

    def _check_width(self, width, fixed):
        built = self.adalink_down.shape[-2]
        if width is not None and (
            width > built or (width < built and not fixed)
        ):
            raise ValueError(
                f"Layer '{self.name}' holds modules of width {built}; "
                f"received inputs of width {width}. Narrower inputs are "
                "taken only with a fixed `modality=`."
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "modalities": self.modalities,
                "modality_lengths": self.modality_lengths,
                "unified": self.unified,
            }
        )
        return config


def renamed_layout(modality_lengths, layout):
    """`modality_lengths`, or the deprecated `layout` with a warning."""
    if layout is None:
        return modality_lengths
    if modality_lengths is not None:
        raise ValueError(
            "Pass `modality_lengths` only (`layout` is its old name). "
            f"Received: modality_lengths={modality_lengths}, layout={layout}"
        )
    warnings.warn(
        "`layout` (where each modality's tokens sit) is renamed "
        "`modality_lengths`; `layout` will be removed in the next release. "
        f"Received: layout={layout}",
        DeprecationWarning,
        stacklevel=3,
    )
    return layout
