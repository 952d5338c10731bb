"""Every notebook in notebooks/ runs top to bottom, and is stored without outputs.

``python -m pytest -q -m slow tests/test_notebooks.py`` executes them; with the environment
variable ``CARTWIN_EXECUTED_NOTEBOOKS`` set to a folder, each executed notebook is also written
there under its own file name (the docs site is built from those copies).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _read(path: Path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    for cell in _read(path).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: strip the outputs before committing"
            assert cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path):
    pytest.importorskip("ipykernel")
    nbclient = pytest.importorskip("nbclient")
    notebook = _read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    figures = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert figures, f"{path.name}: no figure was displayed"
    executed_dir = os.environ.get("CARTWIN_EXECUTED_NOTEBOOKS")
    if executed_dir:
        Path(executed_dir).mkdir(parents=True, exist_ok=True)
        pytest.importorskip("nbformat").write(notebook, Path(executed_dir) / path.name)
