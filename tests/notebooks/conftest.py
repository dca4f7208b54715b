"""Executing the notebooks: papermill injects the parameters, nbclient runs the cells.

All notebooks of a session share one kernel (``%reset -f`` empties its namespace before each):
importing torch and transformers costs about ten seconds per fresh kernel on a two-core machine,
and no variable survives from one notebook to the next. Executed copies are written under
``test-artifacts/notebooks/`` for a look when a test fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
# tiny-llama on the small corpus, a few short windows: seconds per job
TINY = {"model": "tiny-llama", "data": "pydoc", "calibration": {"samples": 4, "seq_len": 64, "seed": 0},
        "evaluation": {"windows": 4, "seq_len": 64}}


@pytest.fixture(scope="session")
def kernel():
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(NOTEBOOKS))
    yield manager
    manager.shutdown_kernel(now=True)


def summary_of(notebook: nbformat.NotebookNode) -> dict[str, Any]:
    """The JSON the notebook's cell tagged ``summary`` displayed."""
    for cell in notebook.cells:
        if "summary" in cell.metadata.get("tags", []):
            for output in cell.get("outputs", []):
                if "application/json" in output.get("data", {}):
                    return output["data"]["application/json"]
    raise AssertionError("the notebook displayed no summary")


@pytest.fixture
def execute(kernel, tmp_path):
    """execute(name, **parameters) -> (executed notebook, its summary), on a fresh store in tmp_path."""

    def run(name: str, **parameters: Any) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
        notebook = load_notebook_node(str(NOTEBOOKS / f"{name}.ipynb"))
        parameters = {"store_path": str(tmp_path / "store" / "workbench.duckdb"), **parameters}
        notebook = parameterize_notebook(notebook, parameters, kernel_name="python3", language="python")
        notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
        client = NotebookClient(notebook, km=kernel, timeout=300, store_widget_state=True)
        try:
            client.execute()
        finally:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, ARTIFACTS / f"{name}.ipynb")
            if client.kc is not None:
                client.kc.stop_channels()
        return notebook, summary_of(notebook)

    return run
