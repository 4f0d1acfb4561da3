"""Distributed training checks, run by tests/test_distribution.py.

Runs in its own process: jax reads the simulated device count
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) once, at import.
Prints one JSON object with what it measured; the test asserts on it.
"""

import json
import os
import sys
import tempfile

import keras
import keras_hub
import numpy as np

import keras_adalink
from keras_adalink.heads import mean_pooled_classifier

SEQ = 8


def encoder_model():
    # 2 heads on a model axis of 4: get_layout_map replicates the attention
    # kernels' head axis (jax's IndivisibleError inside fit before it did).
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=48,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQ,
        dropout=0.0,
    )
    adapted = keras_adalink.adapt(backbone, rank=2, dropout=0.0, num_tasks=2)
    return mean_pooled_classifier(adapted, 2)


def causal_lm():
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=48,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=4,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
    lm = keras_hub.models.GemmaCausalLM(backbone, preprocessor=None)
    return keras_adalink.adapt(lm, rank=2, dropout=0.0)


def data(kind):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 48, (16, SEQ)).astype("int32")
    mask = np.ones((16, SEQ), "int32")
    if kind == "encoder":
        x = {
            "token_ids": tokens,
            "segment_ids": np.zeros_like(tokens),
            "padding_mask": mask,
            "task_id": rng.integers(0, 2, 16).astype("int32"),
        }
        return x, rng.integers(0, 2, 16).astype("int32")
    x = {"token_ids": tokens[:, :-1], "padding_mask": mask[:, :-1]}
    return x, tokens[:, 1:]


def build(kind, weights=None):
    keras.utils.set_random_seed(0)
    model = encoder_model() if kind == "encoder" else causal_lm()
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def frozen_values(model):
    return [
        np.array(keras.ops.convert_to_numpy(v))
        for v in model.weights
        if "adalink" not in v.path
        and v.path.split("/")[0] != "head"
        and "logits" not in v.path
    ]


def run(kind, distribution, reference_weights):
    x, y = data(kind)
    with distribution.scope():
        model = build(kind, reference_weights)
        before = frozen_values(model)
        history = model.fit(
            x, y, batch_size=8, epochs=4, shuffle=False, verbose=0
        )
        after = frozen_values(model)
        out = {
            "loss": history.history["loss"],
            "backbone_unchanged": all(
                np.array_equal(a, b) for a, b in zip(before, after)
            ),
            "adapter_specs": sorted(
                {
                    str(v.value.sharding.spec)
                    for v in model.weights
                    if "adalink" in v.path
                }
            ),
            "sharded_weights": sum(
                any(axis is not None for axis in v.value.sharding.spec)
                for v in model.weights
            ),
        }
        predicted = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "adapter.safetensors")
        keras_adalink.save_adapter(model, path)
        # Reload on one device, outside the distribution.
        fresh = build(kind, reference_weights)
        keras_adalink.load_adapter(fresh, path)
        reloaded = keras.ops.convert_to_numpy(fresh.predict(x, verbose=0))
        out["reload_max_diff"] = float(np.max(np.abs(reloaded - predicted)))
        if kind == "encoder":
            with distribution.scope():
                keras_adalink.export_saved_model(
                    model, os.path.join(folder, "served")
                )
            out["exported"] = os.path.exists(
                os.path.join(folder, "served", "saved_model.pb")
            )
    return out


def main():
    devices = keras.distribution.list_devices()
    results = {"devices": len(devices)}
    for kind in ("encoder", "causal_lm"):
        reference = build(kind)
        weights = [np.array(w) for w in reference.get_weights()]
        x, y = data(kind)
        history = reference.fit(
            x, y, batch_size=8, epochs=4, shuffle=False, verbose=0
        )
        results[kind] = {"single_device": history.history["loss"]}
        mesh = keras.distribution.DeviceMesh(
            (2, 4), ["batch", "model"], devices
        )
        layout_map = keras_adalink.get_layout_map(reference, mesh)
        for name, distribution in (
            ("data_parallel", keras.distribution.DataParallel(devices=devices)),
            (
                "model_parallel",
                keras.distribution.ModelParallel(
                    layout_map=layout_map, batch_dim_name="batch"
                ),
            ),
        ):
            results[kind][name] = run(kind, distribution, weights)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
