"""The live dashboard through recorded comm messages: one message per refresh, bounded bytes, escaped HTML."""

from __future__ import annotations

import json
import math
import re
import time
from html import escape as html_escape
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn as nn

from torchmagic.core import TrainingMonitor
from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import LayerRow, RunResult
from torchmagic.display import panels
from torchmagic.display.dashboard import STOCK_INTERVAL, LiveDashboard, thin
from torchmagic.display.series import Decimator
from torchmagic.display.testing import recording_comms

Message = tuple[str, dict[str, Any], list[bytes]]  # as recording_comms records them: kind, data, buffers


def _train(dashboard, steps=40, step_time=0.0, until=None, **kw):
    """`steps` training steps under a monitor, or with `until`, steps until it returns True.

    Each step lasts at least `step_time` seconds: a fast machine goes no faster, a slow one slower.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    mon = TrainingMonitor([model], [opt], on_refresh=[dashboard], **kw)
    with mon:
        done = 0
        while not (until() if until is not None else done >= steps):
            began = time.monotonic()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            done += 1
            time.sleep(max(0.0, began + step_time - time.monotonic()))
    return mon


class Refresh(NamedTuple):
    at: float  # when the monitor offered it (time.monotonic())
    final: bool
    messages: list[Message]  # what the dashboard sent for it


class TimedRefreshes:
    """Wraps a dashboard as a monitor callback: when each refresh came and what it sent."""

    def __init__(self, dashboard: LiveDashboard, rec: Any) -> None:
        self.dashboard, self.rec = dashboard, rec
        self.refreshes: list[Refresh] = []

    def __call__(self, snap: Any) -> None:
        at, before = time.monotonic(), len(self.rec.messages)
        self.dashboard(snap)
        self.refreshes.append(Refresh(at, snap.final, self.rec.messages[before:]))


def _custom_messages(rec) -> list[Message]:
    return [
        (kind, data, buffers) for kind, data, buffers in rec.messages if kind == "comm_msg" and data.get("method") == "custom"
    ]


def _size(message: Message) -> int:
    """Bytes on the wire: the JSON plus the binary buffers."""
    _, data, buffers = message
    return len(json.dumps(data, default=str)) + sum(len(b) for b in buffers)


def test_lab_transport_sends_one_message_per_refresh_with_float32_columns():
    with recording_comms() as rec:
        dash = LiveDashboard("model", histograms=True, transport="lab")
        opened = len(rec.messages)
        mon = _train(dash, steps=30, step_time=0.01, refresh_interval=0.05, every=5, histograms=True)
    during = rec.messages[opened:]
    custom = [m for m in _custom_messages(rec) if m[1]["content"].get("kind") == "torchmagic.refresh"]
    assert len(custom) == dash.messages_sent >= 4  # 30 steps of 10 ms or more: a refresh at least every 5 steps
    # while training, nothing but our one custom message per refresh goes out, and the plots' few
    # one-time changes: the histogram plots join once their parameters are known, and the constant
    # learning rate's note is written (its value and its text)
    others = [data for kind, data, _ in during if kind == "comm_msg" and data.get("method") != "custom"]
    assert others == []
    patches = [m for m in _custom_messages(rec) if m[1]["content"].get("msg") == "patch"]
    assert len(_custom_messages(rec)) - len(custom) == len(patches) <= 3 * 3  # a bokeh patch is three messages
    changed = sorted(e["attr"] for _, data, _ in patches for e in json.loads(data["content"]["payload"]).get("events", []))
    assert changed == ["children", "text", "y"], changed
    assert max(_size(m) for m in custom) < 20_000  # a whole 30-step run fits in one message
    # the loss points streamed to the browser are the recorded losses
    losses = []
    for _, data, buffers in custom:
        content = data["content"]
        assert content["kind"] == "torchmagic.refresh"
        for batch in content["streams"]:
            if batch["source"] == dash.figs.steps.id:
                losses.extend(np.frombuffer(buffers[batch["columns"]["loss"]], dtype="<f4").tolist())
    assert losses == pytest.approx(mon.result.history["loss"].tolist(), rel=1e-6)
    hist_ids = {source.id for source in dash.figs.hists}
    assert len(hist_ids) == 4  # the model's 4 parameters, a plot each
    assert any(batch["source"] in hist_ids for _, d, _ in custom for batch in d["content"]["streams"])
    # at the end every widget is closed and the output frozen
    closes = [kind for kind, _, _ in rec.messages if kind == "comm_close"]
    assert len(closes) >= 2 and dash.frozen


def test_stock_transport_refreshes_less_often():
    """Once per STOCK_INTERVAL, however often the monitor refreshes and however slowly the loop runs."""
    with recording_comms() as rec:
        timed = TimedRefreshes(LiveDashboard("model", transport="stock"), rec)
        started = time.monotonic()
        _train(timed, steps=20, step_time=0.01, refresh_interval=0.02)
        elapsed = time.monotonic() - started
    offered = timed.refreshes
    sent = [r for r in offered if any(kind == "comm_msg" for kind, _, _ in r.messages)]
    assert len(offered) >= 10  # 20 steps of 10 ms or more, a refresh due every 20 ms
    assert sent[0] is offered[0] and sent[-1].final  # the first refresh and the final one…
    assert len(sent) <= 2 + elapsed / STOCK_INTERVAL, (len(sent), elapsed)  # …and one per interval between


def test_transport_names_are_checked():
    with pytest.raises(ValueError, match="transport must be one of lab, stock"):
        LiveDashboard("model", transport="widgets")  # a display mode, not a transport


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
    """At 4 refreshes a second: at most 5 messages and 20 KB per second of wall time once the run is going.

    Rates over at least 3 s by the clock, whatever the machine's speed: a slow machine sends fewer
    refreshes, each carrying more steps, and a long window takes in the layer table redrawn every
    2 s at its average. Steps last at least 1/150 s, so a fast machine streams no more points.
    """
    with recording_comms() as rec:
        timed = TimedRefreshes(LiveDashboard("model", histograms=True, transport="lab"), rec)
        deadline = time.monotonic() + 60

        def window_long_enough() -> bool:
            r = timed.refreshes
            return time.monotonic() > deadline or (len(r) > 2 and r[-1].at - r[1].at >= 3.0)

        _train(timed, until=window_long_enough, step_time=1 / 150, refresh_interval=0.25, every=5, histograms=True)
    live = [r for r in timed.refreshes if not r.final]
    # Not the first two refreshes (the style, the first layer table) nor the final one. Each refresh sends
    # what came since the one before, so the messages of refreshes 2.. cover the time from refresh 1 on.
    window = live[-1].at - live[1].at
    assert window >= 3.0, (window, len(live))
    steady = [m for r in live[2:] for m in r.messages]
    messages_per_s = len(steady) / window
    bytes_per_s = sum(_size(m) for m in steady) / window
    assert messages_per_s <= 5, messages_per_s
    assert bytes_per_s <= 20_000, (bytes_per_s, [sum(_size(m) for m in r.messages) for r in live[2:]])


def test_a_run_with_the_dashboard_ends_without_an_error():
    """Outside IPython there is no output to replace at the end: the freeze skips it, and the run records no error."""
    with recording_comms():
        dash = LiveDashboard("model", transport="lab")
        mon = _train(dash, steps=5)
    assert mon.result.status == "completed" and mon.result.error is None
    assert dash.frozen


def test_thinning_keeps_the_last_point_and_each_buckets_extremes():
    loss = np.ones(1000, dtype=np.float32)
    loss[123], loss[456], loss[700:800] = 50.0, -3.0, np.nan
    keep = thin(1000, 30, extremes=loss)
    assert len(keep) <= 30 and keep[-1] == 999 and list(keep) == sorted(set(keep.tolist()))
    assert 123 in keep and 456 in keep
    assert list(thin(20, 30)) == list(range(20))
    assert len(thin(10_000, 16)) == 16


def _synthetic_refreshes(steps_per_refresh: int, refreshes: int) -> list[tuple[int, bool]]:
    """(bytes, whether a curve was replaced) of each refresh of the lab dashboard when each refresh
    brings `steps_per_refresh` new steps and per-layer norms every 10 steps."""
    result = RunResult()
    cols: dict[str, list[Any]] = {"step": [], "loss": [], "lr": [], "samples_per_s": [], "grad_norm": []}
    result.columns = cols  # type: ignore[assignment]  # the dashboard reads columns as a mapping of sequences
    out = []
    with recording_comms() as rec:
        dash = LiveDashboard("model", transport="lab")
        for _ in range(refreshes):
            first = len(cols["step"]) + 1
            for step in range(first, first + steps_per_refresh):
                for name, value in zip(cols, (step, 1.0 / step + step % 7 * 0.01, 0.1, 1e4, 1.0)):
                    cols[name].append(value)
                if step % 10 == 0:
                    result.layer_rows.extend(LayerRow(step, f"fc{i}", "grad_norm", 0.5) for i in range(3))
            result.steps = len(cols["step"])
            before = len(rec.messages)
            dash(Snapshot(result, None, None, 1e4))
            sent = rec.messages[before:]
            out.append((sum(_size(m) for m in sent), any(d.get("content", {}).get("replace") for _, d, _ in sent)))
        dash.freeze(result)
    return out


def test_bytes_per_refresh_do_not_grow_with_the_step_rate():
    """Each refresh streams at most POINTS_PER_REFRESH points per curve: 400 or 10 000 steps a refresh cost the same."""
    slow, fast = _synthetic_refreshes(400, 70), _synthetic_refreshes(10_000, 70)
    assert [r for _, r in slow] == [r for _, r in fast]  # the curves are replaced at the same refreshes
    assert all(abs(a - b) <= 16 for (a, _), (b, _) in zip(slow, fast)), list(zip(slow, fast))  # the header's step count
    streaming = [size for size, replaced in fast[1:] if not replaced]  # the first refresh carries the style
    assert len(streaming) >= len(fast) - 4 and max(streaming) <= 4_000, max(streaming)
    assert max(size for size, _ in fast) <= 40_000  # a refresh that replaces the step and layer curves at once


def test_a_tight_loop_streams_bounded_refreshes():
    """A real loop, no sleeps, every step in the final refresh (the interval is never reached): four times
    the steps, and so the per-layer points, cost the same bytes."""

    def final_refresh_bytes(steps: int) -> int:
        with recording_comms() as rec:
            timed = TimedRefreshes(LiveDashboard("model", transport="lab"), rec)
            mon = _train(timed, steps=steps, refresh_interval=1e6, every=2)
        assert mon.result.steps == steps and mon.result.error is None
        final = timed.refreshes[-1]
        assert final.final and len(timed.refreshes) == 2  # the first (at the start) and the final one
        return sum(_size(m) for m in final.messages if m[0] == "comm_msg")

    few, many = final_refresh_bytes(40), final_refresh_bytes(160)
    assert many <= few + 200 and many <= 6_000, (few, many)  # the layer table's numbers differ a little


def test_the_dashboards_own_curves_stay_bounded_however_long_the_run():
    """600 refreshes of 100 steps each: the copies the dashboard keeps are halved past POINTS_KEPT, the
    browser gets the halved curve as a replace up to the newest steps, and a CPU run's memory
    curves carry no CUDA series of the run's whole length."""
    from torchmagic.display.dashboard import POINTS_KEPT

    result = RunResult()
    cols: dict[str, list[Any]] = {"step": [], "loss": [], "lr": [], "samples_per_s": [], "grad_norm": []}
    result.columns = cols  # type: ignore[assignment]  # the dashboard reads columns as a mapping of sequences
    longest = {"steps": 0, "layers": 0}
    replaces = 0
    with recording_comms() as rec:
        dash = LiveDashboard("model", transport="lab")
        for refresh in range(600):
            first = len(cols["step"]) + 1
            for step in range(first, first + 100):
                for name, value in zip(cols, (step, 1.0 / step, 0.1, 1e4, 1.0)):
                    cols[name].append(value)
                result.layer_rows.append(LayerRow(step, "fc0", "grad_norm", 0.5))
            result.memory.append_row({"time": refresh * 0.25, "step": step, "rss": 2**30})
            result.steps = step
            before = len(rec.messages)
            dash(Snapshot(result, None, None, 1e4))
            longest["steps"] = max(longest["steps"], len(dash._points["x"]))
            longest["layers"] = max(longest["layers"], len(dash._layer_cols["x"]))
            for _, data, buffers in rec.messages[before:]:
                content = data.get("content", {})
                for batch in content.get("replace", []):
                    if batch["source"] == dash.figs.steps.id:
                        xs = np.frombuffer(buffers[batch["columns"]["x"]], dtype="<f4")
                        assert np.all(np.diff(xs) > 0)
                        assert xs[-1] > step - 500  # up to the newest steps but the last, partial bucket
                        replaces += 1
                for batch in content.get("streams", []) + content.get("replace", []):
                    if batch["source"] == dash.figs.memory.id:
                        cuda = np.frombuffer(buffers[batch["columns"]["cuda_allocated"]], dtype="<f4")
                        assert np.isnan(cuda).all() and len(cuda) <= 600
        dash.freeze(result)
    assert 600 * 32 > 2 * POINTS_KEPT  # what was thinned in would have passed the bound twice
    assert longest["steps"] <= POINTS_KEPT and longest["layers"] <= POINTS_KEPT
    assert replaces >= 2


