"""Megatron-style model-parallel layouts for families KerasHub maps none for.

Each rule is `rule(model_axis, data_axis) -> {path pattern: axes}`: attention
query/key/value and the first feed-forward projection split along their
output features (heads) over the model axis, the attention output and the
second feed-forward projection along their input features, embedding
tables along the hidden dimension; the rest is replicated. Which family
uses which rule is in `families.py`; `keras_adalink.get_layout_map` applies
them.
"""

import keras
import keras_hub


def bert_family(model, data):
    block = "transformer_layer_\\d+"
    return {
        # Bert/Electra: a plain lookup; RoBERTa, DistilBERT: inside the
        # token-and-position embedding layer.
        "([a-z_]*embeddings?/)?token_embedding/embeddings": (None, model),
        f"{block}/self_attention_layer/(query|key|value)/kernel": (
            None,
            model,
            None,
        ),
        f"{block}/self_attention_layer/(query|key|value)/bias": (model, None),
        f"{block}/self_attention_layer/attention_output/kernel": (
            model,
            None,
            None,
        ),
        f"{block}/feedforward_intermediate_dense/kernel": (None, model),
        f"{block}/feedforward_intermediate_dense/bias": (model,),
        f"{block}/feedforward_output_dense/kernel": (model, None),
    }


def t5(model, data):
    block = "transformer_(encoder|decoder)_layer_\\d+"
    attention = f"{block}/(self|cross)_attention"
    return {
        "token_embedding/embeddings": (None, model),
        f"{attention}/(query|key|value)_projector/kernel": (None, model),
        f"{attention}/output_projector/kernel": (model, None),
        f"{block}/(input|gate)_projector/kernel": (None, model),
        f"{block}/output_projector/kernel": (model, None),
    }


def vit(model, data):
    block = "vit_encoder/transformer_block_\\d+"
    return {
        f"{block}/mha/(query|key|value)/kernel": (None, model, None),
        f"{block}/mha/(query|key|value)/bias": (model, None),
        f"{block}/mha/attention_output/kernel": (model, None, None),
        f"{block}/mlp/dense_1/kernel": (None, model),
        f"{block}/mlp/dense_1/bias": (model,),
        f"{block}/mlp/dense_2/kernel": (model, None),
    }


def two_tower(model, data):
    # CLIP, SigLIP, MetaCLIP 2: both towers' blocks share one naming (the
    # two towers' paths are the same), their projections stay replicated.
    block = "encoder_block_\\d+"
    attention = f"{block}/(attention|self_attn)"
    return {
        "embedding/token_embedding/embeddings": (None, model),
        f"{attention}/(query|key|value)/kernel": (None, model, None),
        f"{attention}/(query|key|value)/bias": (model, None),
        f"{attention}/attention_output/kernel": (model, None, None),
        f"{block}/(dense_1|mlp/fc1)/kernel": (None, model),
        f"{block}/(dense_1|mlp/fc1)/bias": (model,),
        f"{block}/(dense_2|mlp/fc2)/kernel": (model, None),
    }


def pali_gemma(model, data):
    # The text decoder is Gemma's (same layer names); the SigLIP tower
    # is split like any encoder.
    block = "image_encoder/encoder_block_\\d+"
    keys = keras_hub_map("GemmaBackbone", model, data)
    keys.update(
        {
            f"{block}/multi_head_attention/(query|key|value)_proj/kernel": (
                None,
                model,
            ),
            f"{block}/multi_head_attention/out_proj/kernel": (model, None),
            f"{block}/mlp_dense_1/kernel": (None, model),
            f"{block}/mlp_dense_2/kernel": (model, None),
        }
    )
    return keys


# Families whose layout leaves large weights whole on purpose, and why: the
# coverage page shows it beside their share, the tests accept it.
PARTIAL = {
    "FNetBackbone": "its Fourier mixing runs FFTs over the hidden axis, and "
    "XLA's SPMD partitioner aborts the process on an FFT whose input is "
    "split there (jax 0.10.2): only the vocabulary table and the "
    "feed-forward kernels are split, whose outputs are whole again",
}


def fnet(model, data):
    block = "f_net_layer_\\d+"
    ffn = f"{block}/(intermediate|output)_dense/"
    return {
        "token_embedding/embeddings": (model, None),
        f"{block}/intermediate_dense/kernel": (None, model),
        f"{block}/intermediate_dense/bias": (model,),
        f"{block}/output_dense/kernel": (model, None),
        # Every other weight whole (`PARTIAL`); not the adapters (their own
        # key) nor layer outputs, which Keras looks up as `path/output`.
        f"(?!.*adalink)(?!.*/output$)(?!token_embedding/|{ffn}).*": (),
    }


def keras_hub_map(class_name, model, data):
    # KerasHub's maps take only a mesh; read their keys off a 1-device one.
    mesh = keras.distribution.DeviceMesh((1, 1), [data, model], ["cpu:0"])
    base = getattr(keras_hub.models, class_name).get_layout_map(
        mesh, model_parallel_dim_name=model, data_parallel_dim_name=data
    )
    return {key: tuple(base[key].axes) for key in base}


def by_shape(shape, model_size, model):
    """Axes that split one frozen weight over a model axis of `model_size`,
    read from its shape alone, for weights no family rule covers.

    Rank 3 and more (attention kernels `(d, heads, head_dim)` and
    `(heads, head_dim, d)`, stacked experts `(experts, d, ff)`): the
    smallest axis the model axis divides, which is the heads or the experts
    where they divide. Rank 2 (tables `(vocab, d)`, kernels `(d, ff)` and
    `(ff, d)`): the larger axis (vocabulary-parallel tables, Megatron's
    column and row split), the other one where the larger does not divide;
    square kernels split their output features. Rank 0 and 1 (norms,
    biases, scales) are replicated: `None` means replicate the weight.
    """
    shape = tuple(shape)
    divisible = [
        i for i, dim in enumerate(shape) if dim and dim % model_size == 0
    ]
    if len(shape) < 2 or not divisible:
        return None
    if len(shape) == 2:
        divisible.sort(key=lambda i: (-shape[i], -i))
    else:
        divisible.sort(key=lambda i: (shape[i], i))
    axes = [None] * len(shape)
    axes[divisible[0]] = model
    return tuple(axes)
