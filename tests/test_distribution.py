"""keras.distribution: layouts for every variable, and distributed fit."""

import json
import os
import subprocess
import sys

import keras
import keras_hub
import pytest

import keras_adalink
from tests.fixtures.decoders import CAUSAL_LMS
from tests.fixtures.encoders import BACKBONES
from tests.fixtures.pali_gemma import pali_gemma_lm as pali_gemma
from tests.fixtures.seq2seq import t5_lm as t5
from tests.fixtures.vision import vit as _vit

M = "model"


def _mesh():
    # A model axis of 2 divides the tiny models' 2 heads, so every rule
    # applies as written (meshes that do not divide: test_families.py).
    devices = [f"cpu:{i}" for i in range(4)]
    return keras.distribution.DeviceMesh((2, 2), ["batch", M], devices)


def _blocks(template, count=2):
    return {template.format(i=i) for i in range(count)}


# Every variable that should be split, listed literally (block 0 and 1).
BERT_SPLIT = {"token_embedding/embeddings"} | {
    f"transformer_layer_{i}/{suffix}"
    for i in range(2)
    for suffix in (
        "self_attention_layer/query/kernel",
        "self_attention_layer/query/bias",
        "self_attention_layer/key/kernel",
        "self_attention_layer/key/bias",
        "self_attention_layer/value/kernel",
        "self_attention_layer/value/bias",
        "self_attention_layer/attention_output/kernel",
        "feedforward_intermediate_dense/kernel",
        "feedforward_intermediate_dense/bias",
        "feedforward_output_dense/kernel",
    )
}
T5_SPLIT = (
    {"token_embedding/embeddings"}
    | {
        f"transformer_{stack}_layer_{i}/{suffix}"
        for stack in ("encoder", "decoder")
        for i in range(2)
        for suffix in (
            "self_attention/query_projector/kernel",
            "self_attention/key_projector/kernel",
            "self_attention/value_projector/kernel",
            "self_attention/output_projector/kernel",
            "input_projector/kernel",
            "gate_projector/kernel",
            "output_projector/kernel",
        )
    }
    | {
        f"transformer_decoder_layer_{i}/cross_attention/{name}_projector/kernel"
        for i in range(2)
        for name in ("query", "key", "value", "output")
    }
)
VIT_SPLIT = {
    f"vit_encoder/transformer_block_{i}/{suffix}"
    for i in (1, 2)  # KerasHub numbers ViT blocks from 1.
    for suffix in (
        "mha/query/kernel",
        "mha/query/bias",
        "mha/key/kernel",
        "mha/key/bias",
        "mha/value/kernel",
        "mha/value/bias",
        "mha/attention_output/kernel",
        "mlp/dense_1/kernel",
        "mlp/dense_1/bias",
        "mlp/dense_2/kernel",
    )
}
GEMMA_SPLIT = {"token_embedding/embeddings"} | {
    f"decoder_block_{i}/{suffix}"
    for i in range(2)
    for suffix in (
        "attention/query/kernel",
        "attention/key/kernel",
        "attention/value/kernel",
        "attention/attention_output/kernel",
        "ffw_gating/kernel",
        "ffw_gating_2/kernel",
        "ffw_linear/kernel",
    )
}
PALI_GEMMA_SPLIT = GEMMA_SPLIT | {
    f"image_encoder/encoder_block_0/{suffix}"
    for suffix in (
        "multi_head_attention/query_proj/kernel",
        "multi_head_attention/key_proj/kernel",
        "multi_head_attention/value_proj/kernel",
        "multi_head_attention/out_proj/kernel",
        "mlp_dense_1/kernel",
        "mlp_dense_2/kernel",
    )
}
LLAMA_SPLIT = {"token_embedding/embeddings"} | {
    f"transformer_layer_{i}/{suffix}"
    for i in range(2)
    for suffix in (
        "self_attention/query/kernel",
        "self_attention/key/kernel",
        "self_attention/value/kernel",
        "self_attention/attention_output/kernel",
        "feedforward_gate_dense/kernel",
        "feedforward_intermediate_dense/kernel",
        "feedforward_output_dense/kernel",
    )
}

