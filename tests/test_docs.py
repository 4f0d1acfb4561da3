"""Every public symbol is documented with an example and in the API page."""

import inspect
import os
import re
import subprocess
import sys

import pytest

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
    found = re.search(r"(\d+) backbone classes are\s+adapted, (\d+)", page)
    readme = " ".join(open(os.path.join(ROOT, "README.md")).read().split())
    covered, refused = found.groups()
    assert f"{covered} KerasHub backbone classes" in readme
    assert f"the other {refused} are refused" in readme
