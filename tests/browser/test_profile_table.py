"""``%profile``'s op table in JupyterLab (Debian's Chromium): rows that show, sort, regroup and fit.

Run with ``pytest -m browser tests/browser/test_profile_table.py``. Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import re
import time

import pytest
from test_dashboard_views import JS_OVERFLOW, _open_side_panel, _wait_for
from test_lab import PageWatch, _wait_app, _wait_notebook_ready
from test_panel import _notebook, _run_cell, _wait_cell_done, assert_panel_tables_fit

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """%load_ext torchmagic
import torch, torchmagic
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
x = torch.randn(16, 32)"""

PROFILE = "%profile --record-shapes --with-stack model(x).sum().backward()"
AGAIN = "torchmagic.last_profile()"

# The visible cells of one table column, top to bottom (SlickGrid positions rows absolutely).
JS_COLUMN = """([root, col]) => {
  const out = [];
  const visit = (node) => {
    for (const el of node.querySelectorAll('*')) {
      if (el.shadowRoot) { visit(el.shadowRoot); }
    }
    for (const row of node.querySelectorAll('.slick-row')) {
      const cell = row.querySelector('.slick-cell.l' + col);
      if (cell) { out.push([row.getBoundingClientRect().top, cell.textContent.trim()]); }
    }
  };
  visit(document.querySelector(root));
  out.sort((a, b) => a[0] - b[0]);
  return out.map(pair => pair[1]);
}"""

OUTPUT = ".jp-Notebook .jp-Cell:nth-child(2) .jp-Cell-outputArea"
OUTPUT_AGAIN = ".jp-Notebook .jp-Cell:nth-child(3) .jp-Cell-outputArea"
# The explorer's parts: the op table, the plots and their toolbars, its own toolbar (group by, filter).
FIT_SELECTORS = [
    ".slick-viewport",
    ".slick-header",
    ".bk-Canvas",
    ".bk-Toolbar",
    ".widget-dropdown",
    ".widget-text",
    ".widget-hbox",
]


def _numbers(cells: list[str]) -> list[float]:
    return [float(re.sub(r"[^0-9.]", "", c) or "nan") for c in cells]


def _poll(read, done, timeout_s: float = 20):
    """``read()`` until ``done`` holds for its value or the time is up; the last value."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def _headers(page) -> list[str]:
    return [h.strip() for h in page.locator(f"{OUTPUT} .slick-header-column").all_inner_texts()]


