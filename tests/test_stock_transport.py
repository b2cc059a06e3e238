"""The stock dashboard (front ends without the lab extension): stock ipywidgets only, bounded traffic."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from torchmagic.core import TrainingMonitor
from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import LayerRow, RunResult
from torchmagic.display import figure_svg, figures
from torchmagic.display.dashboard import STOCK_INTERVAL, LiveDashboard
from torchmagic.display.testing import recording_comms

STOCK_MODULES = {"@jupyter-widgets/controls", "@jupyter-widgets/base"}


def _size(message: tuple[str, dict[str, Any], list[bytes]]) -> int:
    _, data, buffers = message
    return len(json.dumps(data, default=str)) + sum(len(b) for b in buffers)


def _opened_models(rec) -> list[tuple[str, str]]:
    out = []
    for kind, data, _ in rec.messages:
        if kind == "comm_open":
            state = data.get("state", {})
            out.append((state.get("_model_module", "?"), state.get("_model_name", "?")))
    return out


def _train(dashboard, steps: int, **kw) -> TrainingMonitor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    mon = TrainingMonitor([model], [opt], on_refresh=[dashboard], **kw)
    with mon:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return mon


def test_stock_dashboard_opens_only_stock_widget_models():
    """No BokehModel: VS Code and others would load BokehJS for it from a CDN, or not at all."""
    with recording_comms() as rec:
        dash = LiveDashboard("model", histograms=True, transport="stock")
        charts_seen = []
        original = dash._stock.apply

        def apply(*args):
            original(*args)
            charts_seen.append(dash._stock.charts.value)

        dash._stock.apply = apply
        mon = _train(dash, steps=12, every=2, histograms=True)
    models = _opened_models(rec)
    assert models and all(module in STOCK_MODULES for module, _ in models), models
    assert not any("bokeh" in json.dumps(data).lower() for _, data, _ in rec.messages)
    assert dash.plot is None and mon.result.error is None and dash.frozen
    charts = charts_seen[-1]
    assert charts.count("<svg") == 6 + 4 and "<script" not in charts  # the six plots, a histogram per parameter
    for title in ("loss", "learning rate", "throughput (samples/s, smoothed)", "memory (MiB)", "0.weight", "2.bias"):
        assert f">{title}</text>" in charts, title
    assert "lr 0.05 (constant)" in charts and "data:image/png;base64," in charts  # histograms as pictures


def test_stock_loss_chart_draws_the_recorded_losses():
    with recording_comms():
        dash = LiveDashboard("model", transport="stock")
        mon = _train(dash, steps=20)
    losses = mon.result.history["loss"].tolist()
    assert dash.figs.steps.data["loss"] == pytest.approx(losses, rel=1e-6)  # what the chart is drawn from
    loss_chart = figure_svg.figure_svg(figure_svg.figures_of(dash.figs.layout)[0])
    # the y axis spans the raw and the smoothed loss, padded as the live one, ticked inside; the raw
    # line has a point per step
    drawn = dash.figs.steps.data["loss_smooth"] + losses
    labels = [float(t) for t in re.findall(r'text-anchor="end" fill="#666">([^<]+)</text>', loss_chart)]
    span = max(drawn) - min(drawn)
    assert 4 <= len(labels) <= 6 and min(drawn) - 0.05 * span <= min(labels) < max(labels) <= max(drawn) + 0.05 * span
    plot = re.search(r'<rect x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', loss_chart)
    top, height = (float(v) for v in plot.groups())
    for line in re.findall(r'<polyline fill="none"[^>]* points="([^"]+)"', loss_chart):
        assert all(top < float(p.split(",")[1]) < top + height for p in line.split())  # inside, off the frame
    raw = re.search(r'<polyline fill="none" stroke="#9ecae1"[^>]* points="([^"]+)"', loss_chart)
    assert raw is not None and len(raw.group(1).split()) == len(losses)
    assert ">raw</text>" in loss_chart and ">smoothed</text>" in loss_chart
    assert re.findall(r'class="tm-axis-title"[^>]*>([^<]*)</text>', loss_chart) == ["step", "loss"]  # as the live axes


def test_chart_lines_are_thinned_and_keep_the_last_point():
    figs = figures.build(False)
    n = 5000
    figs.steps.data = {
        "x": list(range(1, n + 1)),
        "loss": [1.0 / k for k in range(1, n + 1)],
        "loss_smooth": [None] * n,
        "lr": [0.1] * n,
        "rate": [math.nan] * n,
    }
    loss_chart = figure_svg.figure_svg(figure_svg.figures_of(figs.layout)[0])
    points = re.search(r'stroke="#9ecae1"[^>]* points="([^"]+)"', loss_chart).group(1).split()
    assert len(points) == figure_svg.POINTS
    assert ">5000</text>" in loss_chart  # the last step is on the axis
    rate_chart = figure_svg.figure_svg(figure_svg.figures_of(figs.layout)[2])
    assert "no data" in rate_chart  # NaN only: nothing to draw, and no error


def _synthetic_stock_refreshes(steps_per_refresh: int, refreshes: int) -> list[tuple[int, int]]:
    """(messages, bytes) of each sent refresh of the stock dashboard, with 8 layers' norms every 5 steps."""
    result = RunResult()
    cols: dict[str, list[Any]] = {"step": [], "loss": [], "lr": [], "samples_per_s": [], "grad_norm": []}
    result.columns = cols  # type: ignore[assignment]  # the dashboard reads columns as a mapping of sequences
    out = []
    with recording_comms() as rec:
        dash = LiveDashboard("model", transport="stock")
        for _ in range(refreshes):
            first = len(cols["step"]) + 1
            for step in range(first, first + steps_per_refresh):
                for name, value in zip(cols, (step, 1.0 / step + step % 7 * 0.01, 0.1, 1e4 + step % 5, 1.0)):
                    cols[name].append(value)
                if step % 5 == 0:
                    result.layer_rows.extend(LayerRow(step, f"fc{i}", "grad_norm", 0.5 + i + step % 3) for i in range(8))
                    result.layer_rows.extend(LayerRow(step, f"fc{i}", "act_std", 0.1 * i + step % 2) for i in range(8))
            result.steps = len(cols["step"])
            # Each refresh stands for one STOCK_INTERVAL: the dashboard's own clock would skip most of them here.
            dash._last_send = -math.inf
            before = len(rec.messages)
            dash(Snapshot(result, None, None, 1e4))
            sent = [m for m in rec.messages[before:] if m[0] == "comm_msg"]
            out.append((len(sent), sum(_size(m) for m in sent)))
        dash.freeze(result)
    return out


