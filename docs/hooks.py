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


def on_page_markdown(markdown, page, config, files):
    # Pages link the notebooks where GitHub has them; the site renders its
    # copies in docs/notebooks/ (on_config).
    markdown = markdown.replace("](../examples/notebooks/", "](notebooks/")
    # and the committed result tables where the Benchmarks page includes
    # them.
    markdown = re.sub(
        r"\]\(\.\./benchmarks/results/[\w.-]+\.md\)",
        "](benchmarks.md)",
        markdown,
    )
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
