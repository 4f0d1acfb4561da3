import keras
import numpy as np
import pytest

from keras_adalink import PearsonR


def test_equals_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    y = rng.normal(size=96).astype("float32")
    pred = (0.7 * y + rng.normal(size=96)).astype("float32")[:, None]
    metric = PearsonR()
    for start in range(0, 96, 32):  # [batch, 1] predictions, [batch] targets
        metric.update_state(y[start : start + 32], pred[start : start + 32])
    expected = np.corrcoef(pred[:, 0], y)[0, 1]
    assert float(metric.result()) == pytest.approx(expected, abs=1e-5)
    metric.reset_state()
    metric.update_state(y, np.zeros_like(pred))  # no variance: 0, not NaN
    assert float(metric.result()) == 0.0


def test_in_fit_every_epoch_is_finite():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.float32([1, -1, 0.5, 0])).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("adam", "mse", metrics=[PearsonR()])
    history = model.fit(
        x, y, validation_data=(x, y), batch_size=16, epochs=2, verbose=0
    )
    for key in ("pearson", "val_pearson"):
        assert np.all(np.isfinite(history.history[key])), history.history
    final = np.corrcoef(model.predict(x, verbose=0)[:, 0], y)[0, 1]
    assert history.history["val_pearson"][-1] == pytest.approx(final, abs=1e-4)
