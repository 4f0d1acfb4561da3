"""The Colab notebooks run end to end (fast mode) and match their source."""

import os
import sys

import keras
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "examples", "notebooks")
sys.path.insert(0, FOLDER)
import build_notebooks  # noqa: E402

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="backend-independent code; run once, on jax, to keep CI short",
)


@pytest.mark.parametrize("name", list(build_notebooks.NOTEBOOKS))
def test_committed_notebook_matches_its_source(name):
    committed = nbformat.read(os.path.join(FOLDER, name), as_version=4)
    assert committed == build_notebooks.build(name), (
        f"{name} differs from build_notebooks.py; rerun "
        "`.venv/bin/python examples/notebooks/build_notebooks.py`"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(build_notebooks.NOTEBOOKS))
def test_notebook_runs(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("KERAS_ADALINK_FAST", "1")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    notebook = nbformat.read(os.path.join(FOLDER, name), as_version=4)
    NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
