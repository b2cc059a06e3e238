"""JupyterLab 4 and Notebook 7 in Debian's Chromium: the torchmagic front end end to end.

Run with ``pytest -m browser tests/browser``. Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_TIMEOUT_S = 600
JS_ERROR_TEXT = "Click to show javascript error"

# Total number of rows in every BokehJS ColumnDataSource on the page.
JS_BOKEH_ROWS = """() => {
  const B = window.Bokeh;
  if (!B || !B.documents) { return null; }
  let rows = 0;
  for (const doc of B.documents) {
    for (const model of doc.all_models) {
      if (typeof model.get_length === 'function') { rows += model.get_length() ?? 0; }
    }
  }
  return rows;
}"""

# Whether every code cell of the current notebook has run, the kernel is idle, and the errors.
JS_NOTEBOOK_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) { return null; }
  const cells = panel.content.widgets.map(cell => cell.model.toJSON());
  const code = cells.filter(cell => cell.cell_type === 'code');
  const errors = [];
  for (const cell of code) {
    for (const output of cell.outputs || []) {
      if (output.output_type === 'error') { errors.push(output.ename + ': ' + output.evalue); }
    }
  }
  return {
    executed: code.every(cell => cell.execution_count !== null),
    status: panel.sessionContext.kernelDisplayStatus,
    errors,
  };
}"""


