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
from torchmagic.display import chart_titles, figure_svg, panels
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
    chosen = chart_titles.logged_columns(mon.result.columns)
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
