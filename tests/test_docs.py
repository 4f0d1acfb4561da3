"""Every public symbol is documented with an example and in the API page."""

import inspect
import os
import re
import subprocess
import sys

import pytest

import keras_adalink

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tests.fixtures.docs import PUBLIC  # noqa: E402


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_symbol_has_docstring_with_example(name):
    doc = inspect.getdoc(PUBLIC[name]) or ""
    assert "Example" in doc and ">>>" in doc, name


def test_api_page_lists_every_public_symbol():
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        page = f.read()
    missing = [name for name in PUBLIC if f"::: {name}\n" not in page]
    assert not missing


def test_coverage_page_matches_the_code():
    """docs/coverage.md is what docs/make_coverage.py writes today.

    In a fresh process: layer names in the page are Keras' auto-generated
    ones, which depend on how many layers a process has made before.
    """
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "docs", "make_coverage.py")]
        + ["--check"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, (
        "docs/coverage.md is stale: run "
        "`KERAS_BACKEND=jax python docs/make_coverage.py`\n"
        + result.stdout[-3000:]
        + result.stderr[-2000:]
    )


def test_readme_counts_match_the_coverage_page():
    """The README's "N adapt; the other M are refused" is the page's."""
    page = open(os.path.join(ROOT, "docs", "coverage.md")).read()
    found = re.search(
        r"(\d+)\s+backbone\s+classes\s+are\s+adapted, (\d+)", page
    )
    readme = " ".join(open(os.path.join(ROOT, "README.md")).read().split())
    covered, refused = found.groups()
    assert f"{covered} KerasHub backbone classes" in readme
    assert f"the other {refused} are refused" in readme


def test_cli_reference_matches_the_parser(monkeypatch):
    """docs/cli.md's reference is what docs/make_cli_reference.py writes
    from today's parser, so the page GitHub shows is `--help`."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "docs"))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("KERAS_ADALINK_QUIET_START", "1")
    import make_cli_reference

    with open(make_cli_reference.PAGE) as f:
        committed = f.read()
    assert committed == make_cli_reference.render(), (
        "docs/cli.md is stale: run `python docs/make_cli_reference.py`"
    )
    assert "### train" in committed and "--backbone" in committed


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_links(path):
    with open(path) as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # code blocks
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        yield target.split("#")[0]


def _pages():
    docs = os.path.join(ROOT, "docs")
    pages = [os.path.join(ROOT, name) for name in ("README.md",)]
    pages += [os.path.join(ROOT, n) for n in ("CONTRIBUTING.md",)]
    return pages + [
        os.path.join(docs, n)
        for n in sorted(os.listdir(docs))
        if n.endswith(".md")
    ]


@pytest.mark.parametrize(
    "page", _pages(), ids=lambda p: os.path.relpath(p, ROOT)
)
def test_relative_links_resolve_in_the_repository(page):
    """Every relative link works on GitHub: its target is a file or folder
    the repository tracks (docs/notebooks/ is a build copy, git-ignored)."""
    broken = []
    for target in _relative_links(page):
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), target))
        ignored = resolved.startswith(
            os.path.join(ROOT, "docs", "notebooks", "")
        )
        if ignored or not os.path.exists(resolved):
            broken.append(target)
    assert not broken, f"{os.path.relpath(page, ROOT)}: {broken}"


def _normal(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


def test_distribution_page_names_every_family_with_our_own_layout():
    """docs/distribution.md's table names each family that has a layout of
    its own in keras_adalink/sites/families.py, in the row "ours"."""
    from keras_adalink.sites.families import FAMILIES

    ours = sorted(
        name.removesuffix("Backbone")
        for name, family in FAMILIES.items()
        if getattr(family, "layout", None) is not None
    )
    with open(os.path.join(ROOT, "docs", "distribution.md")) as f:
        rows = [
            _normal(line.split("|")[1])
            for line in f
            if line.startswith("| ") and "ours" in line.split("|")[2]
        ]
    assert len(ours) >= 10
    missing = [n for n in ours if not any(_normal(n) in row for row in rows)]
    assert not missing


def test_tested_versions_are_the_ones_the_suite_runs_with():
    """docs/install.md's table and pyproject.toml's comment name the
    versions installed where the tests run (what CI runs)."""
    import importlib.metadata

    with open(os.path.join(ROOT, "docs", "install.md")) as f:
        page = f.read().split("## Tested versions")[1]
    table = dict(re.findall(r"^\| ([a-z-]+) \| ([\d.]+) \|$", page, re.M))
    assert {"keras", "keras-hub", "jax", "tensorflow", "torch"} <= set(table)
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = " ".join(f.read().replace("#", " ").split())
    for package, version in table.items():
        installed = importlib.metadata.version(package).split("+")[0]
        assert installed == version, package
        assert f"{package} {version}" in pyproject, package


def test_citation_names_this_version():
    with open(os.path.join(ROOT, "CITATION.cff")) as f:
        assert f"\nversion: {keras_adalink.__version__}\n" in f.read()


def test_guarantees_page_says_where_each_row_runs(monkeypatch):
    """docs/guarantees.md's backends column is what the tests' markers say
    (docs/make_guarantees.py); every test it names exists."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "docs"))
    import make_guarantees

    committed = make_guarantees.PAGE.read_text()
    assert committed == make_guarantees.render(), (
        "docs/guarantees.md is stale: run `python docs/make_guarantees.py`"
    )
    assert make_guarantees.column("`test_export.py`") == "jax, tensorflow"
    assert make_guarantees.column("`test_docs.py`") == "tensorflow"
