"""`keras-adalink predict`: one JSON line per input, with a `prediction`."""

import json

import numpy as np

from keras_adalink.cli import generation
from keras_adalink.cli.rows import features
from keras_adalink.cli.runs import CliError
from keras_adalink.cli.runs import load_run
from keras_adalink.cli.runs import pick_task
from keras_adalink.datasets import column
from keras_adalink.datasets import read_rows


def cmd_predict(args):
    run, model, preprocessor = load_run(args.adapter)
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
            preprocessor,
            prompts,
            args.max_length or run["sequence_length"],
            args.sampler,
        )
        for prompt, answer in zip(prompts, answers):
            print(json.dumps({"text": prompt, "prediction": answer}))
        return
    own, preprocessor, predict = pick_task(run, model, preprocessor, args.task)
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
