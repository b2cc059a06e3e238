"""The profiling demo notebook, executed headless by nbclient."""

from __future__ import annotations

import json
import pathlib
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_profiling_demo_runs_headless_small_and_exports_to_html(tmp_path):
    work = tmp_path / "nb"
    work.mkdir()
    nb = nbformat.read(ROOT / "demo_notebooks" / "profiling.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    out = tmp_path / "profiling.ipynb"
    nbformat.write(nb, out)

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    summaries = [o["data"]["text/html"] for c in code for o in c.outputs if "tm-prof" in o.get("data", {}).get("text/html", "")]
    assert len(summaries) == 4  # statement, schedule, autocast, memory
    assert all("<script" not in s and "<svg" in s for s in summaries)
    assert "steps profiled</b> 3 of 3" in summaries[1] and "TensorBoard run" in summaries[1]
    assert "memory allocated" in summaries[3]
    texts = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for c in code for o in c.outputs)
    assert "3 steps profiled; trace written: True" in texts
    assert "aten::_to_copy" in texts  # autocast's casts show in the table
    assert "CPU peak allocated during the step:" in texts
    assert list((work / "runs" / "profiling").iterdir())  # the TensorBoard run was written

    size = out.stat().st_size
    assert size < 1_500_000, f"saved notebook is {size} bytes"
    blob = json.dumps(nb)
    assert "application/vnd.bokehjs_load" not in blob and "cdn.bokeh.org" not in blob
    from nbconvert import HTMLExporter

    exported, _ = HTMLExporter().from_notebook_node(nb)
    assert exported.count("tm-prof") >= 4
    shutil.rmtree(work, ignore_errors=True)