def test_finished_lab_dashboards_stay_open_next_to_their_twin_until_newer_ones_finish(shell, monkeypatch):
    """The live view stays interactive after the run; its static twin is published as an output of its
    own; past KEPT_INTERACTIVE finished dashboards the oldest one's widgets are closed, and the rest at exit."""
    from torchmagic.display import dashboard

    published: list[str] = []
    monkeypatch.setattr(shell.display_pub, "publish", lambda data, *a, **k: published.append(data.get("text/html", "")))
    shell.run_cell("import torch\nmodel = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.05)")
    step = "opt.zero_grad(); model(torch.ones(2, 4)).sum().backward(); opt.step()"
    loop = f"%%train --display widgets --every 1\nfor _ in range(5):\n    {step}"
    with recording_comms() as rec:
        try:
            for run in range(dashboard.KEPT_INTERACTIVE + 1):
                assert shell.run_cell(loop).success
                kept = list(dashboard._interactive)
                if run == 0:
                    first = kept[0]
                    assert first.frozen and first.widget.comm is not None  # still open: zoom and hover work
                    twins = [html for html in published if dashboard.TWIN_CLASS in html]
                    assert len(twins) == 1 and "<svg" in twins[0] and "<script" not in twins[0]
            assert len(kept) == dashboard.KEPT_INTERACTIVE and first not in kept
            assert first.widget.comm is None  # the oldest was closed when the newest finished
        finally:
            dashboard.close_interactive()
    assert dashboard._interactive == [] and all(d.widget.comm is None for d in kept)
    assert sum(kind == "comm_close" for kind, _, _ in rec.messages) >= 2 * (dashboard.KEPT_INTERACTIVE + 1)


