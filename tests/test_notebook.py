"""The example notebook, executed by a real Jupyter kernel (top-level await, sync for)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "examples" / "notebook.ipynb"


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@pytest.mark.slow
def test_notebook_runs_in_a_jupyter_kernel() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    assert _stdout(code[1]).strip() == "[0, 1, 2]"
    assert _stdout(code[2]).strip() == "[0, 1, 2, 3]"
    # cycle(max_iter=25) over 10 samples: 0..9, 0..9, 0..4
    assert _stdout(code[3]).strip() == str(2 * sum(range(10)) + sum(range(5)))
    assert _stdout(code[4]).strip() == "[0, 1, 2]"
