"""`keras-adalink`: train, evaluate, predict with and export AdaLink adapters.

A run directory (`--out` of `train`) holds `adapter.safetensors` (what
`save_adapter` writes), `run.json` (backbone, columns, task, labels, rank,
sequence length), `metrics.json` (loss and accuracy or Pearson r per epoch,
train and validation, and final), TensorBoard logs in `logs/` and
`learning_curve.png`. Set KERAS_BACKEND to pick the backend.
"""

import argparse
import json
import os
import sys

import keras

from keras_adalink.datasets import column
from keras_adalink.datasets import read_rows
from keras_adalink.quiet import progress
from keras_adalink.schedules.warmup_rsqrt_decay import DECAYS

EXAMPLES = """examples:
  keras-adalink demo
  keras-adalink train --data train.csv --text-column text \\
      --label-column label --task classification --rank 4 --out runs/rt
  keras-adalink eval --adapter runs/rt --data test.csv
  keras-adalink predict --adapter runs/rt --text "a gorgeous, witty film"
  keras-adalink export --adapter runs/rt --out served/1 --fold
  keras-adalink compose --adapter runs/rt --adapter topic=runs/news \\
      --out runs/multi
  keras-adalink predict --adapter runs/multi --task rt --text "witty"
  keras-adalink export --adapter runs/multi --out served/2
"""


class CliError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def _backbone_path(run):
    import keras_adalink

    path = run["backbone"] or keras_adalink.datasets.minilm_path()
    if not os.path.isdir(path):
        raise CliError(
            f"backbone '{path}' is not a local folder; pass --backbone with "
            "the path of a HuggingFace-format BERT folder or KerasHub preset"
        )
    return path


def _preprocessor(run):
    import keras_hub

    return keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer.from_preset(_backbone_path(run)),
        sequence_length=run["sequence_length"],
    )


def _build(run):
    import keras_hub

    import keras_adalink
    from keras_adalink.heads import mean_pooled_classifier

    backbone = keras_hub.models.BertBackbone.from_preset(_backbone_path(run))
    adapted = keras_adalink.adapt(backbone, rank=run["rank"])
    model = mean_pooled_classifier(adapted, run["num_outputs"])
    return model, _preprocessor(run)


def _features(run, preprocessor, rows, path):
    from keras_adalink.datasets import featurize

    texts = column(rows, run["text_column"], path)
    if run.get("text_pair_column"):  # the preprocessor's own pair input
        texts = (texts, column(rows, run["text_pair_column"], path))
    return featurize(preprocessor, texts)


def _targets(run, rows, path):
    import numpy as np

    values = column(rows, run["label_column"], path)
    if run["task"] == "regression":
        return np.asarray(values, "float32")
    index = {label: i for i, label in enumerate(run["labels"])}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise CliError(f"labels {unknown[:5]} in {path} were not in training")
    return np.asarray([index[str(v)] for v in values], "int32")


def _metrics(run, predict, x, y):
    import numpy as np

    out = predict(x)
    if run["task"] == "regression":
        pred = out[:, 0]
        return {
            "pearson": float(np.corrcoef(pred, y)[0, 1]),
            "mse": float(np.mean((pred - y) ** 2)),
        }
    return {"accuracy": float(np.mean(np.argmax(out, -1) == y))}


def _read_run(folder):
    spec = os.path.join(folder, "run.json")
    if not os.path.isfile(spec):
        raise CliError(
            f"{folder} is not a keras-adalink run folder (no run.json)"
        )
    with open(spec) as f:
        return json.load(f)


def _load_run(folder):
    """`(run, model)`; a composed run's model serves all of its tasks."""
    import keras_adalink

    run = _read_run(folder)
    path = os.path.join(folder, "adapter.safetensors")
    if "tasks" in run:
        base, _ = _build(run["tasks"][run["task_names"][0]])
        return run, keras_adalink.compose([path], base=base)
    model, _ = _build(run)
    keras_adalink.load_adapter(model, path)
    return run, model