CASES = {
    "bert_task_router": (
        lambda: keras_adalink.adapt(BACKBONES["bert"](), rank=2, num_tasks=3),
        BERT_SPLIT,
    ),
    "roberta": (
        lambda: keras_adalink.adapt(BACKBONES["roberta"](), rank=2),
        BERT_SPLIT - {"token_embedding/embeddings"}
        | {"embeddings/token_embedding/embeddings"},
    ),
    "distil_bert": (
        lambda: keras_adalink.adapt(BACKBONES["distil_bert"](), rank=2),
        BERT_SPLIT - {"token_embedding/embeddings"}
        | {"token_and_position_embedding/token_embedding/embeddings"},
    ),
    "t5_two_stacks": (
        lambda: keras_adalink.adapt(
            t5(), rank=2, modalities=["encoder", "decoder"]
        ),
        T5_SPLIT,
    ),
    "vit": (lambda: keras_adalink.adapt(_vit(), rank=2), VIT_SPLIT),
    "pali_gemma": (
        lambda: keras_adalink.adapt(
            pali_gemma(), rank=2, modalities=["image", "text"]
        ),
        PALI_GEMMA_SPLIT,
    ),
    "gemma_keras_hub_map": (
        lambda: keras_adalink.adapt(CAUSAL_LMS["gemma"](), rank=2),
        GEMMA_SPLIT,
    ),
    "llama_keras_hub_map": (
        lambda: keras_adalink.adapt(CAUSAL_LMS["llama"](), rank=2),
        LLAMA_SPLIT,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_variable_gets_the_intended_layout(case):
    """The family's rule as written (from the class); the built model's map
    keeps each of its splits and adds the shape rule's."""
    build, expected_split = CASES[case]
    model = build()
    cls = keras_adalink.distribution._backbone_class(model)
    layout_map = keras_adalink.get_layout_map(cls, _mesh())
    built = keras_adalink.get_layout_map(model, _mesh())
    split, adapter = set(), 0
    for variable in model.weights:
        layout = layout_map[variable.path]  # Raises on two matching keys.
        axes = () if layout is None else tuple(layout.axes)
        if "adalink" in variable.path:
            adapter += 1
            assert layout is not None and axes == (), variable.path
        elif any(axis is not None for axis in axes):
            split.add(variable.path)
            assert len(axes) == len(variable.shape), variable.path
            # KerasHub's Gemma map also splits along the batch axis (FSDP
            # style).
            assert set(axes) - {None} <= {M, "batch"}, variable.path
    assert adapter >= 2
    assert split == expected_split
    shapes = {v.path: v.shape for v in model.weights}
    for path in split:
        axes = layout_map[path].axes
        if all(d % 2 == 0 for a, d in zip(axes, shapes[path]) if a):
            assert built[path].axes == axes, path
        else:  # The rule's split does not divide: the shape rule's instead.
            assert M in built[path].axes, path
    share = keras_adalink.distribution.sharded_share(model, built)
    assert share >= keras_adalink.distribution.sharded_share(model, layout_map)
    assert share >= 0.9


def test_layout_map_from_the_class_before_building():
    by_class = keras_adalink.get_layout_map(
        keras_hub.models.BertBackbone, _mesh()
    )
    model = CASES["roberta"][0]()
    by_model = keras_adalink.get_layout_map(model, _mesh())
    # The built model's map adds the shape rule's entries to the class's.
    assert set(by_class._layout_map) < set(by_model._layout_map)


def test_unknown_family_and_bad_mesh_are_refused():
    # A family without a rule of its own: its built model's shapes give
    # the layout (tests/sites/test_families.py), its class alone cannot.
    with pytest.raises(ValueError, match="pass the built model"):
        keras_adalink.get_layout_map(keras_hub.models.AlbertBackbone, _mesh())
    mesh = keras.distribution.DeviceMesh(
        (8,), ["data"], [f"cpu:{i}" for i in range(8)]
    )
    with pytest.raises(ValueError, match="'model' is not an axis"):
        keras_adalink.get_layout_map(keras_hub.models.BertBackbone, mesh)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution runs on jax (see docs/distribution.md)",
)
def test_distributed_fit_matches_single_device():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "KERAS_BACKEND": "jax",
    }
    script = os.path.join(
        os.path.dirname(__file__), "fixtures", "distributed_checks.py"
    )
    result = subprocess.run(
        [sys.executable, script],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    assert results["devices"] == 8
    for kind in ("encoder", "causal_lm"):
        single = results[kind]["single_device"]
        assert single[-1] < single[0]  # It trains.
        for name in ("data_parallel", "model_parallel"):
            run = results[kind][name]
            assert run["loss"] == pytest.approx(single, rel=1e-4), name
            assert run["backbone_unchanged"], (kind, name)
            assert run["reload_max_diff"] < 1e-5, (kind, name)
            expected = "P()" if name == "model_parallel" else "P(None, "
            assert all(s.startswith(expected) for s in run["adapter_specs"])
        # The encoder's 2-head attention stays replicated on a model axis
        # of 4; its feed-forward layers and token table are still split.
        assert results[kind]["model_parallel"]["sharded_weights"] > 6
        assert results[kind]["data_parallel"]["sharded_weights"] == 0
    assert results["encoder"]["model_parallel"]["exported"]
    assert results["encoder"]["data_parallel"]["exported"]


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution runs on jax (see docs/distribution.md)",
)
def test_distributed_example_runs_on_simulated_devices(tmp_path):
    root = os.path.dirname(os.path.dirname(__file__))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(root, "examples", "distributed_train.py"),
            "--simulate-devices=8",
            "--mesh=2,4",
            "--train-examples=64",
            "--test-examples=32",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ModelParallel on a (2, 4)" in result.stdout
    assert "weights split across devices" in result.stdout
    assert (tmp_path / "adapter.safetensors").exists()


