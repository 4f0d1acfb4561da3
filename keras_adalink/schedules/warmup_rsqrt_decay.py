import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_adalink")
class WarmupRsqrtDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then reciprocal square root decay (the paper's schedule).

    `lr(step) = peak * min((step + 1) / warmup_steps,
    sqrt(warmup_steps / (step + 1)))`: rises linearly to `peak_learning_rate`
    over `warmup_steps`, then decays as `1 / sqrt(step)`.

    Args:
        peak_learning_rate: float. The rate reached at the end of warmup.
        warmup_steps: int. Number of warmup steps, at least 1.

    Example:
    >>> schedule = WarmupRsqrtDecay(1e-3, warmup_steps=100)
    >>> optimizer = keras.optimizers.Adam(schedule)

    Reference:
        - [Wang et al., 2023](https://arxiv.org/abs/2310.12100), section 4.1.2.
    """

    def __init__(self, peak_learning_rate, warmup_steps):
        if not peak_learning_rate > 0:
            raise ValueError(
                "`peak_learning_rate` must be positive. Received: "
                f"peak_learning_rate={peak_learning_rate}"
            )
        if not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(
                "`warmup_steps` must be a positive int. Received: "
                f"warmup_steps={warmup_steps!r}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        factor = ops.minimum(step / warmup, ops.sqrt(warmup / step))
        return self.peak_learning_rate * factor

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
        }


# What `adam_with_warmup` can do after its warmup.
DECAYS = ("rsqrt", "cosine", "constant")


def adam_with_warmup(
    peak_learning_rate, total_steps, warmup_fraction=0.1, decay="rsqrt"
):
    """Adam with linear warmup over part of training, then a decay.

    The optimizer every example, benchmark and the CLI use: linear warmup
    over the first `warmup_fraction` of `total_steps` (at least one step),
    then `decay`:

    - `"rsqrt"`: inverse-square-root decay (`WarmupRsqrtDecay`, the paper's
      schedule; ends at `sqrt(warmup / total_steps)` of the peak).
    - `"cosine"`: cosine decay to zero at `total_steps`.
    - `"constant"`: stay at the peak.

    Args:
        peak_learning_rate: float. The rate reached at the end of warmup.
        total_steps: int. Optimizer steps the run will take.
        warmup_fraction: float in (0, 1]. Defaults to `0.1`.
        decay: one of `"rsqrt"`, `"cosine"`, `"constant"`. Defaults to
            `"rsqrt"`.

    Example:
    >>> optimizer = adam_with_warmup(1e-2, total_steps=300)  # 30 warmup
    >>> model.compile(optimizer=optimizer, loss="mse")
    """
    if not 0 < warmup_fraction <= 1:
        raise ValueError(
            "`warmup_fraction` must be in (0, 1]. Received: "
            f"warmup_fraction={warmup_fraction}"
        )
    if decay not in DECAYS:
        raise ValueError(
            '`decay` must be one of "rsqrt", "cosine", "constant". '
            f"Received: decay={decay!r}"
        )
    warmup = max(1, int(total_steps * warmup_fraction))
    if decay == "rsqrt":
        schedule = WarmupRsqrtDecay(peak_learning_rate, warmup)
    else:
        # Keras' warmup reaches its target one step after ours; shift it so
        # both schedules warm up as `peak * (step + 1) / warmup`.
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak_learning_rate / warmup,
            decay_steps=max(1, total_steps - warmup + 1),
            alpha=1.0 if decay == "constant" else 0.0,
            warmup_target=peak_learning_rate if warmup > 1 else None,
            warmup_steps=warmup - 1,
        )
    return keras.optimizers.Adam(schedule)


def default_learning_rate(rank: int) -> float:
    """AdaLink's peak learning rate for a rank: `0.02 / sqrt(rank)`.

    1e-2 at rank 4, 5e-3 at 16, 2.5e-3 at 64. The peak rates tuned on
    frozen MiniLM (benchmarks/results/evidence.md: 1e-2 at rank 4, 3e-3 at
    ranks 16 and 64, 1e-3 at 256, each the best of a three-point grid on
    validation) fall as the rank grows, about as one over its square root;
    rank 64 at rank 4's rate lost 5 points. A starting point measured on one
    small model, not a law: tune around it on your validation split. The
    CLI's `--learning-rate` defaults to it.

    Args:
        rank: int. The AdaLink rank.

    Example:
    >>> default_learning_rate(4)
    0.01
    >>> optimizer = adam_with_warmup(default_learning_rate(4), total_steps=300)
    """
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive int. Received: rank={rank}")
    return 0.02 / rank**0.5