def test_the_charts_reflow_and_a_constant_learning_rate_is_drawn_from_zero():
    from bokeh.models import NoOverlap

    from torchmagic.display import figures

    figs = figures.build()
    assert figs.layout.styles["grid-template-columns"].startswith("repeat(auto-fill")
    charts = [fig for fig, _, _ in figs.layout.children]
    assert all(fig.sizing_mode == "stretch_width" and fig.min_width == figures.MIN_WIDTH for fig in charts)
    assert all(isinstance(axis.major_label_policy, NoOverlap) for fig in charts for axis in (*fig.xaxis, *fig.yaxis))
    lr = next(fig for fig in charts if fig.title.text == "learning rate")
    assert lr.y_range.start == 0 and math.isnan(lr.y_range.end)  # the top follows the rate: 0.05 is a line at 0.05


def _lr_run(dashboards, warmup):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 + step / 60) if warmup else None
    mon = TrainingMonitor([model], [opt], on_refresh=dashboards, refresh_interval=0.01)
    with mon:
        for _ in range(30):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
            if schedule is not None:
                schedule.step()
    return mon


def _lr_chart(html):
    return next(chart for chart in html.split("<svg")[1:] if ">learning rate</text>" in chart)


@pytest.mark.parametrize("warmup", [False, True])
def test_the_learning_rate_is_drawn_from_zero_and_a_constant_one_says_so_live_and_frozen(warmup):
    with recording_comms():
        lab, stock = LiveDashboard("model", transport="lab"), LiveDashboard("model", transport="stock")
        mon = _lr_run([lab, stock], warmup)
    lrs = mon.result.history["lr"]
    assert (lrs.nunique() > 1) is warmup and lrs.min() >= (0.025 if warmup else 0.05)
    live = next(fig for fig, _, _ in lab.figs.layout.children if fig.title.text == "learning rate")
    note = lab.figs.notes["lr"].label
    assert live.y_range.start == 0 and note in live.center
    expected = "" if warmup else "lr 0.05 (constant)"
    assert note.text == expected and (warmup or note.y == pytest.approx(0.05))
    # the frozen twin and the stock view's chart: an axis from 0 (a lr of 0.025 or more would not
    # reach it otherwise), and the same note, under the line
    for html in (panels.snapshot_html(mon.result), stock._stock.charts.value):
        chart = _lr_chart(html)
        assert ">0</text>" in chart
        assert ("(constant)" in chart) is not warmup and (warmup or f">{expected}</text>" in chart)


