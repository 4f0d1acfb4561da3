"""Run folders and the models behind them: what `--backbone` names, the
KerasHub task and preprocessor it loads, and `run.json`.

A run is a dict saved as `run.json`. Its `task` says which model serves it:
`classification` / `regression` (the frozen encoder or decoder, AdaLink, a
masked-mean-pooled linear head) or `generation` (KerasHub's own `CausalLM`
or `Seq2SeqLM` for the preset, AdaLink before its first block). A multi-task
run (`compose`, or `train --task-column`) holds `task_names` and one run
per task under `tasks`.
"""

import json
import os
import socket


class CliError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def backbone_source(name):
    """The preset `--backbone` names: a local folder or a preset handle.

    `None` is the embedded MiniLM. A folder may be a KerasHub preset (what
    `save_to_preset` writes) or a HuggingFace-format checkpoint of a family
    KerasHub converts. Anything else is a KerasHub preset name or handle
    (`roberta_base_en`, `kaggle://...`, `hf://...`), which needs the network:
    without it the error says so at once instead of after download retries.
    """
    from keras_adalink.datasets import minilm_path

    if name is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return minilm_path()
    if os.path.isdir(name):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return name
    if "://" not in name and (os.sep in name or name.startswith((".", "~"))):
        raise CliError(
            f"backbone '{name}' is not a local folder; pass --backbone with "
            "a KerasHub preset folder (written by `save_to_preset`), a "
            "HuggingFace-format folder, or a KerasHub preset name"
        )
    host = "huggingface.co" if name.startswith("hf://") else "www.kaggle.com"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise CliError(
            f"backbone preset '{name}' is downloaded from {host}, which "
            "cannot be reached from here. Where there is network, save it "
            f"with `keras_hub.models.Backbone.from_preset('{name}')` then "
            "`.save_to_preset(PATH)` (with its tokenizer), and pass "
            "--backbone PATH"
        ) from None
    return name


def classifier(run):
    """`(model, preprocessor)` for a classification or regression run.

    The backbone and its text-classifier preprocessor come from KerasHub
    (`Backbone.from_preset`, `TextClassifierPreprocessor.from_preset`), so
    any family whose backbone reads `token_ids` and `padding_mask` works.
    The head is `heads.mean_pooled_classifier` (why mean pooling: its
    docstring).
    """
    import keras_hub

    import keras_adalink
    from keras_adalink.heads import mean_pooled_classifier

    preprocessor = preprocessor_of(run)
    backbone = keras_hub.models.Backbone.from_preset(
        backbone_source(run["backbone"])
    )
    adapted = keras_adalink.adapt(backbone, **adapt_options(run))
    return mean_pooled_classifier(adapted, run["num_outputs"]), preprocessor


def language_model(run):
    """`(lm, preprocessor)`: the adapted KerasHub `CausalLM` or `Seq2SeqLM`
    of a generation run, and the preset's own preprocessor at the run's
    sequence length.

    The LM carries no preprocessor: the command line makes its inputs
    itself (prompt and response token ids, `keras_adalink.cli.generation`)
    and feeds the LM those.
    """
    import keras_hub

    import keras_adalink

    source = backbone_source(run["backbone"])
    errors = []
    for cls in (keras_hub.models.CausalLM, keras_hub.models.Seq2SeqLM):
        try:
            lm = cls.from_preset(source)
            break
        except ValueError as e:
            errors.append(str(e))
    else:
        raise CliError(
            f"--task generation needs a causal or seq2seq LM; backbone "
            f"'{run['backbone']}' has neither in KerasHub ({errors[-1]})"
        )
    if lm.preprocessor is None:
        raise CliError(
            f"backbone '{run['backbone']}' has no tokenizer or preprocessor "
            "saved with it; save the task with `save_to_preset`"
        )
    if isinstance(lm, keras_hub.models.Seq2SeqLM):
        lm.preprocessor.encoder_sequence_length = run["sequence_length"]
        lm.preprocessor.decoder_sequence_length = run["sequence_length"]
    else:
        lm.preprocessor.sequence_length = run["sequence_length"]
    lm = keras_adalink.adapt(lm, **adapt_options(run))
    preprocessor, lm.preprocessor = lm.preprocessor, None
    return lm, preprocessor


