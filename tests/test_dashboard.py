"""The live dashboard through recorded comm messages: one message per refresh, bounded bytes, escaped HTML."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from torchmagic.core import TrainingMonitor
from torchmagic.display import panels
from torchmagic.display.dashboard import LiveDashboard
from torchmagic.display.series import Decimator
from torchmagic.display.testing import recording_comms


def _train(dashboard, steps=40, pause=0.0, **kw):
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
            time.sleep(pause)
    return mon


def _custom_messages(rec):
    return [(d, b) for kind, d, b in rec.messages if kind == "comm_msg" and d.get("method") == "custom"]


def test_lab_transport_sends_one_message_per_refresh_with_float32_columns():
    with recording_comms() as rec:
        dash = LiveDashboard("model", histograms=True, transport="lab")
        opened = len(rec.messages)
        mon = _train(dash, steps=30, pause=0.01, refresh_interval=0.05, every=5, histograms=True)
    during = rec.messages[opened:]
    custom = _custom_messages(rec)
    assert len(custom) == dash.messages_sent >= 4
    # while training, nothing but our one custom message per refresh goes out
    updates = [m for m in during if m[0] == "comm_msg" and m[1].get("method") != "custom"]
    assert updates == []
    assert max(len(str(d)) + sum(len(b) for b in bufs) for d, bufs in custom) < 20_000
    # the loss points streamed to the browser are the recorded losses
    losses = []
    for data, buffers in custom:
        content = data["content"]
        assert content["kind"] == "torchmagic.refresh"
        for batch in content["streams"]:
            if batch["source"] == dash.figs.steps.id:
                losses.extend(np.frombuffer(buffers[batch["columns"]["loss"]], dtype="<f4").tolist())
    assert losses == pytest.approx(mon.result.history["loss"].tolist(), rel=1e-6)
    assert any(batch["source"] == dash.figs.hist.id for d, _ in custom for batch in d["content"]["streams"])
    # at the end every widget is closed and the output frozen
    closes = [m for m in rec.messages if m[0] == "comm_close"]
    assert len(closes) >= 2 and dash.frozen


def test_stock_widgets_transport_refreshes_less_often():
    with recording_comms() as rec:
        dash = LiveDashboard("model", transport="widgets")
        opened = len(rec.messages)
        _train(dash, steps=20, pause=0.01, refresh_interval=0.02)
    updates = [m for m in rec.messages[opened:] if m[0] == "comm_msg"]
    assert 0 < len(updates) <= 40  # the first refresh and the final one, not every 20 ms


def test_decimator_keeps_points_bounded_over_a_long_run():
    dec = Decimator(limit=1000)
    xs: list[float | None] = []
    ys: list[float | None] = []
    in_browser = 0
    replaced = 0
    for chunk in range(100):
        xs.extend(range(chunk * 1000 + 1, chunk * 1000 + 1001))
        ys.extend([1.0] * 1000)
        kind, cols = dec.take({"x": xs, "y": ys}, "x")
        in_browser = len(cols["x"]) if kind == "replace" else in_browser + len(cols["x"])
        replaced += kind == "replace"
        assert in_browser <= 1000
    assert dec.stride >= 128 and replaced <= 10
    assert np.all(cols["y"] == 1.0)


def test_user_strings_are_escaped_in_html():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("<img src=x onerror=alert(1)>", nn.Linear(4, 4))

        def forward(self, x):
            return getattr(self, "<img src=x onerror=alert(1)>")(x)

    import warnings

    import torchmagic

    model = Odd()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torchmagic.train(model, opt, display="none", every=1) as run:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            torchmagic.log(**{"<script>alert(2)</script>": 1.0})
            warnings.warn("<b>bold</b> warning", stacklevel=1)
    html = panels.snapshot_html(run.result)
    assert "<img src=x" not in html and "<script>alert" not in html and "<b>bold" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_snapshot_is_static_and_small():
    with recording_comms():
        dash = LiveDashboard("model", transport="lab")
        mon = _train(dash, steps=2000)
    html = panels.snapshot_html(mon.result)
    assert "<script" not in html and "<svg" in html
    assert len(html) < 100_000


def test_steady_state_traffic_fits_the_budget():
    """At 4 refreshes a second: at most 5 messages and 20 KB a second once the run is going."""
    with recording_comms() as rec:
        dash = LiveDashboard("model", histograms=True, transport="lab")
        _train(dash, steps=200, pause=0.005, refresh_interval=0.25, every=5, histograms=True)
    custom = _custom_messages(rec)
    steady = custom[2:-1]  # past the first refreshes (styles, first layer table) and before the final one
    assert steady, len(custom)
    per_message = [len(str(d)) + sum(len(b) for b in bufs) for d, bufs in steady]
    assert max(per_message) * 4 <= 20_000, per_message
