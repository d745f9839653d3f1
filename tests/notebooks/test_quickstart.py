"""The quickstart notebook runs top to bottom on the FF++ sample (so it cannot rot)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
import pytest

pytestmark = pytest.mark.slow  # runs the quickstart notebook end to end

NB = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(ffpp_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_NOTEBOOK_DATA", str(ffpp_dir))
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert (tmp_path / "quickstart_roc.png").stat().st_size > 1000
    text = "".join(o.get("text", "") for o in outputs)
    assert "items:" in text  # the extraction summary was printed