def _task(run, model, task):
    """`(task's run, its preprocessor, x -> its scores)` for `--task`."""
    import numpy as np

    if "tasks" not in run:
        if task is not None:
            raise CliError(
                "--task picks a task of a composed run (keras-adalink "
                "compose); this run has one task"
            )
        return run, _preprocessor(run), lambda x: model.predict(x, verbose=0)
    names = run["task_names"]
    if task not in names:
        shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        raise CliError(
            f"this run serves {len(names)} tasks; pick one with --task NAME "
            f"({'unknown task ' + repr(task) + '; ' if task else ''}"
            f"tasks: {shown})"
        )
    own = run["tasks"][task]

    def predict(x):
        size = len(next(iter(x.values())))
        ids = np.full(size, names.index(task), "int32")
        out = model.predict({**x, "task_id": ids}, verbose=0)
        return out["outputs"][:, : own["num_outputs"]]

    return own, _preprocessor(own), predict


def default_learning_rate(rank):
    """Peak rate `0.02 / sqrt(rank)`: 1e-2 at rank 4, 2.5e-3 at rank 64.

    The benchmark's tuned rates on frozen MiniLM (benchmarks/results/
    evidence.md: 1e-2 at rank 4, 3e-3 at ranks 16 and 64, 1e-3 at 256) fall
    as the rank grows, about as one over its square root.
    """
    return 0.02 / rank**0.5


def cmd_train(args):
    import keras

    import keras_adalink

    rows = read_rows(args.data)
    column(rows, args.text_column, args.data)
    labels = column(rows, args.label_column, args.data)
    run = {
        "backbone": args.backbone,
        "text_column": args.text_column,
        "text_pair_column": args.text_pair_column,
        "label_column": args.label_column,
        "task": args.task,
        "rank": args.rank,
        "sequence_length": args.sequence_length,
        "labels": None
        if args.task == "regression"
        else sorted({str(v) for v in labels}),
    }
    run["num_outputs"] = 1 if args.task == "regression" else len(run["labels"])
    keras.utils.set_random_seed(args.seed)
    model, preprocessor = _build(run)
    x = _features(run, preprocessor, rows, args.data)
    y = _targets(run, rows, args.data)
    per_epoch = -(-len(y) // args.batch_size)
    steps = args.epochs * per_epoch
    os.makedirs(args.out, exist_ok=True)
    callbacks = [keras.callbacks.TensorBoard(os.path.join(args.out, "logs"))]
    if args.max_steps and args.max_steps < steps:
        steps = args.max_steps
        callbacks.append(StopAfter(steps))
    epochs = -(-steps // per_epoch)
    learning_rate = args.learning_rate
    if learning_rate is None:
        learning_rate = default_learning_rate(args.rank)
    model.compile(
        optimizer=keras_adalink.adam_with_warmup(
            learning_rate, steps, decay=args.decay
        ),
        loss="mse"
        if args.task == "regression"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras_adalink.PearsonR(name="pearson")
            if args.task == "regression"
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        ],
    )
    validation = None
    if args.val_data:
        val_rows = read_rows(args.val_data)
        validation = (
            _features(run, preprocessor, val_rows, args.val_data),
            _targets(run, val_rows, args.val_data),
        )
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=epochs,
        validation_data=validation,
        callbacks=callbacks,
        verbose=progress(),
    )
    keras_adalink.save_adapter(
        model, os.path.join(args.out, "adapter.safetensors")
    )

    def predict(x):
        return model.predict(x, verbose=0)

    metrics = {
        "history": {
            k: [float(v) for v in vs] for k, vs in history.history.items()
        },
        "train_steps": int(model.optimizer.iterations.numpy()),
        "learning_rate": learning_rate,
        "decay": args.decay,
        "train": _metrics(run, predict, x, y),
    }
    if validation:
        metrics["validation"] = _metrics(run, predict, *validation)
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(run, f, indent=2)
    curves = metrics["history"]  # NaN stays NaN in the plot
    metrics = _finite(metrics)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, allow_nan=False)
    _learning_curve(curves, args.out)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}))


