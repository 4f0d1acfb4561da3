"""mkdocs hook: publish the committed benchmark plots with the docs."""

import glob
import os

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
