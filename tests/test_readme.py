import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(path):
    with open(path) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.end_to_end
@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's first-screen example runs as written."""
    monkeypatch.chdir(tmp_path)
    block = _python_blocks(os.path.join(ROOT, "README.md"))[0]
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "sentiment.safetensors").stat().st_size < 50_000


def test_readme_first_screen_has_the_two_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        first_screen = "\n".join(f.read().splitlines()[:20])
    assert re.search(r"^make demo\b", first_screen, re.M)
    assert re.search(r"^make test\b", first_screen, re.M)


@pytest.mark.once
def test_docs_home_shows_the_readme_example():
    """The docs site's quickstart is the one the test above runs."""
    index = _python_blocks(os.path.join(ROOT, "docs", "index.md"))
    assert index[0] == _python_blocks(os.path.join(ROOT, "README.md"))[0]


@pytest.mark.once
def test_readme_results_are_the_benchmark_table():
    """Each row of the README's results table is the same method's row of
    table 1 in benchmarks/results/evidence.md (the seeds column aside)."""

    def rows(text):
        return {
            cells[0]: cells[1:]
            for line in text.splitlines()
            if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]
        }

    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme.split("## How it compares")[1].split("\n## ")[0]
    with open(os.path.join(ROOT, "benchmarks", "results", "evidence.md")) as f:
        evidence = f.read()
    table = evidence.split("## 1. Single task")[1].split("\n## ")[0]
    ours, theirs = rows(section), rows(table)
    assert len(ours) == 5  # the header and four methods
    for method, cells in ours.items():
        assert theirs[method][: len(cells)] == cells, method


@pytest.mark.once
def test_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= 150