# One family per kind of model the shape rule lays out alone (decoder,
# mixture of experts, audio seq2seq, vision, encoder, windowed vision), and
# one whose KerasHub map splits an axis these meshes do not divide (its
# refitted map must fit the rebuilt model too); the layout of every family
# is checked in tests/sites/test_families.py.
SHAPE_RULE_FAMILIES = [
    "Qwen3MoeBackbone",
    "MistralBackbone",
    "MixtralBackbone",
    "WhisperBackbone",
    "DINOV2Backbone",
    "DebertaV3Backbone",
    "SwinTransformerBackbone",
]


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution runs on jax (see docs/distribution.md)",
)
def test_shape_rule_fit_step_matches_single_device():
    """A ModelParallel fit step on 2x4 and 1x8 meshes equals one device's,
    with the map read off another build of the same model."""
    root = os.path.dirname(os.path.dirname(__file__))
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(root, "tests", "fixtures", "distributed_families.py"),
        ]
        + SHAPE_RULE_FAMILIES,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
            + " --xla_force_host_platform_device_count=8",
            "KERAS_BACKEND": "jax",
            "PYTHONPATH": root,
        },
        timeout=600,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    assert results["devices"] == 8
    for name in SHAPE_RULE_FAMILIES:
        for mesh, run in results[name].items():
            assert run["loss_diff"] < 1e-5 * max(1, abs(run["loss"])), name
            assert run["adapter_diff"] < 1e-5, (name, mesh)
            # The rebuilt model holds the map's splits: the map read off
            # one build fits another (layer counters differ between them).
            assert run["split_share"] == pytest.approx(run["map_share"])
            assert run["split_share"] >= 0.9, (name, mesh)


def test_a_map_read_off_a_shallow_build_fits_the_deep_one():
    """The shape rule's keys match any layer counter: a 1-block build (on
    the host, say) gives the layout of the full-depth model."""

    def mistral(layers):
        return keras_adalink.adapt(
            keras_hub.models.MistralBackbone(
                vocabulary_size=40,
                num_layers=layers,
                num_query_heads=2,
                num_key_value_heads=2,
                hidden_dim=16,
                intermediate_dim=32,
            ),
            rank=2,
        )

    shallow, deep = mistral(1), mistral(3)
    mesh = keras.distribution.DeviceMesh(
        (1, 8), ["batch", M], [f"cpu:{i}" for i in range(8)]
    )
    from_shallow = keras_adalink.get_layout_map(shallow, mesh)
    from_deep = keras_adalink.get_layout_map(deep, mesh)
    split = 0
    for variable in deep.weights:
        want, got = from_deep[variable.path], from_shallow[variable.path]
        assert (want and tuple(want.axes)) == (got and tuple(got.axes))
        split += bool(got and M in tuple(got.axes))
    assert split > 3 * 7  # Every block's kernels, in all three blocks.
