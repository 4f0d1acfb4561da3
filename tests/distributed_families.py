"""One ModelParallel fit step per family against one device, run by
tests/test_distribution.py in a process of its own with 8 simulated
devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`).

For each family named on the command line: the tiny test model of
tests/families.py, adapted with nonzero adapter weights, takes one SGD step
on one device; then the same weights, rebuilt inside a `ModelParallel`
scope whose map `keras_adalink.get_layout_map` read off the first build,
take the same step on a 2x4 and a 1x8 mesh. Prints one JSON object: per
family and mesh, the loss and adapter weights' largest differences, and the
share of the backbone's bytes the rebuilt model actually holds split.
"""

import json
import sys
import warnings

import keras
import numpy as np

import keras_adalink
from keras_adalink.distribution import _frozen_backbone
from tests.conftest import randomize_adapter
from tests.families import build
from tests.test_families import LM_TASKS
from tests.test_families import _fit_setup
from tests.test_families import _inputs


def _setup(adapted):
    """`(model, x, y)` for one step: the LM loss, or a linear score of every
    output (sequences mean-pooled: two-tower models' embeddings too)."""
    if isinstance(adapted, LM_TASKS):
        return _fit_setup(adapted)
    if isinstance(adapted.input, dict):
        inputs = {
            k: keras.Input(t.shape[1:], dtype=t.dtype, name=k)
            for k, t in adapted.input.items()
        }
    else:
        inputs = keras.Input(adapted.input.shape[1:])
    pooled = []
    for h in keras.tree.flatten(adapted(inputs)):
        if len(h.shape) == 4:  # Feature maps (MiT, ViTDet).
            h = keras.layers.GlobalAveragePooling2D()(h)
        if len(h.shape) == 3:
            h = keras.layers.GlobalAveragePooling1D()(h)
        if len(h.shape) == 2 and "float" in str(h.dtype):
            pooled.append(h)
    # Similarity logits (two towers: batch x batch) are averaged.
    scores = [
        keras.layers.Dense(1)(h)
        if h.shape[-1]
        else keras.layers.Lambda(
            lambda t: keras.ops.mean(t, axis=-1, keepdims=True)
        )(h)
        for h in pooled
    ]
    score = scores[0] if len(scores) == 1 else keras.layers.Add()(scores)
    model = keras.Model(inputs, score)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model, _inputs(adapted), np.ones((2, 1), "float32")


def _adapted(name, weights=None):
    keras.utils.set_random_seed(0)
    adapted = keras_adalink.adapt(build(name), rank=2, dropout=0.0)
    randomize_adapter(adapted)
    model, x, y = _setup(adapted)
    if weights is not None:
        model.set_weights(weights)
    return model, x, y


def _adapter(model):
    return [
        np.array(keras.ops.convert_to_numpy(v))
        for v in model.weights
        if "adalink" in v.path
    ]


def _split_share(model):
    """Share of backbone bytes whose arrays are split over "model"."""
    total = split = 0
    for v in _frozen_backbone(model).weights:
        size = int(np.prod(v.shape))
        total += size
        split += size * ("model" in str(v.value.sharding.spec))
    return split / total


def check(name):
    reference, x, y = _adapted(name)
    weights = [np.array(w) for w in reference.get_weights()]
    loss = reference.train_on_batch(x, y)
    expected = _adapter(reference)
    devices = keras.distribution.list_devices()
    out = {}
    for shape in ((2, 4), (1, 8)):
        mesh = keras.distribution.DeviceMesh(shape, ["batch", "model"], devices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Axes 2 heads cannot split.
            layout_map = keras_adalink.get_layout_map(reference, mesh)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
        with distribution.scope():
            model, _, _ = _adapted(name, weights)
            got = model.train_on_batch(x, y)
            out["x".join(map(str, shape))] = {
                "loss": float(np.ravel(loss)[0]),
                "loss_diff": float(abs(np.ravel(got)[0] - np.ravel(loss)[0])),
                "adapter_diff": max(
                    float(np.max(np.abs(a - b)))
                    for a, b in zip(_adapter(model), expected)
                ),
                "split_share": _split_share(model),
                "map_share": keras_adalink.distribution.sharded_share(
                    reference, layout_map
                ),
            }
    return out


if __name__ == "__main__":
    results = {"devices": len(keras.distribution.list_devices())}
    for name in sys.argv[1:]:
        results[name] = check(name)
    json.dump(results, sys.stdout)