def test_stock_refreshes_fit_the_message_budget():
    """At most one refresh per STOCK_INTERVAL (tests/test_dashboard.py checks that), so a refresh may carry
    STOCK_INTERVAL times the budget of 5 messages and 20 KB a second, with every chart line full."""
    refreshes = _synthetic_stock_refreshes(400, 40)[1:]  # the first carries the style and the empty layout
    assert max(n for n, _ in refreshes) <= 5 * STOCK_INTERVAL, refreshes
    assert max(b for _, b in refreshes) <= 20_000 * STOCK_INTERVAL, refreshes
    # the cost levels off: the lines are thinned to a fixed number of points, whatever the run's length
    late = [b for _, b in refreshes[-10:]]
    assert max(late) <= 1.2 * min(late), late


def test_stock_view_escapes_chart_titles():
    figs = figures.build(False)
    fig = figure_svg.figures_of(figs.layout)[1]
    fig.title.text = "<b>lr</b>"
    figs.steps.data = {"x": [1, 2], "loss": [1, 2], "loss_smooth": [1, 2], "lr": [0.1, 0.2], "rate": [1, 2]}
    chart = figure_svg.figure_svg(fig)
    assert "&lt;b&gt;lr&lt;/b&gt;" in chart and "<b>" not in chart
    assert np.isfinite([float(v) for v in re.findall(r"(\d+\.\d),", chart)]).all()
