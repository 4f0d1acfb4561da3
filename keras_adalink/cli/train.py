"""`keras-adalink train`: one task, many tasks (`--task-column`) or
generation, written to a run folder (see `keras_adalink.cli`)."""

import json
import os

import keras

from keras_adalink.cli import distributed
from keras_adalink.cli import generation
from keras_adalink.cli.fitting import evaluate
from keras_adalink.cli.fitting import fit_epochs
from keras_adalink.cli.fitting import schedule
from keras_adalink.cli.rows import features
from keras_adalink.cli.rows import multi_task_data
from keras_adalink.cli.rows import scores
from keras_adalink.cli.rows import targets
from keras_adalink.cli.runs import CliError
from keras_adalink.cli.runs import build
from keras_adalink.cli.runs import multi_task
from keras_adalink.cli.runs import write_json
from keras_adalink.datasets import column
from keras_adalink.datasets import read_rows
from keras_adalink.layers.task_heads import PaddedLogits
from keras_adalink.schedules import default_learning_rate


def _require(args, *flags):
    missing = [f for f in flags if not getattr(args, f)]
    if missing:
        shown = ", ".join("--" + f.replace("_", "-") for f in missing)
        raise CliError(f"--task {args.task} needs {shown}")


def run_spec(args, rows):
    """What `run.json` records: backbone, columns, task, labels, rank."""
    common = {
        "backbone": args.backbone,
        "task": args.task,
        "rank": args.rank,
        "sequence_length": args.sequence_length,
    }
    # Recorded only when set, so run folders without them read as before.
    if args.quantize:
        common["quantize"] = args.quantize
    if args.remat:
        common["remat"] = True
    if args.task == "generation":
        _require(args, "prompt_column", "response_column")
        if args.task_column:
            raise CliError(
                "--task-column trains classifiers and regressors; train one "
                "generation run per task"
            )
        column(rows, args.prompt_column, args.data)
        column(rows, args.response_column, args.data)
        return {
            **common,
            "prompt_column": args.prompt_column,
            "response_column": args.response_column,
        }
    _require(args, "text_column", "label_column")
    column(rows, args.text_column, args.data)
    common.update(
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
    )

    def one(task_rows):
        labels = column(task_rows, args.label_column, args.data)
        if args.task == "regression":
            return {**common, "labels": None, "num_outputs": 1}
        labels = sorted({str(v) for v in labels})
        return {**common, "labels": labels, "num_outputs": len(labels)}

    if not args.task_column:
        return one(rows)
    names = sorted({str(v) for v in column(rows, args.task_column, args.data)})
    tasks = {
        name: {
            **one([r for r in rows if str(r[args.task_column]) == name]),
            "task_column": args.task_column,
        }
        for name in names
    }
    return {"backbone": args.backbone, "task_names": names, "tasks": tasks}


def _compile(model, task, learning_rate, steps, args):
    import keras_adalink

    if task == "regression":
        loss, metric = "mse", keras_adalink.PearsonR(name="pearson")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    optimizer = keras_adalink.adam_with_warmup(
        learning_rate, steps, decay=args.decay
    )
    if task == "generation":  # mean over response tokens, as eval reports
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        )
        model.compile(optimizer=optimizer, loss=loss, weighted_metrics=[metric])
    else:
        model.compile(optimizer=optimizer, loss=loss, metrics=[metric])


