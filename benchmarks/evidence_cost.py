"""Table 4 of benchmarks/evidence.py: training cost per method (jax).

Every method's Keras train step (`train_on_batch`: forward, backward,
Adam) on the same MiniLM batch (32 x 48 tokens), timed side by side in one
process: in each round every method runs `STEPS` steps in turn, and the
round's times become ratios to the lower bound of that round. The lower
bound for an input-side adapter is the frozen backbone's forward plus the
backward to its inputs with no weight gradients: a one-scalar gate at
AdaLink's insertion point (its gradient needs exactly that backward).
Memory is XLA's own plan for the compiled train step
(`memory_analysis()`: arguments + temporaries - aliased), which on CPU is
the peak the step allocates.
"""

import json
import os
import time

import jax
import keras
import numpy as np

import keras_adalink
from keras_adalink.heads import mean_pooled_classifier

ROUNDS = 12
STEPS = 3
SEQUENCE_LENGTH = 48
BATCH = 32


@keras.saving.register_keras_serializable(package="benchmarks")
class ScalarGate(keras.layers.Layer):
    """`x * g` with one trainable scalar: backward to x, nothing else."""

    def build(self, input_shape):
        self.gate = self.add_weight(shape=(), initializer="ones", name="gate")

    def call(self, x):
        return x * keras.ops.cast(self.gate, x.dtype)


def _batch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, SEQUENCE_LENGTH + 1, BATCH)
    mask = (np.arange(SEQUENCE_LENGTH)[None] < lengths[:, None]).astype("int32")
    x = {
        "token_ids": (rng.integers(1000, 20000, mask.shape) * mask).astype(
            "int32"
        ),
        "segment_ids": np.zeros(mask.shape, "int32"),
        "padding_mask": mask,
    }
    return x, rng.integers(0, 2, BATCH).astype("int32")


def _memory_bytes(model, x, y):
    state = model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
    )
    compiled = jax.jit(model.train_step).lower(state, (x, y)).compile()
    m = compiled.memory_analysis()
    return int(
        m.argument_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    )


def stage_cost(backbones, methods, encoder, results):
    x, y = _batch()
    bound = keras_adalink.AdaLinkBackbone(backbones.fresh(), ScalarGate())
    models = {"lower bound (input gradient)": mean_pooled_classifier(bound, 2)}
    models.update(
        {
            name: mean_pooled_classifier(encoder(backbones, kind, options), 2)
            for name, (kind, options, _) in methods.items()
            if kind != "head"
        }
    )
    memory = {}
    for name, model in models.items():
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        for _ in range(2):
            model.train_on_batch(x, y)
        memory[name] = _memory_bytes(model, x, y)
        print(name, "memory MiB", memory[name] / 2**20, flush=True)
    seconds = {name: [] for name in models}
    for _ in range(ROUNDS):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(STEPS):
                model.train_on_batch(x, y)
            seconds[name].append((time.perf_counter() - start) / STEPS)
    base = "lower bound (input gradient)"
    rows = []
    for name in models:
        ratios = np.array(seconds[name]) / np.array(seconds[base])
        rows.append(
            dict(
                method=name,
                step_seconds_median=float(np.median(seconds[name])),
                time_ratio_median=float(np.median(ratios)),
                time_ratio_iqr=[
                    float(q) for q in np.percentile(ratios, [25, 75])
                ],
                memory_bytes=memory[name],
                memory_ratio=memory[name] / memory[base],
                trainable=int(
                    sum(
                        np.prod(w.shape) for w in models[name].trainable_weights
                    )
                ),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(results, "evidence_cost.json"), "w") as f:
        json.dump(
            dict(
                command="KERAS_BACKEND=jax .venv/bin/python "
                "benchmarks/evidence.py --stage cost",
                batch=BATCH,
                sequence_length=SEQUENCE_LENGTH,
                rounds=ROUNDS,
                steps_per_round=STEPS,
                backend=keras.backend.backend(),
                rows=rows,
            ),
            f,
            indent=2,
        )
