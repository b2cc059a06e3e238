"""Charts of the user's logged values: the live dashboard draws the columns the frozen view draws."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import torchmagic
from torchmagic.core import TrainingMonitor
from torchmagic.display import chart_specs, figure_svg, panels
from torchmagic.display.dashboard import LiveDashboard
from torchmagic.display.testing import recording_comms


def _train_logging(dashboard, steps=40, every=5, step_time=0.005, **kw):
    """A run that logs its accuracy every ``every`` steps, right after optimizer.step() as loops do."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    mon = TrainingMonitor([model], [opt], on_refresh=[dashboard], refresh_interval=0.02, **kw)
    with mon:
        for step in range(1, steps + 1):
            began = time.monotonic()
            opt.zero_grad()
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            opt.step()
            if step % every == 0:
                torchmagic.log(accuracy=(out.argmax(1) == y).float().mean())
            time.sleep(max(0.0, began + step_time - time.monotonic()))
    return mon


def _titles(layout) -> list[str]:
    return [fig.title.text for fig in figure_svg.figures_of(layout)]


def _logged(mon, name):
    """(steps, values) of the rows where ``name`` was logged."""
    cols = mon.result.columns
    rows = [(s, v) for s, v in zip(cols["step"], cols[name]) if v is not None]
    return [float(s) for s, _ in rows], [v for _, v in rows]


def test_live_view_charts_a_logged_value_as_the_frozen_view_does():
    with recording_comms() as rec:
        dash = LiveDashboard("model", transport="lab")
        mon = _train_logging(dash)
    steps, accuracies = _logged(mon, "accuracy")
    assert len(accuracies) == 8  # steps 5, 10, … 40
    assert "accuracy" in _titles(dash.figs.layout)
    (source,) = dash.figs.logged
    xs: list[float] = []
    ys: list[float] = []
    custom = [d["content"] for kind, d, _ in rec.messages if kind == "comm_msg" and d.get("method") == "custom"]
    buffers = [b for kind, d, b in rec.messages if kind == "comm_msg" and d.get("method") == "custom"]
    for content, bufs in zip(custom, buffers):
        if content.get("kind") != "torchmagic.refresh":
            continue
        assert not any(batch["source"] == source.id for batch in content["replace"])  # a short run only streams
        for batch in content["streams"]:
            if batch["source"] == source.id:
                xs.extend(np.frombuffer(bufs[batch["columns"]["x"]], dtype="<f4").tolist())
                ys.extend(np.frombuffer(bufs[batch["columns"]["y"]], dtype="<f4").tolist())
    assert xs == steps
    assert ys == pytest.approx(accuracies, rel=1e-6)
    # the chart joined once, through the plot's own (bokeh) messages
    patches = [c for c in custom if c.get("kind") != "torchmagic.refresh"]
    assert any("accuracy" in json.dumps(c, default=str) for c in patches)
    # the frozen twin has the chart too, with the same title
    html = panels.snapshot_html(mon.result)
    assert ">accuracy</text>" in html


def test_the_stock_view_draws_the_logged_chart_from_the_same_source():
    with recording_comms():
        dash = LiveDashboard("model", transport="stock")
        _train_logging(dash, steps=20)
    assert "accuracy" in _titles(dash.figs.layout)
    assert ">accuracy</text>" in dash._stock.charts.value


def test_both_views_chart_the_same_first_logged_columns():
    with recording_comms():
        dash = LiveDashboard("model", transport="stock")  # its sources hold the points in Python
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        mon = TrainingMonitor([model], [opt], on_refresh=[dash], refresh_interval=0.01)
        with mon:
            for step in range(1, 13):
                opt.zero_grad()
                model(torch.randn(8, 4)).pow(2).mean().backward()
                opt.step()
                torchmagic.log(**{f"m{step // 2}": float(step)})  # a new column every other step: m0 … m6
    chosen = chart_specs.logged_columns(mon.result.columns)
    assert chosen == ["m0", "m1", "m2", "m3"]
    assert _titles(dash.figs.layout)[-4:] == chosen and "m4" not in _titles(dash.figs.layout)  # they join below the others
    html = panels.snapshot_html(mon.result)
    assert all(f">{name}</text>" in html for name in chosen) and ">m4</text>" not in html
    # each curve holds just the rows with a value: m1 was logged at steps 2 and 3
    for name, source in zip(chosen, dash.figs.logged):
        steps, values = _logged(mon, name)
        assert source.data["x"] == steps and source.data["y"] == values
    assert dash.figs.logged[1].data["x"] == [2.0, 3.0]
    # the stock view names a series as the frozen view does: m0, logged once, is a constant
    assert "m0 1 (constant)" in dash._stock.charts.value and "m0 1 (constant)" in html
    # and the live chart says so too, as long as the value has not changed (m1: 2, then 3)
    assert dash.figs.notes["m0"].label.text == "m0 1 (constant)" and dash.figs.notes["m1"].label.text == ""
    assert "m1 2 (constant)" not in html


