"""`keras-adalink compose`: many runs' adapters as one multi-task run."""

import json
import os

from keras_adalink.cli.runs import CliError
from keras_adalink.cli.runs import build
from keras_adalink.cli.runs import read_run
from keras_adalink.cli.runs import write_json


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
    from keras_adalink.models import find_adalink_backbone

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
