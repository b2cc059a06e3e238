"""A page reloaded during a ``%%train`` run finds the kernel again; the kernel reads Busy meanwhile.

JupyterLab 4 and Notebook 7 in Debian's Chromium, at 1400 and 1000 px. Before the reload, with
the side panel subscribed, the kernel status must stay Busy for the whole cell (JupyterLab counted
the subshell requests that comms trigger as kernel activity and showed the kernel idle). After
the reload, the panel lists the running kernel with Stop; Stop ends the cell with its one line.
Run with ``pytest -m browser tests/browser``. Screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import pytest
from test_lab import JS_FIND_NOTEBOOK, PageWatch, _wait_app, _wait_notebook_ready
from test_panel import KERNEL, PANEL, SETUP, _notebook, _run_cell, _wait_cell_done

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Long enough to outlast any reload; Stop ends it.
TRAIN_LONG = """%%train --total 100000
for i in range(100000):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    time.sleep(0.01)"""

JS_KERNEL_STATUS = "(path) => (" + JS_FIND_NOTEBOOK + ")(path)?.sessionContext.kernelDisplayStatus ?? null"

# Keeps the text of every error output of the kernel that reaches this page, whichever page
# ran the cell (a reloaded page has no cell to put it in).
JS_COLLECT_ERRORS = (
    """(path) => {
  const kernel = ("""
    + JS_FIND_NOTEBOOK
    + """)(path).sessionContext.session.kernel;
  window.__torchmagicErrors = [];
  kernel.iopubMessage.connect((_, msg) => {
    if (msg.header.msg_type === 'error') {
      window.__torchmagicErrors.push(msg.content.traceback.join('\\n'));
    }
  });
}"""
)

JS_HAS_KERNEL = (
    """(path) => {
  const panel = ("""
    + JS_FIND_NOTEBOOK
    + """)(path);
  return Boolean(panel && panel.sessionContext.session && panel.sessionContext.session.kernel);
}"""
)

# The panel's entry for the notebook at `path` (other tests' kernels may still be listed).
JS_MY_STEP = (
    f"(path) => [...document.querySelectorAll('{KERNEL}')].find(li => "
    "li.querySelector('.torchmagic-kernel-label')?.textContent.includes(path))"
    "?.querySelector('.torchmagic-run-step')?.textContent ?? ''"
)
STEP_MOVING = "(path) => /step [1-9]/.test((" + JS_MY_STEP + ")(path))"

JS_INDICATOR = (
    "(path) => (" + JS_FIND_NOTEBOOK + ")(path)?.node.querySelector('.jp-Notebook-ExecutionIndicator')"
    "?.getAttribute('data-status') ?? null"
)
JS_SHUT_DOWN = "(path) => (" + JS_FIND_NOTEBOOK + ")(path)?.sessionContext.shutdown()"


def _show_panel(page) -> None:
    if not page.locator(PANEL).is_visible():
        page.evaluate("window.jupyterapp.commands.execute('torchmagic:show-panel')")
    page.locator(PANEL).wait_for(state="visible")


def _statuses_while_running(page, path: str, samples: int = 12) -> list[str | None]:
    """Lab's kernel status, sampled while the panel shows the run's step moving."""
    seen = []
    for _ in range(samples):
        page.wait_for_function(STEP_MOVING, arg=path, timeout=30000)
        seen.append(page.evaluate(JS_KERNEL_STATUS, path))
        page.wait_for_timeout(250)
    return seen


def _reload_during_run(server, browser, artifacts, width: int) -> str:
    """Runs the reload scenario (asserting on the panel as it goes); the line the stopped cell ended with."""
    stopped_line = ""
    app = server.app
    name = f"reload-{app}-{width}"
    (server.root / f"{name}.ipynb").write_text(_notebook(SETUP, TRAIN_LONG))
    path = f"{name}.ipynb"
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    mine = page.locator(KERNEL).filter(has_text=path)
    watch = PageWatch.attach(page)
    try:
        page.goto(server.page_url(f"lab/tree/{path}" if app == "lab" else f"notebooks/{path}"))
        _wait_app(page)
        _wait_notebook_ready(page, path)
        _show_panel(page)
        _run_cell(page, path, 0)
        _wait_cell_done(page, path, 0)
        mine.locator(".torchmagic-kernel-memory").wait_for(timeout=15000)

        # The run, with the panel subscribed: the kernel reads Busy all along, in the notebook's
        # session and in JupyterLab's execution indicator.
        _run_cell(page, path, 1)
        page.wait_for_function(STEP_MOVING, arg=path, timeout=60000)
        assert set(_statuses_while_running(page, path)) == {"busy"}
        indicator = page.evaluate(JS_INDICATOR, path)  # this notebook's, not another's the workspace restored
        assert indicator in ("busy", None), indicator
        page.screenshot(path=str(artifacts / f"{name}-before.png"))

        # The reload: new comm objects, no hello; the kernel is still in the cell.
        page.reload()
        _wait_app(page)
        page.wait_for_function(JS_HAS_KERNEL, arg=path, timeout=60000)
        page.evaluate(JS_COLLECT_ERRORS, path)
        _show_panel(page)
        run = mine.locator('.torchmagic-run[data-status="running"]')
        run.wait_for(timeout=30000)
        assert mine.count() == 1
        assert path in mine.locator(".torchmagic-kernel-label").inner_text()
        assert mine.locator(".torchmagic-kernel-version").inner_text().startswith("torchmagic ")
        assert page.locator(f"{PANEL} .torchmagic-panel-empty").count() == 0
        page.wait_for_function(STEP_MOVING, arg=path, timeout=30000)
        # The kernel reads Busy again, not "Unknown" until the cell ends (its requests wait behind it).
        after_reload = _statuses_while_running(page, path, samples=4)
        assert after_reload[-1] == "busy", after_reload
        stop = mine.locator("button.torchmagic-stop")
        assert stop.inner_text() == "Stop" and stop.is_enabled()
        assert page.evaluate("window.jupyterapp.commands.isEnabled('torchmagic:stop-training')")
        if app == "lab":
            page.wait_for_function(
                "() => /step \\d+/.test(document.querySelector('.torchmagic-status')?.textContent ?? '')", timeout=15000
            )
        page.locator(PANEL).screenshot(path=str(artifacts / f"{name}-panel-after-reload.png"))
        page.screenshot(path=str(artifacts / f"{name}-after-reload.png"))

        stop.click()
        mine.locator('.torchmagic-run[data-status="interrupted"]').wait_for(timeout=60000)
        page.wait_for_function("() => window.__torchmagicErrors.length > 0", timeout=30000)
        errors = page.evaluate("window.__torchmagicErrors")
        assert len(errors) == 1, errors
        lines = errors[0].strip().splitlines()
        assert len(lines) == 1, errors
        stopped_line = lines[0]
        assert mine.locator("button.torchmagic-stop").is_disabled()
        page.wait_for_function(
            "(path) => (" + JS_FIND_NOTEBOOK + ")(path).sessionContext.kernelDisplayStatus === 'idle'", arg=path, timeout=30000
        )
        page.locator(PANEL).screenshot(path=str(artifacts / f"{name}-panel-stopped.png"))
        assert watch.our_errors() == [], watch.our_errors()
        if app == "lab":  # Notebook 7 throws "reading 'schema'" on every page load, ours or not
            assert watch.page_errors == [], watch.page_errors
        assert watch.foreign_requests() == [], watch.foreign_requests()
    finally:
        try:  # the next test's panel lists its own kernel, not this one too
            page.evaluate(JS_SHUT_DOWN, path)
        except Exception:  # noqa: BLE001 - the page may be gone after a failure
            pass
        context.close()
    return stopped_line


@pytest.mark.parametrize("width", [1400, 1000])
def test_lab_reload_during_run(lab_server, browser, artifacts, width):
    stopped = _reload_during_run(lab_server, browser, artifacts, width)
    assert stopped.startswith("TrainingStopped: training stopped after step "), stopped


@pytest.mark.parametrize("width", [1400, 1000])
def test_notebook7_reload_during_run(notebook_server, browser, artifacts, width):
    stopped = _reload_during_run(notebook_server, browser, artifacts, width)
    assert stopped.startswith("TrainingStopped: training stopped after step "), stopped
