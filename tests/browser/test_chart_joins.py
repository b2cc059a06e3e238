"""Charts that join the live dashboard during a run (the user's logged values) in JupyterLab.

BokehJS builds a layout's views asynchronously, and a change of the layout's children that lands
while they are being built left every plot paused, its canvas never painted again. On a loaded
machine that happens when the first refresh, which adds the chart of a value logged from the first
step, reaches the page together with the dashboard itself. The test makes that happen every time:
it holds the kernel's messages from the cell's start until the chart's patch and a refresh after
it have come, then hands them to the page at once. A second value joins later, mid-run.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from test_lab import PageWatch, _wait_app, _wait_notebook_ready
from test_panel import _notebook, _run_cell, _wait_cell_done

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """%load_ext torchmagic
import time, torch, torchmagic
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))"""

TRAIN = """%%train
for step in range(1, 401):
    opt.zero_grad()
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out, y)
    loss.backward()
    opt.step()
    torchmagic.log(accuracy=(out.argmax(1) == y).float().mean())
    if step >= 200:
        torchmagic.log(val_loss=loss.item() * 1.1)
    time.sleep(0.02)"""

# The dashboard's BokehJS document: its grid's children, the views built for them, the plots
# that are paused (never painting), and the rows of each named source.
JS_PLOT_STATE = """() => {
  const B = window.Bokeh;
  if (!B || !B.documents) { return null; }
  for (const doc of B.documents) {
    const rows = {};
    for (const model of doc.all_models) {
      if (typeof model.get_length === 'function' && model.name) { rows[model.name] = model.get_length() ?? 0; }
    }
    if (!('tm-steps' in rows)) { continue; }
    const grid = doc.roots()[0];
    const view = doc.views_manager ? doc.views_manager.get(grid) : null;
    const plots = view ? view.child_views : [];
    return {
      children: grid.children.length,
      titles: plots.map(plot => plot.model.title ? plot.model.title.text : ''),
      paused: plots.filter(plot => plot.is_paused).length,
      rows,
    };
  }
  return null;
}"""

PATCH = b'"msg": "patch"'
REFRESH = b"torchmagic.refresh"


class KernelMessageHold:
    """Holds what the kernel sends the page, from start() until a plot patch and a refresh after
    it have come; then hands all of it over in one go, as a busy page receives it."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[str | bytes] = []
        self.released = 0  # messages handed over at once
        self._client = None
        self._patched = False

    def route(self, ws) -> None:
        server = ws.connect_to_server()
        self._client = ws
        ws.on_message(server.send)
        server.on_message(self._from_kernel)

    def start(self) -> None:
        self.holding, self.held, self._patched = True, [], False

    def _from_kernel(self, message: str | bytes) -> None:
        if not self.holding:
            self._client.send(message)
            return
        self.held.append(message)
        data = message.encode() if isinstance(message, str) else message
        if PATCH in data:
            self._patched = True
        elif self._patched and REFRESH in data:
            self.holding = False
            self.released = len(self.held)
            for held in self.held:
                self._client.send(held)


def _plot_state(page) -> dict | None:
    return page.evaluate(JS_PLOT_STATE)


def test_charts_joining_the_first_render_and_mid_run_keep_every_plot_painting(lab_server, browser, artifacts):
    (lab_server.root / "joins.ipynb").write_text(_notebook(SETUP, TRAIN))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    watch = PageWatch.attach(page)
    hold = KernelMessageHold()
    page.route_web_socket(re.compile(r"/api/kernels/[^/]+/channels"), hold.route)
    try:
        page.goto(lab_server.page_url("lab/tree/joins.ipynb?reset"))
        _wait_app(page)
        _wait_notebook_ready(page, "joins.ipynb")
        _run_cell(page, "joins.ipynb", 0)
        _wait_cell_done(page, "joins.ipynb", 0)

        hold.start()
        _run_cell(page, "joins.ipynb", 1)
        before: dict | None = None  # the plot as the second chart joins
        after: list[dict] = []  # and afterwards
        hashes_after: set[str] = set()
        plot = page.locator(".torchmagic-dashboard .torchmagic-plot").first
        for _ in range(600):  # until the run ends (the dashboard's live view stays; its header says so)
            page.wait_for_timeout(100)  # lets Playwright pass the held messages on, unlike time.sleep
            state = _plot_state(page)
            if state is None:
                continue
            if "tm-logged-1" not in state["rows"]:
                before = state
            else:
                after.append(state)
                if len(after) % 3 == 1:
                    hashes_after.add(hashlib.sha256(plot.screenshot(timeout=5000)).hexdigest())
                if len(after) == 3:
                    page.locator(".torchmagic-dashboard").first.screenshot(path=str(artifacts / "joins-live-1400.png"))
            header = page.locator(".torchmagic-dashboard .torchmagic-section-header").first.inner_text(timeout=2000)
            if after and "running" not in header:
                break
        _wait_cell_done(page, "joins.ipynb", 1, timeout_s=120)

        assert hold.released >= 3, "the kernel's messages were not held until the chart's patch"
        assert before is not None and after, (before, after)
        # The chart that joined with the first render is there, drawn, with points.
        assert before["titles"][-1] == "accuracy" and before["children"] == 7, before
        assert before["rows"]["tm-logged-0"] > 0, before
        end = _plot_state(page)
        assert end is not None and end["titles"][-2:] == ["accuracy", "val_loss"] and end["children"] == 8, end
        assert end["paused"] == 0, f"plots never painted: {end}"
        # After the mid-run join the plots went on: more rows, and the canvas repainted.
        assert end["rows"]["tm-steps"] > before["rows"]["tm-steps"], (before, end)
        assert end["rows"]["tm-logged-1"] > after[0]["rows"]["tm-logged-1"], (after[0], end)
        assert len(hashes_after) >= 2, "the plot canvas did not change after the second chart joined"

        page.locator(".torchmagic-dashboard").first.screenshot(path=str(artifacts / "joins-end-1400.png"))
        page.set_viewport_size({"width": 1000, "height": 1000})
        page.wait_for_timeout(500)
        page.locator(".torchmagic-dashboard").first.screenshot(path=str(artifacts / "joins-end-1000.png"))
        assert watch.our_errors() == [], watch.our_errors()
        assert watch.page_errors == [], watch.page_errors
        assert watch.bokeh_echoes() == 0, "plot updates were sent back to the kernel"
    finally:
        context.close()
