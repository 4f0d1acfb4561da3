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

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="backend-independent code; run once, on jax, to keep CI short",
    ),
]


@pytest.mark.parametrize("name", list(build_notebooks.NOTEBOOKS))
def test_committed_notebook_matches_its_source(name):
    committed = nbformat.read(os.path.join(FOLDER, name), as_version=4)
    assert build_notebooks.same_cells(committed, build_notebooks.build(name)), (
        f"{name} differs from build_notebooks.py; rerun "
        "`make notebooks NAMES={name}`"
    )


@pytest.mark.parametrize("name", list(build_notebooks.NOTEBOOKS))
def test_committed_notebook_carries_a_full_run(name):
    """Outputs are checked for being there, not for their values."""
    committed = nbformat.read(os.path.join(FOLDER, name), as_version=4)
    executed = committed.metadata.get("keras_adalink", {}).get("executed")
    assert executed, f"{name} was not executed: run `make notebooks`"
    assert {"date", "backend", "keras", "seconds"} <= set(executed)
    assert executed["date"] in committed.cells[0].source  # shown up front
    assert "colab.research.google.com" in committed.cells[0].source
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell was not run"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = [c for c in code if c.outputs]
    assert len(printed) >= len(code) // 2, "most cells should show results"
    if "plt." in "".join(c.source for c in code):
        assert any("image/png" in o.get("data", {}) for o in outputs), (
            f"{name} plots, but no image was committed"
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
