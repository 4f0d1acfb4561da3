import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_adalink")
class PearsonR(keras.metrics.Metric):
    """Pearson correlation of predictions and targets over every example seen.

    Accumulates `n, sum(x), sum(y), sum(x^2), sum(y^2), sum(xy)` across
    batches and returns
    `r = cov(x, y) / sqrt(var(x) var(y))` of all of them, so an epoch's
    value is the correlation over the epoch's examples (0 where a variance
    is 0). Predictions `[batch, 1]` and targets `[batch]` are flattened
    first: `keras.metrics.PearsonCorrelation` correlates along the last
    axis, which for a regression head's `[batch, 1]` output correlates one
    value with itself (NaN).

    Args:
        name: str. Defaults to `"pearson"`.
        dtype: optional dtype of the result.

    Example:
    >>> metric = PearsonR()
    >>> metric.update_state([1.0, 2.0, 3.0], [[1.1], [1.9], [3.2]])
    >>> round(float(metric.result()), 3)
    0.991
    """

    def __init__(self, name="pearson", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.sums = self.add_variable(
            shape=(6,), initializer="zeros", name="sums", dtype="float32"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        x = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        step = ops.stack(
            [
                ops.cast(ops.shape(x)[0], "float32"),
                ops.sum(x),
                ops.sum(y),
                ops.sum(x * x),
                ops.sum(y * y),
                ops.sum(x * y),
            ]
        )
        self.sums.assign_add(step)

    def result(self):
        n, sx, sy, sxx, syy, sxy = ops.unstack(ops.convert_to_tensor(self.sums))
        n = ops.maximum(n, 1.0)
        cov = sxy - sx * sy / n
        var_x = ops.maximum(sxx - sx * sx / n, 0.0)
        var_y = ops.maximum(syy - sy * sy / n, 0.0)
        return ops.divide_no_nan(cov, ops.sqrt(var_x * var_y))

    def reset_state(self):
        self.sums.assign(ops.zeros((6,), "float32"))
