"""Crash safety, resumable training, mixed precision, NaN handling."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink.adapter_file import read_adapter
from keras_adalink.heads import mean_pooled_classifier
from keras_adalink.models import find_adalink_backbone
from tests.fixtures.encoders import VOCAB
from tests.fixtures.encoders import backbone_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SAVER = textwrap.dedent(
    """
    import sys, keras, keras_hub, keras_adalink
    path, ready = sys.argv[1], sys.argv[2]
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=8)
    adapted = keras_adalink.adapt(backbone, rank=2)
    pooled = keras.layers.GlobalAveragePooling1D()(
        adapted(adapted.input)["sequence_output"])
    wide = keras.layers.Dense(1 << 18, name="wide")(pooled)  # ~16 MB file
    model = keras.Model(adapted.input, wide)
    keras_adalink.save_adapter(model, path)
    open(ready, "w").close()
    while True:
        keras_adalink.save_adapter(model, path)
    """
)


@pytest.mark.once
@pytest.mark.slow
def test_kill_during_save_leaves_previous_file_loadable(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    path, ready = tmp_path / "a.safetensors", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": ROOT}
    partial_seen = False
    for _ in range(3):
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(ready)], env=env
        )
        deadline = time.time() + 120
        while not ready.exists():
            assert proc.poll() is None, "saver died before its first save"
            assert time.time() < deadline
            time.sleep(0.05)
        # Kill as soon as a write is under way (its temporary file exists).
        while not any(p.suffix == ".partial" for p in tmp_path.iterdir()):
            assert time.time() < deadline
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partials = [p for p in tmp_path.iterdir() if p.suffix == ".partial"]
        partial_seen |= bool(partials)
        for p in partials:  # Leftovers of the killed write; never the file.
            p.unlink()
        record, tensors = read_adapter(path)
        assert tensors["wide/kernel"].shape == (16, 1 << 18)
        assert record["variables"]["wide/kernel"] == [16, 1 << 18]
    # At least one kill landed in the middle of a write.
    assert partial_seen


def _model(seed=0):
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
        dropout=0.0,
    )
    model = mean_pooled_classifier(
        keras_adalink.adapt(backbone, rank=2, dropout=0.0), 2
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("simulated crash")


def test_backup_and_restore_resumes_to_the_same_adapter(tmp_path):
    x = backbone_inputs(_model(), batch=16, seed=3)
    y = np.arange(16) % 2
    fit = dict(batch_size=4, epochs=4, shuffle=False, verbose=0)

    straight = _model()
    straight.fit(x, y, **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    crashed = _model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(x, y, callbacks=[backup, _Crash()], **fit)
    resumed = _model()
    resumed.fit(x, y, callbacks=[backup], **fit)

    for want, got in zip(straight.trainable_weights, resumed.trainable_weights):
        np.testing.assert_allclose(
            got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6, err_msg=got.path
        )


def test_mixed_bfloat16_training_stays_finite():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _model()
        adapter = find_adalink_backbone(model).adapter
        assert adapter.adalink_down.dtype == "float32"
        x = backbone_inputs(model, batch=8)
        history = model.fit(
            x,
            np.arange(8) % 2,
            batch_size=4,
            epochs=3,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
        assert np.all(np.isfinite(history.history["loss"]))
        assert len(history.history["loss"]) == 3
        assert all(
            np.all(np.isfinite(w.numpy())) for w in model.trainable_weights
        )
        assert adapter.adalink_up.dtype == "float32"
    finally:
        keras.config.set_dtype_policy("float32")
