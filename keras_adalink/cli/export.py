"""`keras-adalink export`: a TF-Serving SavedModel or a PEFT folder."""

import os

from keras_adalink.cli.runs import CliError
from keras_adalink.cli.runs import load_run
from keras_adalink.cli.runs import read_run


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
    run, model, _ = load_run(args.adapter, run)
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
    _, model, _ = load_run(args.adapter, run)
    folders = keras_adalink.export_peft(model, args.out, base_model)
    print(f"PEFT adapter written to {', '.join(folders)}")
