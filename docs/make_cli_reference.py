"""Writes the reference half of docs/cli.md from the command's own parser.

Everything above the marker line is written by hand (how to use the
command); everything below it is `keras-adalink --help` and each
subcommand's `--help`, at 80 columns, so the page reads the same on GitHub
and on the docs site. `tests/test_docs.py` fails when the committed page
differs from what this script writes.

    python docs/make_cli_reference.py          # rewrite
    python docs/make_cli_reference.py --check  # compare
"""

import argparse
import os
import pathlib
import sys

import generated_page

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "cli.md"
MARKER = (
    "<!-- Generated below by docs/make_cli_reference.py from the parser; "
    "do not edit by hand. -->"
)


def reference():
    """`keras-adalink --help` and each command's `--help`, as markdown."""
    os.environ["COLUMNS"] = "80"  # the same wrapping on every machine
    os.environ["KERAS_ADALINK_QUIET_START"] = "1"  # no TensorFlow logs
    sys.path.insert(0, str(ROOT))
    from keras_adalink.cli import parser

    top = parser()
    sections = ["### keras-adalink", "", "```text", top.format_help(), "```"]
    # argparse has no public accessor for its subcommands.
    commands = next(
        a for a in top._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name, command in commands.choices.items():
        sections += ["", f"### {name}", "", "```text"]
        sections += [command.format_help(), "```"]
    return "\n".join(sections)


def render():
    text = PAGE.read_text()
    if MARKER not in text:
        raise ValueError(f"{PAGE} has no line {MARKER!r}")
    return text.split(MARKER)[0] + MARKER + "\n\n" + reference() + "\n"


if __name__ == "__main__":
    sys.exit(generated_page.main(PAGE, render, __doc__.splitlines()[0]))