def _prepare(run, args, rows):
    """`(model to save, model to fit, data, validation, final metrics)`."""
    val_rows = args.val_data and read_rows(args.val_data, args.val_split)
    if run.get("task") == "generation":
        lm, preprocessor = build(run)

        def data(rows, path):
            prompts = column(rows, run["prompt_column"], path)
            responses = column(rows, run["response_column"], path)
            return (
                prompts,
                responses,
                generation.examples(
                    lm, preprocessor, prompts, responses, run["sequence_length"]
                ),
            )

        train = data(rows, args.data)[2]
        val = val_rows and data(val_rows, args.val_data)

        def final():
            out = {"train": generation.token_loss(lm, *train)}
            if val:
                out["validation"] = generation.evaluate(
                    lm, preprocessor, val[0], val[1], run
                )
            return out

        return lm, lm, train, val and val[2], final
    if "tasks" in run:
        model, preprocessor = multi_task(run)
        trainer = keras.Model(model.input, PaddedLogits()(model(model.input)))
        kind = run["tasks"][run["task_names"][0]]["task"]
        if kind == "regression":
            trainer = keras.Model(model.input, trainer.output[:, :1])

        def data(rows, path):
            return multi_task_data(run, preprocessor, rows, path)

        def measure(x, y):
            out = {}
            for t, name in enumerate(run["task_names"]):
                own = x["task_id"] == t
                if own.any():
                    part = {k: v[own] for k, v in x.items()}
                    out[name] = scores(
                        run["tasks"][name],
                        lambda x: trainer.predict(x, verbose=0),
                        part,
                        y[own],
                    )
            return out
    else:
        model, preprocessor = build(run)
        trainer = model

        def data(rows, path):
            return (
                features(run, preprocessor, rows, path),
                targets(run, rows, path),
            )

        def measure(x, y):
            return scores(run, lambda x: model.predict(x, verbose=0), x, y)

    x, y = data(rows, args.data)
    val = val_rows and data(val_rows, args.val_data)

    def final():
        out = {"train": measure(x, y)}
        if val:
            out["validation"] = measure(*val)
        return out

    return model, trainer, (x, y, None), val, final


def _build(run):
    return (multi_task(run) if "tasks" in run else build(run))[0]


def cmd_train(args):
    import keras_adalink

    placement = distributed.place(args)
    rows = read_rows(args.data, args.split)
    run = run_spec(args, rows)
    keras.utils.set_random_seed(args.seed)
    distributed.enter(placement, args, lambda: _build(run))
    keras.utils.set_random_seed(args.seed)
    model, trainer, data, validation, final = _prepare(run, args, rows)
    if placement.distribution is not None:
        # On a mesh, every process's evaluate() gives the global metrics.
        def final():
            out = {"train": evaluate(trainer, data, args, placement)}
            if validation:
                out["validation"] = evaluate(
                    trainer, (*validation, None)[:3], args, placement
                )
            return out

    plan = schedule(len(data[1]), args, placement)
    steps = plan[1]
    learning_rate = args.learning_rate
    if learning_rate is None:
        learning_rate = default_learning_rate(args.rank)
    task = run.get("task") or run["tasks"][run["task_names"][0]]["task"]
    _compile(trainer, task, learning_rate, steps, args)
    if placement.writes:
        os.makedirs(args.out, exist_ok=True)
    flags = ("data", "split", "val_data", "val_split", "epochs", "batch_size")
    flags += ("max_steps", "seed")
    expected = {
        "run": run,
        "learning_rate": learning_rate,
        "decay": args.decay,
        **{f: getattr(args, f) for f in flags},
    }
    history = fit_epochs(
        trainer,
        data,
        plan=plan,
        args=args,
        expected=expected,
        placement=placement,
        validation=validation,
    )
    metrics = {
        "history": history,
        "train_steps": int(
            keras.ops.convert_to_numpy(trainer.optimizer.iterations)
        ),
        "learning_rate": learning_rate,
        "decay": args.decay,
        **final(),
    }
    if not placement.writes:
        return
    keras_adalink.save_adapter(
        model, os.path.join(args.out, "adapter.safetensors")
    )
    write_json(os.path.join(args.out, "run.json"), run)
    curves = metrics["history"]  # NaN stays NaN in the plot
    metrics = _finite(metrics)
    write_json(os.path.join(args.out, "metrics.json"), metrics)
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
    if not names:
        return
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
