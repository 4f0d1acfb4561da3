"""`eval`, `predict`, `export`, `compose` and `demo`."""

import json
import os

from keras_adalink.cli import generation
from keras_adalink.cli.runs import CliError
from keras_adalink.cli.runs import build
from keras_adalink.cli.runs import load_run
from keras_adalink.cli.runs import pick_task
from keras_adalink.cli.runs import read_run
from keras_adalink.cli.runs import write_json
from keras_adalink.cli.train import features
from keras_adalink.cli.train import scores
from keras_adalink.cli.train import targets
from keras_adalink.cli.train import task_rows
from keras_adalink.datasets import column
from keras_adalink.datasets import read_rows


def _lm_preprocessor(lm):
    preprocessor, lm.preprocessor = lm.preprocessor, None
    return preprocessor


def cmd_eval(args):
    run, model = load_run(args.adapter)
    rows = read_rows(args.data, args.split)
    if run.get("task") == "generation":
        result = generation.evaluate(
            model,
            _lm_preprocessor(model),
            column(rows, run["prompt_column"], args.data),
            column(rows, run["response_column"], args.data),
            run,
            args.max_length,
        )
    elif "tasks" in run and args.task is None and _has_task_column(run, rows):
        result = {}  # every task of a --task-column run, on its own rows
        for name in run["task_names"]:
            own = task_rows(run, rows, name, args.data)
            if own:
                result[name] = _scores(run, model, name, own, args.data)
    else:
        if "tasks" in run:
            rows = task_rows(run, rows, args.task, args.data)
        result = _scores(run, model, args.task, rows, args.data)
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result)


def _has_task_column(run, rows):
    first = run["tasks"][run["task_names"][0]]
    return "task_column" in first and rows and first["task_column"] in rows[0]


def _scores(run, model, task, rows, path):
    own, preprocessor, predict = pick_task(run, model, task)
    return scores(
        own,
        predict,
        features(own, preprocessor, rows, path),
        targets(own, rows, path),
    )


def cmd_predict(args):
    import numpy as np

    run, model = load_run(args.adapter)
    if args.data:
        rows = read_rows(args.data, args.split)
    elif args.text:
        key = run.get("prompt_column") or run.get("text_column")
        if "tasks" in run and args.task in run["tasks"]:
            key = run["tasks"][args.task]["text_column"]
        rows = [{key: t} for t in args.text]
    else:
        raise CliError("give --text TEXT ... or --data FILE")
    if run.get("task") == "generation":
        prompts = column(rows, run["prompt_column"], "input")
        answers = generation.generate(
            model,
            _lm_preprocessor(model),
            prompts,
            args.max_length or run["sequence_length"],
            args.sampler,
        )
        for prompt, answer in zip(prompts, answers):
            print(json.dumps({"text": prompt, "prediction": answer}))
        return
    own, preprocessor, predict = pick_task(run, model, args.task)
    if args.text and own.get("text_pair_column"):
        raise CliError(
            "this task reads text pairs; give --data FILE with columns "
            f"'{own['text_column']}' and '{own['text_pair_column']}'"
        )
    out = predict(features(own, preprocessor, rows, "input"))
    for row, values in zip(rows, out):
        if own["task"] == "regression":
            answer = float(values[0])
        else:
            answer = own["labels"][int(np.argmax(values))]
        line = {"text": row[own["text_column"]], "prediction": answer}
        if args.task is not None:
            line["task"] = args.task
        print(json.dumps(line))


def cmd_export(args):
    import keras_adalink

    run = read_run(args.adapter)
    if args.format == "peft":
        return _export_peft(args, run)
    if run.get("task") == "generation":
        raise CliError(
            "export writes classifier and regressor runs; serve a "
            "generation run with `predict`, or load it in Python "
            "(docs/serving.md)"
        )
    run, model = load_run(args.adapter)
    if args.fold and "tasks" in run:
        raise CliError(
            "a multi-task run cannot be folded (each task has its own "
            "module); export it unfolded: its SavedModel takes task names"
        )
    if args.fold:
        model = keras_adalink.fold(model)
    keras_adalink.export_saved_model(model, args.out)
    print(f"SavedModel written to {args.out}")


def _export_peft(args, run):
    import keras_adalink

    if args.fold:
        raise CliError("--fold writes a SavedModel; drop it for --format peft")
    if run.get("task") != "generation":
        raise CliError(
            "--format peft writes generation runs: a classifier or "
            "regressor run has a head that PEFT's embedding LoRA cannot carry"
        )
    base_model = args.base_model
    if base_model is None and os.path.isdir(run.get("backbone") or ""):
        base_model = os.path.abspath(run["backbone"])
    if base_model is None:
        raise CliError(
            "give --base-model: the HF model id or folder that the run's "
            f"backbone '{run.get('backbone')}' was converted from"
        )
    _, model = load_run(args.adapter)
    folders = keras_adalink.export_peft(model, args.out, base_model)
    print(f"PEFT adapter written to {', '.join(folders)}")


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
        run = read_run(folder)
        path = os.path.join(folder, "adapter.safetensors")
        if run.get("task") == "generation":
            raise CliError(
                f"{folder} is a generation run; compose joins classifier "
                "and regressor runs"
            )
        if "tasks" in run:  # a multi-task run brings its tasks and names
            if name:
                raise CliError(
                    f"{folder} is a multi-task run whose tasks keep their "
                    f"names; pass it without '{name}='"
                )
            sources.append(path)
            runs.update(run["tasks"])
        else:
            name = name or os.path.basename(os.path.normpath(folder))
            sources.append((name, path))
            runs[name] = run
    first = next(iter(runs.values()))
    base, _ = build(first)
    model = keras_adalink.compose(sources, base=base, drop=args.drop or ())
    names = find_adalink_backbone(model).adapter.task_names
    os.makedirs(args.out, exist_ok=True)
    keras_adalink.save_adapter(
        model, os.path.join(args.out, "adapter.safetensors")
    )
    write_json(
        os.path.join(args.out, "run.json"),
        {
            "backbone": first["backbone"],
            "task_names": names,
            "tasks": {n: runs[n] for n in names},
        },
    )
    print(json.dumps({"tasks": names, "out": args.out}))


def cmd_demo(args):
    from keras_adalink import demo

    demo.run(args)
