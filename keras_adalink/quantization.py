"""Big frozen models on small devices: quantized frozen weights, and frozen
blocks that recompute their activations in the backward pass.

An input-side adapter needs nothing inside the frozen layers, only
gradients through them, so it trains on every quantization mode Keras
offers (`int8`, `int4`, `float8`, `gptq`, `awq`), where Keras' own LoRA
runs on int8/int4 only. `adapt(model, quantize=..., remat=True)` uses both.
"""

import keras

from keras_adalink import graph
from keras_adalink.sites.rule import blocks

MODES = ("int8", "int4", "float8", "gptq", "awq")
# Modes that quantize from calibration data: Keras takes a config with it.
_CALIBRATED = {
    "gptq": "keras.quantizers.GPTQConfig",
    "awq": "keras.quantizers.AWQConfig",
}


def quantization_modes(model):
    """`{mode: number of layers}` of the quantized layers in `model`."""
    found = {}
    for layer in graph.all_layers(model):
        mode = getattr(layer, "quantization_mode", None)
        if mode is not None:
            found[mode] = found.get(mode, 0) + 1
    return dict(sorted(found.items()))


def quantize_frozen(backbone, mode, config=None):
    """Quantizes `backbone`'s weights in place with Keras' `quantize(mode)`.

    Args:
        backbone: the frozen backbone (not yet adapted).
        mode: str, one of `MODES`, or a `keras.quantizers.QuantizationConfig`
            (`GPTQConfig`, `AWQConfig`, ...), which carries its mode and,
            for GPTQ and AWQ, the calibration data.
    """
    if isinstance(mode, keras.quantizers.QuantizationConfig):
        config, mode = mode, mode.mode
    if mode not in MODES:
        raise ValueError(
            f"`quantize` must be one of {MODES} or a "
            "`keras.quantizers.QuantizationConfig`. "
            f"Received: quantize={mode!r}"
        )
    if mode in _CALIBRATED and config is None:
        raise ValueError(
            f"quantize={mode!r} calibrates on data: pass "
            f"`quantize={_CALIBRATED[mode]}(dataset=..., tokenizer=...)` "
            "instead of the mode's name."
        )
    present = quantization_modes(backbone)
    if present:
        raise ValueError(
            f"This backbone is already quantized ({present}); Keras cannot "
            f"quantize it again. Pass it without quantize={mode!r}: "
            "keras_adalink adapts quantized backbones as they are."
        )
    if mode in _CALIBRATED and config.quantization_layer_structure is None:
        config.quantization_layer_structure = calibration_structure(backbone)
    try:
        backbone.quantize(mode, config=config)
    except NotImplementedError as error:
        raise ValueError(
            f"Keras {keras.__version__} cannot quantize "
            f"{type(backbone).__name__} with mode {mode!r} on the "
            f"{keras.backend.backend()} backend: {error}"
        ) from error


def calibration_structure(backbone):
    """What GPTQ and AWQ calibrate block by block: the token lookup that
    turns calibration token ids into the first block's input, then the
    blocks in order (KerasHub's causal LMs give the same for their
    backbones; this finds them for any family the rule reads)."""
    table = getattr(backbone, "token_embedding", None)
    found = blocks(backbone)
    if not isinstance(table, keras.layers.Layer) or not found:
        raise ValueError(
            f"GPTQ and AWQ calibrate on token ids through the token lookup "
            f"and then each block; {type(backbone).__name__} has "
            + ("no `token_embedding` layer" if found else "no blocks found")
            + ". Pass `quantization_layer_structure=` in the config, or use "
            "a data-free mode (int8, int4, float8)."
        )
    return {"pre_block_layers": [table], "sequential_blocks": found}


def rematerialize_blocks(backbone):
    """Makes every block of `backbone` recompute its activations in the
    backward pass; returns how many. Raises where no block is found."""
    found = blocks(backbone)
    if not found:
        raise ValueError(
            f"remat=True found no blocks in {type(backbone).__name__} to "
            "rematerialise; adapt it with remat=False."
        )
    for block in found:
        graph.rematerialize(block)
    return len(found)


def float_table(embedding):
    """The float32 vocabulary table `embedding` looks tokens up in: its
    weights, or for a quantized table what its own lookup dequantizes."""
    if embedding.quantization_mode is None:
        table = embedding.embeddings
    else:
        table = embedding(keras.ops.arange(embedding.input_dim))
    return keras.ops.convert_to_numpy(table).astype("float32")


def requantized(embedding, table, reverse=None):
    """`{variable name: value}` of `embedding` holding the float `table`
    (and output table `reverse` where untied), quantized as Keras quantizes
    the layer: a float twin of it with these values, then its own
    `quantize` with the layer's mode and config (block size, ...). The
    names are those of `embedding`'s weights."""
    config = embedding.get_config()
    config["dtype"] = embedding.dtype_policy.get_config()["source_name"]
    config["quantization_config"] = None
    if reverse is not None:
        config["tie_weights"] = False
    twin = type(embedding).from_config(config)
    twin.build()
    twin.embeddings.assign(table.astype(twin.embeddings.dtype))
    if reverse is not None:
        twin.reverse_embeddings.assign(reverse.astype("float32"))
    twin.quantize(
        embedding.quantization_mode, config=embedding.quantization_config
    )
    return {v.name: keras.ops.convert_to_numpy(v) for v in twin.weights}
