"""`keras-adalink eval`: a run's metrics on a data file, per task."""

import json

from keras_adalink.cli import generation
from keras_adalink.cli.rows import features
from keras_adalink.cli.rows import scores
from keras_adalink.cli.rows import targets
from keras_adalink.cli.rows import task_rows
from keras_adalink.cli.runs import load_run
from keras_adalink.cli.runs import pick_task
from keras_adalink.cli.runs import write_json
from keras_adalink.datasets import column
from keras_adalink.datasets import read_rows


def cmd_eval(args):
    run, model, preprocessor = load_run(args.adapter)
    rows = read_rows(args.data, args.split)
    if run.get("task") == "generation":
        result = generation.evaluate(
            model,
            preprocessor,
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
                result[name] = _scores(
                    run, model, preprocessor, name, own, args.data
                )
    else:
        if "tasks" in run:
            rows = task_rows(run, rows, args.task, args.data)
        result = _scores(run, model, preprocessor, args.task, rows, args.data)
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result)


def _has_task_column(run, rows):
    first = run["tasks"][run["task_names"][0]]
    return "task_column" in first and rows and first["task_column"] in rows[0]


def _scores(run, model, preprocessor, task, rows, path):
    own, preprocessor, predict = pick_task(run, model, preprocessor, task)
    return scores(
        own,
        predict,
        features(own, preprocessor, rows, path),
        targets(own, rows, path),
    )
