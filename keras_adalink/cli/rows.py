"""Model inputs, targets and scores from table rows, as a run reads them.

Shared by `train`, `eval` and `predict`: the columns come from the run's
`run.json` (see `keras_adalink.cli`).
"""

import numpy as np

from keras_adalink.cli.runs import CliError
from keras_adalink.datasets import column
from keras_adalink.datasets import featurize


def features(run, preprocessor, rows, path):
    texts = column(rows, run["text_column"], path)
    if run.get("text_pair_column"):  # the preprocessor's own pair input
        texts = (texts, column(rows, run["text_pair_column"], path))
    return featurize(preprocessor, texts)


def targets(run, rows, path):
    values = column(rows, run["label_column"], path)
    if run["task"] == "regression":
        return np.asarray(values, "float32")
    index = {label: i for i, label in enumerate(run["labels"])}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise CliError(f"labels {unknown[:5]} in {path} were not in training")
    return np.asarray([index[str(v)] for v in values], "int32")


def task_rows(run, rows, name, path):
    """The rows of task `name` in a `--task-column` file."""
    own = run["tasks"][name]
    if "task_column" not in own:
        return rows
    column(rows, own["task_column"], path)
    return [r for r in rows if str(r[own["task_column"]]) == name]


def scores(run, predict, x, y):
    out = predict(x)
    if run["task"] == "regression":
        pred = out[:, 0]
        return {
            "pearson": float(np.corrcoef(pred, y)[0, 1]),
            "mse": float(np.mean((pred - y) ** 2)),
        }
    return {"accuracy": float(np.mean(np.argmax(out, -1) == y))}


def multi_task_data(run, preprocessor, rows, path):
    """Features with `task_id`, and each row's target in its own task."""
    xs, ys, ids = [], [], []
    for t, name in enumerate(run["task_names"]):
        own = task_rows(run, rows, name, path)
        if own:
            xs.append(features(run["tasks"][name], preprocessor, own, path))
            ys.append(targets(run["tasks"][name], own, path))
            ids.append(np.full(len(own), t, "int32"))
    x = {k: np.concatenate([p[k] for p in xs]) for k in xs[0]}
    x["task_id"] = np.concatenate(ids)
    return x, np.concatenate(ys)
