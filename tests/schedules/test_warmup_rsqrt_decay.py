import keras
import numpy as np
import pytest

from keras_adalink import WarmupRsqrtDecay


def test_warmup_then_rsqrt():
    schedule = WarmupRsqrtDecay(1e-3, warmup_steps=10)
    lr = [float(schedule(step)) for step in range(100)]
    np.testing.assert_allclose(lr[0], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(lr[9], 1e-3, rtol=1e-6)
    assert all(a < b for a, b in zip(lr[:9], lr[1:10]))
    np.testing.assert_allclose(lr[39], 1e-3 * np.sqrt(10 / 40), rtol=1e-6)
    assert all(a > b for a, b in zip(lr[10:], lr[11:]))


def test_serializes_inside_optimizer():
    optimizer = keras.optimizers.Adam(WarmupRsqrtDecay(2e-3, warmup_steps=5))
    config = keras.optimizers.serialize(optimizer)["config"]["learning_rate"]
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, WarmupRsqrtDecay)
    assert restored.get_config() == {
        "peak_learning_rate": 2e-3,
        "warmup_steps": 5,
    }


@pytest.mark.parametrize(
    "kwargs", [{"peak_learning_rate": 0}, {"warmup_steps": 0}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        WarmupRsqrtDecay(
            **{"peak_learning_rate": 1e-3, "warmup_steps": 5, **kwargs}
        )


def test_adam_with_warmup_warms_up_over_a_tenth():
    from keras_adalink import adam_with_warmup

    optimizer = adam_with_warmup(1e-2, total_steps=300)
    assert isinstance(optimizer, keras.optimizers.Adam)
    schedule = optimizer._learning_rate  # the schedule object itself
    assert schedule.get_config() == {
        "peak_learning_rate": 1e-2,
        "warmup_steps": 30,
    }
    assert adam_with_warmup(1e-3, 5)._learning_rate.warmup_steps == 1
    with pytest.raises(ValueError, match="warmup_fraction"):
        adam_with_warmup(1e-3, 100, warmup_fraction=0)


@pytest.mark.parametrize(
    "decay, end",
    [("rsqrt", 1e-2 * (30 / 300) ** 0.5), ("cosine", 0.0), ("constant", 1e-2)],
)
def test_adam_with_warmup_decays(decay, end):
    from keras_adalink import adam_with_warmup

    schedule = adam_with_warmup(1e-2, 300, decay=decay)._learning_rate

    def rate(step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    assert rate(0) == pytest.approx(1e-2 / 30, rel=1e-4)
    assert rate(14) < rate(29) == pytest.approx(1e-2, rel=1e-4)
    assert rate(299) == pytest.approx(end, rel=1e-2, abs=1e-6)
    assert rate(150) <= 1e-2 * (1 + 1e-6)


def test_adam_with_warmup_rejects_unknown_decay():
    from keras_adalink import adam_with_warmup

    with pytest.raises(ValueError, match="decay"):
        adam_with_warmup(1e-3, 100, decay="linear")


@pytest.mark.parametrize("decay", ["rsqrt", "cosine", "constant"])
def test_adam_with_warmup_without_warmup_starts_at_peak(decay):
    from keras_adalink import adam_with_warmup

    schedule = adam_with_warmup(1e-2, 5, decay=decay)._learning_rate
    assert float(keras.ops.convert_to_numpy(schedule(0))) == pytest.approx(
        1e-2, rel=1e-4
    )