def test_every_live_step_chart_has_its_frozen_twin_with_the_same_title_and_layer_colours():
    with recording_comms():
        dash = LiveDashboard("model", transport="lab")
        mon = _train(dash, steps=40, every=5)
    live = [fig.title.text for fig, _, _ in dash.figs.layout.children]
    html = panels.snapshot_html(mon.result)
    frozen = re.findall(r'<svg[^>]*class="tm-chart"><text[^>]*>([^<]*)</text>', html)
    assert live and all(title in frozen for title in live), (live, frozen)
    grad = next(chart for chart in html.split("<svg")[1:] if chart.count(">grad norm (log scale)") == 1)
    for name in ("global", "0", "2"):  # the legend names the global norm and each layer with a gradient, as the live lines
        assert f">{name}</text>" in grad, name
    assert ">activation std by layer</text>" in html
    assert '">grad norm (log)</text>' in grad and '">seconds</text>' in html
    for fig, _, _ in dash.figs.layout.children:  # each live line's colour is drawn in its frozen twin
        twin = next(chart for chart in html.split("<svg")[1:] if f">{fig.title.text}</text>" in chart)
        # and its axis titles: the same on both axes, escaped, a log axis saying so
        drawn = re.findall(r'<text class="tm-axis-title"[^>]*>([^<]*)</text>', twin)
        assert drawn == [html_escape(fig.xaxis[0].axis_label), html_escape(fig.yaxis[0].axis_label)], (fig.title.text, drawn)
        for renderer in fig.renderers:
            color = renderer.glyph.line_color
            if fig.title.text != "activation std by layer" and not str(renderer.glyph.y).startswith(("g", "a")):
                assert color in twin, (fig.title.text, renderer.glyph.y, color)


def test_the_progress_label_gives_an_eta_until_the_run_finishes():
    mon = _train(lambda snap: None, steps=5)
    running = panels.progress_label(Snapshot(mon.result, 0.5, 12.0, None, final=False))
    finished = panels.progress_label(Snapshot(mon.result, 1.0, 0.0, None, final=True))
    assert running.startswith("50% · step 5") and "ETA" in running
    assert finished.startswith("100% · step 5") and "ETA" not in finished
