"""`keras-adalink`: train, evaluate, predict with and export AdaLink adapters.

A run directory (`--out` of `train`) holds `adapter.safetensors` (what
`save_adapter` writes), `run.json` (backbone, columns, task, labels, rank,
sequence length), `metrics.json` (loss and accuracy, Pearson r or
perplexity per epoch, train and validation, and final), `checkpoint.npz`
(for `train --resume`), TensorBoard logs in `logs/` and
`learning_curve.png`. Set KERAS_BACKEND to pick the backend.
"""

import argparse
import sys

from keras_adalink.cli import distributed
from keras_adalink.cli.compose import cmd_compose
from keras_adalink.cli.demo import cmd_demo
from keras_adalink.cli.evaluate import cmd_eval
from keras_adalink.cli.export import cmd_export
from keras_adalink.cli.predict import cmd_predict
from keras_adalink.cli.runs import CliError
from keras_adalink.cli.train import cmd_train
from keras_adalink.cli.train import default_learning_rate
from keras_adalink.schedules.warmup_rsqrt_decay import DECAYS

__all__ = ["CliError", "default_learning_rate", "main", "parser"]

EXAMPLES = """examples:
  keras-adalink demo
  keras-adalink train --data train.csv --text-column text \\
      --label-column label --task classification --rank 4 --out runs/rt
  keras-adalink eval --adapter runs/rt --data test.csv
  keras-adalink predict --adapter runs/rt --text "a gorgeous, witty film"
  keras-adalink export --adapter runs/rt --out served/1 --fold
  keras-adalink export --adapter runs/chat --format peft --out peft/chat
  keras-adalink train --data nli.csv --text-column premise \\
      --text-pair-column hypothesis --label-column label \\
      --task classification --out runs/nli
  keras-adalink train --data all.csv --task-column task --text-column text \\
      --label-column label --task classification --out runs/multi
  keras-adalink predict --adapter runs/multi --task rt --text "witty"
  keras-adalink train --backbone ./gemma_preset --data chat.jsonl \\
      --task generation --prompt-column prompt --response-column answer \\
      --out runs/chat
  keras-adalink predict --adapter runs/chat --text "Say hi" --max-length 64
  keras-adalink compose --adapter runs/rt --adapter topic=runs/news \\
      --out runs/both
  keras-adalink train ... --out runs/rt --resume   # after an interruption
"""


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
    train.add_argument(
        "--data", required=True, help="CSV, TSV, JSONL or tfds:NAME"
    )
    train.add_argument(
        "--task",
        choices=["classification", "regression", "generation"],
        required=True,
        help="classification/regression: a label per text; generation: a "
        "response per prompt (causal or seq2seq LM)",
    )
    train.add_argument(
        "--text-column",
        help="column with the text (classification, regression)",
    )
    train.add_argument(
        "--text-pair-column",
        help="second text of a pair (NLI, paraphrase, STS); fed through the "
        "preprocessor's pair input",
    )
    train.add_argument(
        "--label-column",
        help="column with the label (classification) or number (regression)",
    )
    train.add_argument(
        "--task-column",
        help="column naming each row's task: one run trains a module and a "
        "head per task (TaskRouter), each with its own labels",
    )
    train.add_argument(
        "--prompt-column",
        help="generation: column with the prompt (seq2seq: the input text)",
    )
    train.add_argument(
        "--response-column",
        help="generation: column with the response; the loss is on its "
        "tokens only",
    )
    train.add_argument(
        "--rank", type=int, default=4, help="AdaLink bottleneck width"
    )
    train.add_argument(
        "--quantize",
        choices=("int8", "int4", "float8"),
        help="quantize the frozen backbone's weights first (Keras' "
        "quantize(); the adapter stays float; eval, predict and export of "
        "the run quantize the same way; GPTQ/AWQ: from Python)",
    )
    train.add_argument(
        "--remat",
        action="store_true",
        help="frozen blocks recompute their activations in the backward "
        "pass (less memory, about one more forward pass of time)",
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
        "--sequence-length",
        type=int,
        default=64,
        help="tokens a text, padded (generation: prompt + response)",
    )
    train.add_argument(
        "--val-data", help="validation file: metrics every epoch, and final"
    )
    train.add_argument(
        "--split", default="train", help="split of a tfds:NAME --data"
    )
    train.add_argument(
        "--val-split", default="test", help="split of a tfds:NAME --val-data"
    )
    train.add_argument(
        "--backbone",
        help="KerasHub preset folder, HuggingFace-format folder of a family "
        "KerasHub converts, or KerasHub preset name (needs network); the "
        "family must be one keras-adalink adapts (default: the embedded "
        "MiniLM)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last epoch's "
        "checkpoint (same flags)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--out", required=True, help="run folder to write")
    distributed.add_arguments(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="metrics of a trained adapter on a file",
        formatter_class=formatter,
    )
    ev.add_argument("--adapter", required=True, help="a train --out folder")
    ev.add_argument(
        "--data", required=True, help="CSV, TSV, JSONL or tfds:NAME"
    )
    ev.add_argument(
        "--split", default="test", help="split of a tfds:NAME --data"
    )
    ev.add_argument("--json", help="also write the metrics here")
    ev.add_argument(
        "--task",
        help="task of a multi-task run (default for a --task-column run: "
        "every task, on its own rows)",
    )
    ev.add_argument(
        "--max-length",
        type=int,
        help="generation: tokens to generate up to (default: the run's "
        "sequence length)",
    )
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser(
        "predict",
        help="predictions for texts or a file",
        formatter_class=formatter,
    )
    pr.add_argument("--adapter", required=True, help="a run folder")
    pr.add_argument("--text", nargs="+", help="one or more texts (or prompts)")
    pr.add_argument(
        "--data", help="a file (or tfds:NAME) with the text (prompt) column"
    )
    pr.add_argument(
        "--split", default="test", help="split of a tfds:NAME --data"
    )
    pr.add_argument("--task", help="task of a multi-task run")
    pr.add_argument(
        "--max-length",
        type=int,
        help="generation: tokens to generate up to, prompt included for "
        "causal LMs (default: the run's sequence length)",
    )
    pr.add_argument(
        "--sampler",
        default="greedy",
        choices=["greedy", "top_k", "top_p", "random", "beam"],
        help="generation: KerasHub sampler",
    )
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        help="TF-Serving SavedModel (jax/tf) or HF PEFT adapter folder",
        formatter_class=formatter,
    )
    ex.add_argument("--adapter", required=True, help="a run folder")
    ex.add_argument(
        "--out", required=True, help="SavedModel or PEFT adapter folder"
    )
    ex.add_argument("--fold", action="store_true", help="fold into the table")
    ex.add_argument(
        "--format",
        default="saved_model",
        choices=["saved_model", "peft"],
        help="saved_model: TF Serving; peft: HF PEFT LoRA folder",
    )
    ex.add_argument(
        "--base-model",
        help="peft: base_model_name_or_path, the HF model id or folder "
        "(default: the run's --backbone folder)",
    )
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
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (CliError, FileNotFoundError, ValueError) as e:
        print(f"keras-adalink {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
