"""The standard checks every AdaLink layer gets (one call per layer)."""

import keras
import numpy as np


def run_layer_checks(layer_cls, init_kwargs, inputs, call_kwargs=None):
    """Serialization round trip, symbolic + eager call, identity at init,
    one fit step that moves both projections, trainable-weight count.
    """
    call_kwargs = call_kwargs or {}
    layer = layer_cls(**init_kwargs)

    # Eager call: the zero-initialised up-projection makes it the identity.
    out = keras.ops.convert_to_numpy(layer(inputs, **call_kwargs))
    assert out.shape == inputs.shape
    np.testing.assert_allclose(out, inputs, atol=1e-6)
    assert [w.path.split("/")[-1] for w in layer.trainable_weights] == [
        "adalink_down",
        "adalink_up",
    ]
    assert all(w.dtype == "float32" for w in layer.weights)

    # Serialization round trip keeps the config.
    config = layer.get_config()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is layer_cls
    assert restored.get_config() == config

    # Symbolic call inside a functional model, then one fit step.
    symbolic = keras.Input(shape=inputs.shape[1:])
    extra = {}
    model_inputs = [symbolic]
    for name, value in call_kwargs.items():
        extra[name] = keras.Input(
            shape=np.shape(value)[1:], dtype="int32", name=name
        )
        model_inputs.append(extra[name])
    fresh = layer_cls(**init_kwargs)
    y = fresh(symbolic, **extra)
    assert tuple(y.shape[1:]) == tuple(inputs.shape[1:])
    model = keras.Model(model_inputs, y)
    # Copies: on jax, fit donates (reuses) the buffers numpy views point to.
    before = [np.array(w.numpy()) for w in fresh.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    feed = [inputs] + [np.asarray(v) for v in call_kwargs.values()]
    target = np.random.default_rng(99).normal(size=inputs.shape)
    # Two steps: the first moves only W_up (W_up = 0 blocks W_down's grad).
    model.fit(feed, target.astype("float32"), epochs=2, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in fresh.trainable_weights]
    for b, a in zip(before, after):
        assert not np.array_equal(b, a), np.abs(b - a).max()
    return layer


def check_round_trips(adapted, fresh, x, tmp_path):
    """The adapter file (into `fresh`, adapted the same way) and the
    `.keras` file both give back `adapted`'s outputs on `x`."""
    import keras_adalink

    def flat(outputs):
        return [
            np.asarray(keras.ops.convert_to_numpy(o))
            for o in keras.tree.flatten(outputs)
        ]

    expected = flat(adapted(x))
    keras_adalink.save_adapter(adapted, tmp_path / "a.safetensors")
    keras_adalink.load_adapter(fresh, tmp_path / "a.safetensors")
    adapted.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    for model in (fresh, restored):
        for want, have in zip(expected, flat(model(x))):
            np.testing.assert_allclose(have, want, atol=1e-5)


def run_cli(*args, check=True, env=None, process=False):
    """The `keras-adalink` command, offline, as a `CompletedProcess`.

    In this process by default (`cli.main` with stdout and stderr captured:
    the same code path without the ~10 s start-up of a new interpreter);
    `process=True` runs the installed console script in a subprocess, as a
    user runs it, for what only a process shows (its quiet start-up, being
    killed). CLI logic is backend-independent: these tests run on jax.
    """
    import contextlib
    import io
    import os
    import subprocess
    import sys

    args = [str(a) for a in args]
    env = {"HF_HUB_OFFLINE": "1", **(env or {})}
    if process:
        cli = os.path.join(os.path.dirname(sys.executable), "keras-adalink")
        result = subprocess.run(
            [cli, *args],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, **env},
        )
    else:
        from keras_adalink import cli

        out, err = io.StringIO(), io.StringIO()
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            with (
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                try:
                    code = cli.main(args)
                except SystemExit as error:  # argparse: --help, bad flags
                    code = error.code if isinstance(error.code, int) else 2
        finally:
            os.environ.clear()
            os.environ.update(saved)
        result = subprocess.CompletedProcess(
            ["keras-adalink", *args], code, out.getvalue(), err.getvalue()
        )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result
