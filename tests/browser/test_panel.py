"""The side panel, the status-bar item and Stop, in JupyterLab 4 and Notebook 7 (Debian's Chromium).

Run with ``pytest -m browser tests/browser``. Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from test_lab import JS_FIND_NOTEBOOK, JS_KERNEL_PRINT, PageWatch, _wait_app, _wait_notebook_ready

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAIN_STEPS = 3000

SETUP = """%load_ext torchmagic
import time, torch
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 8), torch.randn(64, 1)"""

TRAIN = f"""%%train --total {TRAIN_STEPS}
for i in range({TRAIN_STEPS}):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    time.sleep(0.01)"""

BIG = "big = torch.ones(48 * 1024 * 1024 // 4)"


def _notebook(*sources: str) -> str:
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": src}
        for i, src in enumerate(sources)
    ]
    kernelspec = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return json.dumps({"cells": cells, "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5})


JS_RUN_CELL = (
    """async ([path, index]) => {
  const panel = ("""
    + JS_FIND_NOTEBOOK
    + """)(path);
  window.jupyterapp.shell.activateById(panel.id);
  panel.content.activeCellIndex = index;
  // Not awaited: the command's promise settles only when the cell has run.
  void window.jupyterapp.commands.execute('notebook:run-cell');
}"""
)

JS_CELL_OUTPUT = (
    """([path, index]) => {
  const panel = ("""
    + JS_FIND_NOTEBOOK
    + """)(path);
  const cell = panel.content.widgets[index].model.toJSON();
  return { count: cell.execution_count, outputs: JSON.stringify(cell.outputs || []) };
}"""
)

PANEL = "#torchmagic-sidebar"
KERNEL = f"{PANEL} li.torchmagic-kernel"
THREAD_ALIVE = "import threading\nprint(any(t.name == 'torchmagic-status' for t in threading.enumerate()))"


def _run_cell(page, path: str, index: int) -> None:
    page.evaluate(JS_RUN_CELL, [path, index])


def _wait_cell_done(page, path: str, index: int, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate(JS_CELL_OUTPUT, [path, index])
        idle = page.evaluate("(path) => (" + JS_FIND_NOTEBOOK + ")(path).sessionContext.kernelDisplayStatus", path)
        if state["count"] is not None and idle == "idle":
            return state["outputs"]
        time.sleep(0.2)
    raise AssertionError(f"cell {index} of {path} did not finish")


# The side panel's tables against its width: none wider than the panel, nothing to scroll sideways.
JS_PANEL_OVERFLOW = """(panel) => {
  const el = document.querySelector(panel);
  const right = el.getBoundingClientRect().right;
  const wide = Array.from(el.querySelectorAll('table')).filter(t => t.getBoundingClientRect().right > right + 1);
  return { scroll: [el.scrollWidth, el.clientWidth], tables: el.querySelectorAll('table').length,
           wide: wide.map(t => t.className + ': ' + Math.round(t.getBoundingClientRect().right) + ' > ' + Math.round(right)) };
}"""


def assert_panel_tables_fit(page, what: str) -> None:
    report = page.evaluate(JS_PANEL_OVERFLOW, "#torchmagic-sidebar")
    assert report["tables"] >= 1 and report["wide"] == [], (what, report)
    assert report["scroll"][0] <= report["scroll"][1], (what, report)  # scrollWidth <= clientWidth


def _step(page) -> int | None:
    text = page.locator(f"{KERNEL} .torchmagic-run-step").first.text_content(timeout=2000) or ""
    match = re.search(r"step (\d+)", text)
    return int(match.group(1)) if match else None


def _toggle_panel(page) -> None:
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="torchmagic-sidebar"]').click()


def test_panel_run_stop_memory_and_dead_kernel(lab_server, browser, artifacts):
    (lab_server.root / "panel.ipynb").write_text(_notebook(SETUP, TRAIN, "%memory on", BIG))
    (lab_server.root / "plain.ipynb").write_text(_notebook("answer = 42"))
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    watch = PageWatch.attach(page)
    try:
        page.goto(lab_server.page_url("lab/tree/panel.ipynb?reset"))
        _wait_app(page)
        _wait_notebook_ready(page, "panel.ipynb")

        # The panel: a sidebar tab titled torchmagic; no kernel until one loads torchmagic.
        tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="torchmagic-sidebar"]')
        assert tab.get_attribute("title") == "torchmagic"
        _toggle_panel(page)
        page.locator(PANEL).wait_for(state="visible")
        assert page.locator(f"{PANEL} .torchmagic-panel-empty").count() == 1

        _run_cell(page, "panel.ipynb", 0)
        _wait_cell_done(page, "panel.ipynb", 0)
        page.locator(f"{KERNEL} .torchmagic-kernel-memory").wait_for(timeout=15000)
        assert page.locator(KERNEL).count() == 1
        assert "panel.ipynb" in page.locator(f"{KERNEL} .torchmagic-kernel-label").inner_text()
        assert page.locator(f'{KERNEL} tr[data-device="cpu"]').count() == 1
        # Shown: the kernel publishes from its thread; hidden: no thread (the panel costs nothing).
        assert page.evaluate(JS_KERNEL_PRINT, ["panel.ipynb", THREAD_ALIVE]) == "True"
        _toggle_panel(page)
        page.locator(PANEL).wait_for(state="hidden")
        assert page.evaluate(JS_KERNEL_PRINT, ["panel.ipynb", THREAD_ALIVE]) == "False"
        # The status-bar item shows the current kernel; clicking it opens the panel again.
        item = page.locator(".torchmagic-status")
        assert "RSS" in item.inner_text()
        item.click()
        page.locator(PANEL).wait_for(state="visible")

        # A %%train run: its step moves in the panel and in the status bar, then Stop.
        _run_cell(page, "panel.ipynb", 1)
        page.wait_for_function(
            f"() => /step [1-9]/.test(document.querySelector('{KERNEL} .torchmagic-run-step')?.textContent ?? '')",
            timeout=30000,
        )
        first = _step(page)
        page.wait_for_function(
            "(first) => { const m = /step (\\d+)/.exec("
            f"document.querySelector('{KERNEL} .torchmagic-run-step')?.textContent ?? '');"
            " return m !== null && Number(m[1]) > first; }",
            arg=first,
            timeout=15000,
        )
        page.wait_for_function(
            "() => /step \\d+/.test(document.querySelector('.torchmagic-status')?.textContent ?? '')", timeout=10000
        )
        assert page.locator(f"{KERNEL} .torchmagic-run").get_attribute("data-status") == "running"
        assert "ETA" in page.locator(f"{KERNEL} .torchmagic-run").inner_text()
        page.locator(PANEL).screenshot(path=str(artifacts / "panel-running.png"))
        assert_panel_tables_fit(page, "running")
        page.screenshot(path=str(artifacts / "panel-page-running.png"))
        stop = page.locator(f"{KERNEL} button.torchmagic-stop")
        assert stop.inner_text() == "Stop" and stop.is_enabled()
        stop.click()
        outputs = _wait_cell_done(page, "panel.ipynb", 1)
        assert "interrupted" in outputs, outputs[:2000]
        stopped = re.search(r"training stopped after step (\d+)", outputs)
        assert stopped and 0 < int(stopped.group(1)) < TRAIN_STEPS, outputs[:2000]
        page.locator(f'{KERNEL} .torchmagic-run[data-status="interrupted"]').wait_for(timeout=10000)
        assert page.locator(f"{KERNEL} button.torchmagic-stop").is_disabled()
        assert page.evaluate("window.jupyterapp.commands.hasCommand('torchmagic:stop-training')")
        assert page.evaluate("window.jupyterapp.commands.label('torchmagic:stop-training')") == "Stop training"

        # %memory on, then a cell that takes 48 MiB: a row in the panel's table.
        _run_cell(page, "panel.ipynb", 2)
        _wait_cell_done(page, "panel.ipynb", 2)
        _run_cell(page, "panel.ipynb", 3)
        _wait_cell_done(page, "panel.ipynb", 3)
        row = page.locator(f"{KERNEL} .torchmagic-history-table tbody tr").first
        row.wait_for(timeout=10000)
        cells = row.locator("td").all_inner_texts()
        count = page.evaluate(JS_CELL_OUTPUT, ["panel.ipynb", 3])["count"]
        assert cells[0] == f"[{count}] {BIG}", cells
        assert re.fullmatch(r"\+(4[5-9]|5\d)\.\d MiB", cells[1]), cells
        assert "recording" in page.locator(f"{KERNEL} .torchmagic-history-state").inner_text()
        page.locator(PANEL).screenshot(path=str(artifacts / "panel-memory.png"))
        assert_panel_tables_fit(page, "memory history")  # at the panel's default width

        # A kernel that never loads torchmagic does not appear.
        page.evaluate("window.jupyterapp.commands.execute('docmanager:open', {path: 'plain.ipynb'})")
        _wait_notebook_ready(page, "plain.ipynb")
        _run_cell(page, "plain.ipynb", 0)
        _wait_cell_done(page, "plain.ipynb", 0)
        assert page.locator(KERNEL).count() == 1

        # A kernel that dies disappears, without errors on the page.
        pid = int(page.evaluate(JS_KERNEL_PRINT, ["panel.ipynb", "import os\nprint(os.getpid())"]))
        os.kill(pid, signal.SIGKILL)
        page.locator(KERNEL).wait_for(state="detached", timeout=30000)
        page.locator(f"{PANEL} .torchmagic-panel-empty").wait_for(timeout=5000)
        assert page.locator(".torchmagic-status").inner_text() == ""
        page.locator(PANEL).screenshot(path=str(artifacts / "panel-after-kernel-died.png"))
        assert watch.our_errors() == [], watch.our_errors()
        assert watch.page_errors == [], watch.page_errors
        assert watch.foreign_requests() == [], watch.foreign_requests()
    finally:
        context.close()


def test_notebook7_panel(notebook_server, browser, artifacts):
    (notebook_server.root / "panel.ipynb").write_text(_notebook(SETUP))
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    watch = PageWatch.attach(page)
    try:
        page.goto(notebook_server.page_url("notebooks/panel.ipynb"))
        _wait_app(page)
        _wait_notebook_ready(page, "panel.ipynb")
        assert page.evaluate("window.jupyterapp.commands.hasCommand('torchmagic:stop-training')")
        page.evaluate("window.jupyterapp.commands.execute('torchmagic:show-panel')")
        page.locator(PANEL).wait_for(state="visible")
        _run_cell(page, "panel.ipynb", 0)
        _wait_cell_done(page, "panel.ipynb", 0)
        page.locator(f"{KERNEL} .torchmagic-kernel-memory").wait_for(timeout=15000)
        assert "RSS" in page.locator(f"{KERNEL} .torchmagic-kernel-memory").inner_text()
        page.locator(PANEL).screenshot(path=str(artifacts / "notebook7-panel.png"))
        assert watch.our_errors() == [], watch.our_errors()
    finally:
        context.close()
