"""Demo notebooks executed headless by nbclient, as CI and people without a browser run them."""

from __future__ import annotations

import json
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def execute(name: str, tmp_path: pathlib.Path) -> tuple[nbformat.NotebookNode, int]:
    nb = nbformat.read(ROOT / "demo_notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    out = tmp_path / name
    nbformat.write(nb, out)
    return nb, out.stat().st_size


def test_quickstart_runs_headless_and_saves_a_small_static_dashboard(tmp_path):
    nb, size = execute("quickstart.ipynb", tmp_path)
    train_cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%train"))
    html = [o["data"]["text/html"] for o in train_cell.outputs if "text/html" in o.get("data", {})]
    assert html, train_cell.outputs
    frozen = html[-1]
    assert "completed" in frozen and "<svg" in frozen and "<script" not in frozen
    assert "accuracy" in frozen  # the logged metric got its own chart
    assert size < 300_000, f"saved notebook is {size} bytes"
    # nothing inlines BokehJS into the notebook
    blob = json.dumps(nb)
    assert "application/vnd.bokehjs_load" not in blob and "Bokeh.set_log_level" not in blob
    # the frozen dashboard is plain HTML: nbconvert's export shows it without any widget manager
    from nbconvert import HTMLExporter

    exported, _ = HTMLExporter().from_notebook_node(nb)
    assert "completed" in exported and "tm-chart" in exported
    # the history cell shows a DataFrame of the run
    history_cell = nb.cells[train_cell_index(nb) + 2]
    assert any("accuracy" in str(o.get("data", {}).get("text/plain", "")) for o in history_cell.outputs)


def train_cell_index(nb: nbformat.NotebookNode) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("%%train"))