# Each page loaded at `width` with the side panel open, then resized to `also`.
@pytest.mark.parametrize(("width", "also"), [(1400, (1600, 800)), (1000, ())])
def test_profile_op_table_shows_sorts_regroups_and_fits(lab_server, browser, artifacts, width, also):
    name = f"profile-{width}.ipynb"
    (lab_server.root / name).write_text(_notebook(SETUP, PROFILE, AGAIN))
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    watch = PageWatch.attach(page)
    try:
        page.goto(lab_server.page_url(f"lab/tree/{name}?reset"))
        _wait_app(page)
        _open_side_panel(page)
        _wait_notebook_ready(page, name)
        _run_cell(page, name, 0)
        _wait_cell_done(page, name, 0)
        _run_cell(page, name, 1)
        _wait_cell_done(page, name, 1, timeout_s=120)
        output = page.locator(OUTPUT)
        output.scroll_into_view_if_needed()
        page.locator(f"{OUTPUT} .slick-cell").first.wait_for(timeout=30000)

        # The rows are there: op names in the first column, the numbers right-aligned.
        headers = _headers(page)
        assert headers[:4] == ["op", "calls", "self CPU (us)", "CPU total (us)"], headers
        ops = page.evaluate(JS_COLUMN, [OUTPUT, 0])
        assert len(ops) >= 5 and "aten::addmm" in ops, ops
        number_cell = page.locator(f"{OUTPUT} .slick-cell.l2 > *").first
        assert number_cell.evaluate("el => getComputedStyle(el).textAlign") == "right"
        assert page.locator(f"{OUTPUT} .slick-cell.l0 > *").first.evaluate("el => getComputedStyle(el).textAlign") == "left"

        output.screenshot(path=str(artifacts / f"profile-table-{width}.png"))

        # Most self CPU first; a click on its header sorts it ascending.
        before = _numbers(page.evaluate(JS_COLUMN, [OUTPUT, 2]))
        assert before == sorted(before, reverse=True) and before[0] > before[-1], before
        page.locator(f"{OUTPUT} .slick-header-column", has_text="self CPU").first.click()
        after = _poll(lambda: _numbers(page.evaluate(JS_COLUMN, [OUTPUT, 2])), lambda v: v == sorted(v) and v != before)
        assert after == sorted(after) and after != before, after

        # The table, the plots and the toolbars stay inside the output area, at this width and the others.
        for at in (width, *also, width):
            page.set_viewport_size({"width": at, "height": 900})
            output.scroll_into_view_if_needed()
            read = lambda: page.evaluate(JS_OVERFLOW, [OUTPUT, FIT_SELECTORS])  # noqa: E731
            report = _wait_for(read, lambda r: r["found"] == [], timeout_s=15)  # the layout settles after a resize
            counts = dict(zip(FIT_SELECTORS, report["counts"]))
            assert counts[".slick-viewport"] >= 1 and counts[".bk-Canvas"] >= 1 and counts[".bk-Toolbar"] >= 1, counts
            assert report["found"] == [], (at, report["found"])
            assert_panel_tables_fit(page, f"{at} px")
            if at != width:
                page.screenshot(path=str(artifacts / f"profile-page-{at}.png"))

        # The static table is not repeated under the live one; its header line is kept.
        assert page.locator(f"{OUTPUT} .tm-prof-twin").first.is_hidden()
        assert "completed" in page.locator(f"{OUTPUT} .tm-prof .tm-badge").first.inner_text()
        output.screenshot(path=str(artifacts / f"profile-table-{width}-sorted.png"))

        # Regroup by source line: the table is rebuilt with the line column first.
        page.locator(f"{OUTPUT} .widget-dropdown select").select_option("line")
        page.wait_for_function(
            """(root) => {
              const el = document.querySelector(root);
              const headers = e => Array.from(e.shadowRoot.querySelectorAll('.slick-header-column'));
              return el && Array.from(el.querySelectorAll('*')).some(e => e.shadowRoot &&
                headers(e).some(h => h.textContent.includes('source line')));
            }""",
            arg=OUTPUT,
            timeout=20000,
        )
        assert _headers(page)[0] == "source line", _headers(page)
        lines = page.evaluate(JS_COLUMN, [OUTPUT, 0])
        assert any("statement" in s or "cell" in s for s in lines), lines

        # Filtering: only rows that mention addmm.
        page.locator(f"{OUTPUT} .widget-text input").fill("addmm")
        page.locator(f"{OUTPUT} .widget-text input").press("Enter")
        ops = _poll(lambda: page.evaluate(JS_COLUMN, [OUTPUT, 1]), lambda v: v and all("addmm" in op.lower() for op in v))
        assert ops and all("addmm" in op.lower() for op in ops), ops
        output.screenshot(path=str(artifacts / f"profile-table-{width}-filtered.png"))
        page.screenshot(path=str(artifacts / f"profile-page-{width}.png"))

        # The same result shown again, in a cell without the explorer: the static summary, text left, numbers right.
        _run_cell(page, name, 2)
        _wait_cell_done(page, name, 2)
        static = page.locator(f"{OUTPUT_AGAIN} .tm-prof-twin table").first
        static.scroll_into_view_if_needed()
        assert static.is_visible()
        align = static.evaluate(
            "t => [t.rows[1].cells[0].textContent, getComputedStyle(t.rows[1].cells[0]).textAlign,"
            " getComputedStyle(t.rows[1].cells[1]).textAlign, getComputedStyle(t.rows[0].cells[1]).textAlign]"
        )
        assert align[0].startswith("aten::") and align[1:] == ["left", "right", "right"], align
        page.locator(OUTPUT_AGAIN).screenshot(path=str(artifacts / f"profile-static-{width}.png"))

        assert watch.our_errors() == [], watch.our_errors()
        assert watch.page_errors == [], watch.page_errors
        assert watch.foreign_requests() == [], watch.foreign_requests()
    finally:
        context.close()