SHELL_SETUP = """
import time, torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
accuracies = []
"""
# Steps of at least 20 ms with refreshes due every 20 ms: the first refreshes come before the
# first accuracy (step 6), so the chart joins a layout already shown, however loaded the machine.
SHELL_LOOP = """
import torchmagic
for step in range(1, 25):
    optimizer.zero_grad()
    out = model(x)
    nn.functional.cross_entropy(out, y).backward()
    optimizer.step()
    if step >= 6:
        accuracies.append((out.argmax(1) == y).float().mean().item())
        torchmagic.log(accuracy=accuracies[-1])
    time.sleep(0.02)
"""


def test_magic_adds_the_logged_chart_mid_run_and_streams_what_the_loop_logged(shell, monkeypatch):
    published: list[str] = []
    monkeypatch.setattr(shell.display_pub, "publish", lambda data, *a, **k: published.append(data.get("text/html", "")))
    shell.run_cell(SHELL_SETUP)
    with recording_comms() as rec:
        out = shell.run_cell("%%train --display widgets --refresh 20\n" + SHELL_LOOP)
    assert out.success, out.error_in_exec
    accuracies = shell.user_ns["accuracies"]
    custom = [(d["content"], b) for k, d, b in rec.messages if k == "comm_msg" and d.get("method") == "custom"]
    kinds = [("refresh" if c.get("kind") == "torchmagic.refresh" else c.get("msg")) for c, _ in custom]
    first_patch = kinds.index("patch")
    assert "refresh" in kinds[:first_patch], "the chart did not join a layout already shown"
    patches = "".join(c.get("payload", "") for c, _ in custom if c.get("msg") == "patch").replace(" ", "")
    assert '"text":"accuracy"' in patches and f'"line_color":{json.dumps(chart_specs.LOGGED_COLOR)}' in patches
    xs: list[float] = []
    ys: list[float] = []
    for content, bufs in custom:
        for batch in content.get("streams", []) + content.get("replace", []):
            if set(batch["columns"]) == {"x", "y"}:  # the logged value's source: its step and value
                xs.extend(np.frombuffer(bufs[batch["columns"]["x"]], dtype="<f4").tolist())
                ys.extend(np.frombuffer(bufs[batch["columns"]["y"]], dtype="<f4").tolist())
    assert xs == [float(s) for s in range(6, 25)]
    assert ys == pytest.approx(accuracies, rel=1e-6)  # float32 on the wire; the loop's own numbers
    assert torchmagic.last_run().columns["accuracy"][5:] == accuracies  # the history keeps them exactly
    frozen = next(html for html in published if "tm-dash" in html)
    assert ">accuracy</text>" in frozen and chart_specs.LOGGED_COLOR in frozen


@pytest.mark.parametrize(("every", "dots"), [(5, True), (1, False)])
def test_a_sparse_logged_value_has_a_dot_at_each_point_in_both_views_a_dense_one_the_line_alone(every, dots):
    with recording_comms() as rec:
        dash = LiveDashboard("model", transport="lab")
        mon = _train_logging(dash, steps=80, every=every, step_time=0.0)
    points = len(_logged(mon, "accuracy")[1])
    assert (points <= chart_specs.LOGGED_MARKERS_UP_TO) is dots, points  # 16 points, or 80
    (markers,) = dash.figs.logged_markers
    assert markers.visible is dots
    if not dots:  # hidden during the run, through the plot's own (bokeh) messages
        patches = [d["content"] for kind, d, _ in rec.messages if kind == "comm_msg" and d.get("method") == "custom"]
        texts = [json.dumps(p, default=str) for p in patches if p.get("kind") != "torchmagic.refresh"]
        assert any("visible" in t and markers.id in t and "false" in t for t in texts)
    frozen = panels.snapshot_html(mon.result)
    chart = next(c for c in frozen.split("<svg")[1:] if ">accuracy</text>" in c)
    assert chart.count("<circle") == (points if dots else 0)
