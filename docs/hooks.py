"""mkdocs hook: publish the committed benchmark plots and the executed
notebooks (rendered with their outputs by mkdocs-jupyter) with the docs."""

import glob
import os
import re
import shutil

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def on_files(files, config):
    pattern = os.path.join(ROOT, "benchmarks", "results", "*.png")
    for path in sorted(glob.glob(pattern)):
        # At the docs root: the included result pages link them by bare
        # name, which also works next to the .md file on GitHub.
        name = os.path.basename(path)
        files.append(File.generated(config, name, abs_src_path=path))
    return files


def on_config(config):
    """Copies the committed notebooks to docs/notebooks/ (git-ignored):
    mkdocs-jupyter renders notebooks found among the docs' own files."""
    target = os.path.join(ROOT, "docs", "notebooks")
    os.makedirs(target, exist_ok=True)
    for path in glob.glob(os.path.join(target, "*.ipynb")):
        os.remove(path)
    notebooks = os.path.join(ROOT, "examples", "notebooks", "*.ipynb")
    for path in sorted(glob.glob(notebooks)):
        shutil.copy(path, target)
    return config


_RESULT = re.compile(r'^--8<-- "(benchmarks/results/[\w.-]+\.md)"$', re.M)


def cli_reference():
    """`keras-adalink --help` and each command's `--help`, as markdown."""
    import argparse

    os.environ["COLUMNS"] = "80"  # the same wrapping on every machine
    os.environ["KERAS_ADALINK_QUIET_START"] = "1"  # no TensorFlow start-up logs
    from keras_adalink.cli import parser

    top = parser()
    sections = ["## keras-adalink", "", "```text", top.format_help(), "```"]
    # argparse has no public accessor for its subcommands.
    commands = next(
        a for a in top._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name, command in commands.choices.items():
        sections += ["", f"## {name}", "", "```text"]
        sections += [command.format_help(), "```"]
    return "\n".join(sections)


def on_page_markdown(markdown, page, config, files):
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return include_results(markdown)


def include_results(markdown):
    """Includes committed result tables with their headings one level below
    the page's heading above them, so each result's own title is its
    section heading on the page, shown once."""

    def include(match):
        above = re.findall(r"^(#+) ", markdown[: match.start()], flags=re.M)
        shift = "#" * (len(above[-1]) if above else 1)
        with open(os.path.join(ROOT, match.group(1))) as f:
            text = f.read()
        return re.sub(
            r"^(#+) ", lambda m: f"{shift}{m.group(1)} ", text, flags=re.M
        )

    return _RESULT.sub(include, markdown)
