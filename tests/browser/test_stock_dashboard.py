"""The stock dashboard (``%%train --display stock``, what VS Code and others get) in JupyterLab:
stock widgets only, charts that move while training runs, no BokehJS view, nothing from a CDN.

Run with ``pytest -m browser tests/browser/test_stock_dashboard.py``. Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import time

import pytest
from test_lab import PageWatch, _wait_app, _wait_notebook_ready
from test_panel import JS_CELL_OUTPUT, _notebook, _run_cell, _wait_cell_done

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 400
SETUP = """%load_ext torchmagic
import time, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 8), torch.randn(64, 1)"""

TRAIN = f"""%%train --display stock --total {STEPS}
for i in range({STEPS}):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    time.sleep(0.02)"""

OUTPUT = ".jp-Notebook .jp-Cell:nth-child(2) .jp-Cell-outputArea"


def test_stock_dashboard_draws_svg_charts_without_bokeh(lab_server, browser, artifacts):
    name = "stock.ipynb"
    (lab_server.root / name).write_text(_notebook(SETUP, TRAIN))
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    watch = PageWatch.attach(page)
    try:
        page.goto(lab_server.page_url(f"lab/tree/{name}?reset"))
        _wait_app(page)
        _wait_notebook_ready(page, name)
        _run_cell(page, name, 0)
        _wait_cell_done(page, name, 0)
        _run_cell(page, name, 1)
        charts = page.locator(f"{OUTPUT} .tm-stock-charts")
        charts.wait_for(timeout=60000)
        seen: set[str] = set()
        bokeh_views = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if page.evaluate(JS_CELL_OUTPUT, [name, 1])["count"] is not None:
                break
            try:
                if charts.count():
                    seen.add(charts.first.inner_html(timeout=2000))
                    bokeh_views = max(bokeh_views, page.locator(f"{OUTPUT} .bk-Canvas, {OUTPUT} .bk-root").count())
                    if len(seen) == 3:
                        page.locator(OUTPUT).screenshot(path=str(artifacts / "stock-dashboard-live.png"))
            except Exception:  # the live view was replaced by the snapshot between two calls
                pass
            time.sleep(0.5)
        _wait_cell_done(page, name, 1, timeout_s=60)
        live = [html for html in seen if html.count("<svg") == 6]
        assert len(live) >= 2, f"the charts did not redraw while training ran ({len(seen)} versions seen)"
        assert all("<polyline" in html for html in live)
        assert bokeh_views == 0, "a BokehJS view was rendered in the stock dashboard"
        page.locator(OUTPUT).screenshot(path=str(artifacts / "stock-dashboard-end.png"))
        assert "completed" in page.locator(f"{OUTPUT} .tm-dash .tm-badge").first.inner_text()
        assert watch.our_errors() == [], watch.our_errors()
        assert watch.page_errors == [], watch.page_errors
        assert watch.foreign_requests() == [], watch.foreign_requests()
    finally:
        context.close()