@dataclass
class PageWatch:
    """Everything a page asks the network for and says on its console."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    frames_sent: list[bytes] = field(default_factory=list)

    @classmethod
    def attach(cls, page) -> PageWatch:
        watch = cls()
        page.on("request", lambda request: watch.requests.append(request.url))
        page.on(
            "console",
            lambda message: watch.console_errors.append(message.text)
            if message.type == "error"
            else None,
        )
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))

        def on_websocket(ws) -> None:
            def sent(payload) -> None:
                watch.frames_sent.append(payload if isinstance(payload, bytes) else payload.encode())

            ws.on("framesent", sent)

        page.on("websocket", on_websocket)
        return watch

    def foreign_requests(self) -> list[str]:
        foreign = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if parts.hostname != "127.0.0.1":
                foreign.append(url)
        return foreign

    def our_errors(self) -> list[str]:
        keys = ("torchmagic", "bokeh", "Bokeh")
        return [e for e in self.console_errors + self.page_errors if any(k in e for k in keys)]

    def bokeh_echoes(self) -> int:
        """Websocket frames that carry a BokehJS document change back to the kernel."""
        return sum(b'"jsevent"' in frame for frame in self.frames_sent)


def _wait_app(page, timeout_s: float = 90) -> None:
    page.wait_for_function(
        "() => window.jupyterapp !== undefined && window.jupyterapp.commands !== undefined",
        timeout=timeout_s * 1000,
    )
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=timeout_s * 1000)


def _wait_notebook_ready(page, timeout_s: float = 120) -> None:
    page.wait_for_function(
        """() => {
          const panel = window.jupyterapp.shell.currentWidget;
          return Boolean(panel && panel.sessionContext && panel.sessionContext.session &&
                         panel.sessionContext.session.kernel &&
                         panel.sessionContext.kernelDisplayStatus === 'idle');
        }""",
        timeout=timeout_s * 1000,
    )


def _run_all_from_menu(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _watch_the_run(page, shots_dir: Path, prefix: str) -> tuple[list[int], set[str], dict]:
    """Samples the plot while the notebook runs; returns row counts, image hashes, final state."""
    plot = page.locator(".torchmagic-dashboard .torchmagic-plot canvas").first
    plot.wait_for(state="visible", timeout=RUN_TIMEOUT_S * 1000)
    area = page.locator(".torchmagic-dashboard .torchmagic-plot").first
    rows: list[int] = []
    hashes: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = None
    first = True
    while time.monotonic() < deadline:
        count = page.evaluate(JS_BOKEH_ROWS)
        if count is not None:
            rows.append(count)
        image = area.screenshot()
        if first:
            (shots_dir / f"{prefix}-plot-early.png").write_bytes(image)
            first = False
        hashes.add(hashlib.sha256(image).hexdigest())
        state = page.evaluate(JS_NOTEBOOK_STATE)
        if state and state["executed"] and state["status"] == "idle":
            break
        time.sleep(0.4)
    else:
        pytest.fail(f"the notebook did not finish within {RUN_TIMEOUT_S} s: {state}")
    rows.append(page.evaluate(JS_BOKEH_ROWS))
    return rows, hashes, state


def _check_dashboard(page, watch: PageWatch, rows, hashes, state) -> None:
    assert state["errors"] == [], f"cells raised: {state['errors']}"
    distinct_rows = sorted(set(rows))
    assert len(distinct_rows) >= 3, f"the plot data did not grow while training ran: {rows}"
    assert len(hashes) >= 2, "the plot canvas never changed while training ran"
    header = page.locator(".torchmagic-dashboard .torchmagic-section-header").first
    assert header.inner_text().strip(), "the dashboard header section is empty"
    assert page.get_by_text(JS_ERROR_TEXT).count() == 0
    assert watch.our_errors() == [], f"console errors: {watch.our_errors()}"
    assert watch.page_errors == [], f"uncaught page errors: {watch.page_errors}"
    assert watch.bokeh_echoes() == 0, "plot updates were sent back to the kernel"
    assert watch.foreign_requests() == [], f"requests left the machine: {watch.foreign_requests()}"


def test_lab_dashboard(lab_server, browser, artifacts):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    watch = PageWatch.attach(page)
    try:
        page.goto(lab_server.page_url("lab"))
        _wait_app(page)

        # The side panel and its command.
        tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="torchmagic-sidebar"]')
        tab.wait_for(state="attached", timeout=30000)
        assert tab.count() == 1
        assert page.evaluate("window.jupyterapp.commands.hasCommand('torchmagic:show-panel')")
        page.keyboard.press("Control+Shift+C")
        page.locator(".lm-CommandPalette-input").fill("torchmagic")
        page.locator(".lm-CommandPalette-item", has_text="torchmagic: Show Panel").first.click()
        panel = page.locator("#torchmagic-sidebar")
        panel.wait_for(state="visible")
        assert panel.locator("h2").inner_text() == "torchmagic"
        bokeh_line = panel.locator(".torchmagic-panel-bokeh")
        page.wait_for_function(
            "() => !document.querySelector('#torchmagic-sidebar .torchmagic-panel-bokeh')"
            ".textContent.includes('loading')"
        )
        assert "served by Jupyter" in bokeh_line.inner_text(), bokeh_line.inner_text()
        page.screenshot(path=str(artifacts / "lab-sidebar.png"))

        # The notebook: run everything and watch the dashboard.
        page.goto(lab_server.page_url("lab/tree/quickstart.ipynb"))
        _wait_app(page)
        _wait_notebook_ready(page)
        _run_all_from_menu(page)
        rows, hashes, state = _watch_the_run(page, artifacts, "lab")
        page.locator(".torchmagic-dashboard").first.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "lab-dashboard.png"))
        page.locator(".torchmagic-dashboard").first.screenshot(
            path=str(artifacts / "lab-dashboard-widget.png")
        )
        _check_dashboard(page, watch, rows, hashes, state)
        # The kernel said hello over the comm and the panel lists it.
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="torchmagic-sidebar"]').click()
    finally:
        context.close()


def test_notebook7_dashboard(notebook_server, browser, artifacts):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    watch = PageWatch.attach(page)
    try:
        page.goto(notebook_server.page_url("notebooks/quickstart.ipynb"))
        _wait_app(page)
        assert page.evaluate("window.jupyterapp.commands.hasCommand('torchmagic:show-panel')")
        _wait_notebook_ready(page)
        _run_all_from_menu(page)
        rows, hashes, state = _watch_the_run(page, artifacts, "notebook7")
        page.screenshot(path=str(artifacts / "notebook7-dashboard.png"))
        _check_dashboard(page, watch, rows, hashes, state)
        page.evaluate("window.jupyterapp.commands.execute('torchmagic:show-panel')")
        page.locator("#torchmagic-sidebar h2").wait_for(state="visible")
        page.screenshot(path=str(artifacts / "notebook7-sidebar.png"))
    finally:
        context.close()