def _finite(tree):
    """`tree` with NaN/inf numbers as None: metrics.json is strict JSON."""
    import math

    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_finite(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def _learning_curve(history, folder):
    """`learning_curve.png`: loss and metric per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.2))
    for ax, name in zip(list(getattr(axes, "flat", [axes])), names):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(
                epochs, history[f"val_{name}"], marker="o", label="validation"
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "learning_curve.png"), dpi=100)
    plt.close(fig)


class StopAfter(keras.callbacks.Callback):
    """Ends `fit` after `steps` batches, mid-epoch if need be (--max-steps)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            self.model.stop_training = True


def cmd_eval(args):
    run, model = _load_run(args.adapter)
    run, preprocessor, predict = _task(run, model, args.task)
    rows = read_rows(args.data)
    result = _metrics(
        run,
        predict,
        _features(run, preprocessor, rows, args.data),
        _targets(run, rows, args.data),
    )
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def cmd_predict(args):
    import numpy as np

    run, model = _load_run(args.adapter)
    run, preprocessor, predict = _task(run, model, args.task)
    if args.data:
        rows = read_rows(args.data)
    elif args.text:
        rows = [{run["text_column"]: t} for t in args.text]
    else:
        raise CliError("give --text TEXT ... or --data FILE")
    out = predict(_features(run, preprocessor, rows, "input"))
    for row, scores in zip(rows, out):
        if run["task"] == "regression":
            answer = float(scores[0])
        else:
            answer = run["labels"][int(np.argmax(scores))]
        line = {"text": row[run["text_column"]], "prediction": answer}
        if args.task is not None:
            line["task"] = args.task
        print(json.dumps(line))


def cmd_export(args):
    import keras_adalink

    run, model = _load_run(args.adapter)
    if args.fold and "tasks" in run:
        raise CliError(
            "a composed run cannot be folded (each task has its own "
            "module); export it unfolded: its SavedModel takes task names"
        )
    if args.fold:
        model = keras_adalink.fold(model)
    keras_adalink.export_saved_model(model, args.out)
    print(f"SavedModel written to {args.out}")


def _adapter_specs(specs):
    """`[(name or None, folder)]` from `--adapter [NAME=]FOLDER` values."""
    out = []
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or os.path.isdir(spec):
            name, folder = None, spec
        out.append((name or None, folder))
    return out


def cmd_compose(args):
    import keras_adalink
    from keras_adalink.adapter_file import find_adalink_backbone

    runs, sources = {}, []
    for name, folder in _adapter_specs(args.adapter):
        run = _read_run(folder)
        path = os.path.join(folder, "adapter.safetensors")
        if "tasks" in run:  # a composed run brings its tasks and names
            if name:
                raise CliError(
                    f"{folder} is a composed run whose tasks keep their "
                    f"names; pass it without '{name}='"
                )
            sources.append(path)
            runs.update(run["tasks"])
        else:
            name = name or os.path.basename(os.path.normpath(folder))
            sources.append((name, path))
            runs[name] = run
    first = next(iter(runs.values()))
    base, _ = _build(first)
    model = keras_adalink.compose(sources, base=base, drop=args.drop or ())
    names = find_adalink_backbone(model).adapter.task_names
    os.makedirs(args.out, exist_ok=True)
    keras_adalink.save_adapter(
        model, os.path.join(args.out, "adapter.safetensors")
    )
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump(
            {
                "backbone": first["backbone"],
                "task_names": names,
                "tasks": {n: runs[n] for n in names},
            },
            f,
            indent=2,
        )
    print(json.dumps({"tasks": names, "out": args.out}))


def cmd_demo(args):
    from keras_adalink import demo

    demo.run(args)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every flag's default shown."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.option_strings
            and action.default is not None
            and action.default is not False
            and action.default != argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def parser():
    formatter = _Formatter
    top = argparse.ArgumentParser(
        prog="keras-adalink",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    top.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and XLA's start-up logs (hidden by default)",
    )
    sub = top.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train AdaLink on a frozen backbone",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    train.add_argument("--data", required=True, help="CSV, TSV or JSONL")
    train.add_argument(
        "--text-column", required=True, help="column with the text"
    )
    train.add_argument(
        "--text-pair-column",
        help="second text of a pair (NLI, paraphrase, STS); fed through the "
        "preprocessor's pair input",
    )
    train.add_argument(
        "--label-column",
        required=True,
        help="column with the label (classification) or number (regression)",
    )
    train.add_argument(
        "--task",
        choices=["classification", "regression"],
        required=True,
        help="what the label column holds",
    )
    train.add_argument(
        "--rank", type=int, default=4, help="AdaLink bottleneck width"
    )
    train.add_argument(
        "--epochs", type=int, default=2, help="passes over --data"
    )
    train.add_argument(
        "--max-steps", type=int, help="stop after this many steps (mid-epoch)"
    )
    train.add_argument(
        "--batch-size", type=int, default=32, help="examples a step"
    )
    train.add_argument(
        "--learning-rate",
        type=float,
        help="peak rate (default: 0.02 / sqrt(rank), 1e-2 at rank 4)",
    )
    train.add_argument(
        "--decay",
        choices=DECAYS,
        default="rsqrt",
        help="schedule after the 10%% warmup (rsqrt: the paper's)",
    )
    train.add_argument(
        "--sequence-length", type=int, default=64, help="tokens a text (padded)"
    )
    train.add_argument(
        "--val-data", help="validation file: metrics every epoch, and final"
    )
    train.add_argument(
        "--backbone",
        help="local KerasHub/HF BERT folder (default: the embedded MiniLM)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--out", required=True, help="run folder to write")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="metrics of a trained adapter on a file",
        formatter_class=formatter,
    )
    ev.add_argument("--adapter", required=True, help="a train --out folder")
    ev.add_argument("--data", required=True, help="CSV, TSV or JSONL")
    ev.add_argument("--json", help="also write the metrics here")
    ev.add_argument("--task", help="task of a composed run")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser(
        "predict",
        help="predictions for texts or a file",
        formatter_class=formatter,
    )
    pr.add_argument("--adapter", required=True, help="a run folder")
    pr.add_argument("--text", nargs="+", help="one or more texts")
    pr.add_argument("--data", help="a file with the text column")
    pr.add_argument("--task", help="task of a composed run")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        help="TF-Serving SavedModel (jax/tf)",
        formatter_class=formatter,
    )
    ex.add_argument("--adapter", required=True, help="a run folder")
    ex.add_argument("--out", required=True, help="SavedModel folder")
    ex.add_argument("--fold", action="store_true", help="fold into the table")
    ex.set_defaults(func=cmd_export)

    co = sub.add_parser(
        "compose",
        help="one multi-task run from separately trained runs",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    co.add_argument(
        "--adapter",
        action="append",
        required=True,
        metavar="[NAME=]FOLDER",
        help="a train --out folder (task named after the folder unless "
        "NAME= is given) or a composed run (keeps its task names); repeat",
    )
    co.add_argument("--drop", action="append", help="leave out this task")
    co.add_argument("--out", required=True, help="the composed run folder")
    co.set_defaults(func=cmd_compose)

    from keras_adalink.demo import add_arguments

    demo = sub.add_parser(
        "demo",
        help="the README's fine-tune + serve demo",
        formatter_class=formatter,
    )
    add_arguments(demo)
    demo.set_defaults(func=cmd_demo)
    for command in sub.choices.values():  # also accepted after the command
        command.add_argument(
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show TensorFlow's and XLA's start-up logs",
        )
    return top


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (CliError, FileNotFoundError, ValueError) as e:
        print(f"keras-adalink {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