def adapt_options(run):
    """`adapt()` arguments a run records: rank, quantization, remat."""
    return {
        "rank": run["rank"],
        "quantize": run.get("quantize"),
        "remat": run.get("remat", False),
    }


def build(run):
    """`(model, preprocessor)` for a single-task run."""
    if run["task"] == "generation":
        return language_model(run)
    return classifier(run)


def read_run(folder):
    spec = os.path.join(folder, "run.json")
    if not os.path.isfile(spec):
        raise CliError(
            f"{folder} is not a keras-adalink run folder (no run.json)"
        )
    with open(spec) as f:
        return json.load(f)


def write_json(path, tree):
    with open(path, "w") as f:
        json.dump(tree, f, indent=2, allow_nan=False)


def load_run(folder, run=None):
    """`(run, model, preprocessor)` of a run folder (`run`: its `run.json`,
    if already read); a multi-task run's model serves all of its tasks."""
    import keras_adalink

    run = run or read_run(folder)
    path = os.path.join(folder, "adapter.safetensors")
    if "tasks" in run:
        base, preprocessor = build(run["tasks"][run["task_names"][0]])
        return run, keras_adalink.compose([path], base=base), preprocessor
    model, preprocessor = build(run)
    keras_adalink.load_adapter(model, path)
    return run, model, preprocessor


def pick_task(run, model, preprocessor, task):
    """`(task's run, its preprocessor, x -> its scores)` for `--task`.

    `preprocessor` is the one `load_run` built; a task of a multi-task run
    gets it at its own sequence length (the tasks share one backbone and
    so one tokenizer).
    """
    import numpy as np

    if "tasks" not in run:
        if task is not None:
            raise CliError(
                "--task picks a task of a multi-task run (train "
                "--task-column, or compose); this run has one task"
            )
        return run, preprocessor, lambda x: model.predict(x, verbose=0)
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

    preprocessor.sequence_length = own["sequence_length"]
    return own, preprocessor, predict


def preprocessor_of(run):
    """A classification run's preprocessor, without loading its backbone."""
    import keras_hub

    try:
        return keras_hub.models.TextClassifierPreprocessor.from_preset(
            backbone_source(run["backbone"]),
            sequence_length=run["sequence_length"],
        )
    except ValueError as e:
        raise CliError(
            f"backbone '{run['backbone']}' has no text-classifier "
            f"preprocessor in KerasHub ({e})"
        ) from None


def multi_task(run):
    """`(model, preprocessor)` of an untrained `--task-column` run.

    One frozen backbone; each task an adapter and a head of its own width,
    joined by `compose` into one `TaskRouter` + `TaskHeads` model whose
    `task_id` input routes every row (exactly what `compose` makes of
    separately trained runs, so eval, predict, export and compose treat
    both alike).
    """
    import keras_hub

    import keras_adalink
    from keras_adalink.heads import mean_pooled_classifier
    from keras_adalink.quantization import quantize_frozen
    from keras_adalink.quantization import rematerialize_blocks

    first = run["tasks"][run["task_names"][0]]
    source = backbone_source(first["backbone"])
    backbone = keras_hub.models.Backbone.from_preset(source)
    # One frozen backbone for every task: quantized and rematerialised once.
    options = adapt_options(first)
    if options["quantize"]:
        quantize_frozen(backbone, options["quantize"])
    if options["remat"]:
        rematerialize_blocks(backbone)
    models = {
        name: mean_pooled_classifier(
            keras_adalink.adapt(backbone, rank=own["rank"]),
            own["num_outputs"],
        )
        for name, own in run["tasks"].items()
    }
    models = {name: models[name] for name in run["task_names"]}
    return keras_adalink.compose(models), preprocessor_of(first)
