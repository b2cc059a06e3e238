"""The dashboard of a distributed run: loss and time by rank, live and frozen, within the traffic budget."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import numpy as np
import psutil
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from torchmagic.core.distributed import DistributedSnapshot, RankView, columns, run_distributed
from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import RunResult
from torchmagic.display import panels
from torchmagic.display.dashboard import LiveDashboard
from torchmagic.display.rank_curves import MIN_POINTS, RANK_BYTES_PER_REFRESH
from torchmagic.display.testing import recording_comms

STEPS = 30


@pytest.fixture
def leaves_nothing_behind():
    sigint = signal.getsignal(signal.SIGINT)
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children
    assert signal.getsignal(signal.SIGINT) is sigint


def _size(data: dict[str, Any], buffers: list[bytes]) -> int:
    return len(json.dumps(data, default=str)) + sum(len(b) for b in buffers)


def _refreshes(rec) -> list[tuple[dict[str, Any], list[bytes]]]:
    return [
        (data["content"], buffers)
        for kind, data, buffers in rec.messages
        if kind == "comm_msg" and data.get("method") == "custom" and data["content"].get("kind") == "torchmagic.refresh"
    ]


def _streamed(refreshes, source_id: str) -> dict[str, list[float]]:
    """Every point sent to one source (its streams, after its last replace)."""
    out: dict[str, list[float]] = {}
    for content, buffers in refreshes:
        for batch in content["replace"]:
            if batch["source"] == source_id:
                out = {}
        for batch in content["streams"] + content["replace"]:
            if batch["source"] == source_id:
                for name, i in batch["columns"].items():
                    out.setdefault(name, []).extend(np.frombuffer(buffers[i], dtype="<f4").tolist())
    return out


@pytest.mark.skipif(not (hasattr(os, "fork") and dist.is_available() and dist.is_gloo_available()), reason="needs fork and gloo")
def test_a_two_rank_run_shows_loss_and_time_by_rank(leaves_nothing_behind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))
    x, y = torch.randn(24, 6), torch.randn(24, 1)

    def cell():
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        rank, n = dist.get_rank(), dist.get_world_size()
        for _ in range(STEPS):
            opt.zero_grad()
            F.mse_loss(ddp(x[rank::n]), y[rank::n]).backward()
            opt.step()

    snaps: list[DistributedSnapshot] = []
    with recording_comms() as rec:
        dash = LiveDashboard("ddp", transport="lab")
        result = run_distributed(
            cell,
            nproc=2,
            models=[model],
            on_refresh=[snaps.append, dash],
            monitor_options={"refresh_interval": 0.02},
            timeout=60.0,
        )
    assert result.status == "completed" and dash.frozen and snaps[-1].final
    assert dash.figs.ranks is not None
    refreshes = _refreshes(rec)
    assert len(refreshes) == dash.messages_sent
    by_rank = _streamed(refreshes, dash.figs.ranks.id)
    assert set(by_rank) == {"x", "l0", "l1", "t0", "t1", "r0", "r1"}
    # every step of this short run reaches the browser, each rank's loss its own
    assert by_rank["x"] == list(range(1, STEPS + 1))
    history = result.history.reset_index(drop=True)
    for r in (0, 1):
        want = history[history["rank"] == r].sort_values("step")["loss"].tolist()
        assert by_rank[f"l{r}"] == pytest.approx(want, rel=1e-5)
    assert by_rank["l0"] != pytest.approx(by_rank["l1"])  # the ranks train on different shards
    assert np.nanmax(by_rank["t0"]) > 0 and np.nanmax(by_rank["t1"]) > 0
    # the aggregate curve is drawn as before, next to the curves by rank
    assert _streamed(refreshes, dash.figs.steps.id)["loss"] == pytest.approx(snaps[-1].result.columns["loss"], rel=1e-5)
    assert max(_size({"content": c}, b) for c, b in refreshes) < 20_000
    # the frozen snapshot draws the same curves by rank
    html = panels.snapshot_html(snaps[-1].result, snaps[-1])
    assert "loss by rank" in html and "<title>rank 1</title>" in html and "<title>rank 0</title>" in html
    assert "time by rank (ms)" in html and "throughput by rank" in html and "RSS by rank" in html
    assert "<script" not in html


_SHELL_SETUP = """
import time, torch, torch.nn.functional as F, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
torch.manual_seed(0); model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1))
x, y = torch.randn(24, 6), torch.randn(24, 1)
"""
_SHELL_CELL = """
ddp = DDP(model); opt = torch.optim.SGD(ddp.parameters(), lr=0.1); r, n = dist.get_rank(), dist.get_world_size()
for _ in range({steps}):
    if r == n - 1:
        time.sleep(0.02)  # the last rank's data comes slowly
    opt.zero_grad(); F.mse_loss(ddp(x[r::n]), y[r::n]).backward(); opt.step()
"""


@pytest.mark.skipif(not (hasattr(os, "fork") and dist.is_available() and dist.is_gloo_available()), reason="needs fork and gloo")
@pytest.mark.parametrize("nproc", [2, 4])
def test_train_magic_draws_throughput_and_memory_by_rank(shell, nproc, leaves_nothing_behind):
    """%%train --nproc N in a real shell: throughput (smoothed) and memory of every rank reach the
    widget, the frozen dashboard draws them, the history holds them by rank, the straggler is named."""
    from IPython.utils.capture import capture_output

    import torchmagic
    from torchmagic.display.series import ema

    shell.run_cell(_SHELL_SETUP)
    with recording_comms() as rec, capture_output() as shown:
        out = shell.run_cell(f"%%train --nproc {nproc} --display widgets --refresh 20\n" + _SHELL_CELL.format(steps=STEPS))
    assert out.success, out.error_in_exec
    result = torchmagic.last_run()
    assert result.status == "completed" and result.steps == STEPS
    history, memory = result.history.reset_index(drop=True), result.memory_history
    refreshes = _refreshes(rec)
    columns_of: dict[str, set[str]] = {}
    for content, _ in refreshes:
        for batch in content["streams"] + content["replace"]:
            columns_of.setdefault(batch["source"], set()).update(batch["columns"])
    [steps_source] = [s for s, names in columns_of.items() if "r0" in names]
    [memory_source] = [s for s, names in columns_of.items() if "m0" in names]
    by_rank, memory_by_rank = _streamed(refreshes, steps_source), _streamed(refreshes, memory_source)
    assert set(by_rank) == {"x", *(f"{k}{i}" for k in "ltr" for i in range(nproc))}
    assert set(memory_by_rank) == {"t", *(f"m{i}" for i in range(nproc))}  # no CUDA here: RSS only
    assert by_rank["x"] == list(range(1, STEPS + 1))  # a short run: every step drawn
    for r in range(nproc):
        rows = history[history["rank"] == r].sort_values("step")
        rates = rows["samples_per_s"].tolist()
        assert len(rates) == STEPS and all(rate > 0 for rate in rates)
        assert by_rank[f"r{r}"] == pytest.approx(ema(rates).values, rel=1e-4)  # smoothed like the loss
        # each point is a reading the rank itself took (the kernel samples each rank's latest)
        readings = {np.float32(v / 2**20) for v in memory[memory["rank"] == r]["rss"]}
        drawn = [v for v in memory_by_rank[f"m{r}"] if np.isfinite(v)]
        assert drawn and all(np.float32(v) in readings for v in drawn)
    assert len(memory_by_rank["t"]) >= 1 and all(t >= 0 for t in memory_by_rank["t"])
    assert max(_size({"content": c}, b) for c, b in refreshes) < 20_000
    # the slow rank is named in the dashboard's alerts and in the result
    alerts = "".join(c["sections"].get("alerts", "") for c, _ in refreshes)
    assert f"rank {nproc - 1}: straggler" in alerts
    assert [a.message.split(":")[0] for a in result.alerts if a.kind == "straggler"] == [f"rank {nproc - 1}"]
    # the frozen dashboard that replaced the widgets draws the same charts
    frozen = [o.data["text/html"] for o in shown.outputs if "tm-dash" in o.data.get("text/html", "")]
    assert frozen, [o.data.keys() for o in shown.outputs]
    html = frozen[-1]
    charts = {chart.split("</text>")[0].split(">")[-1]: chart for chart in html.split("<svg")[1:]}
    for title in ("loss by rank", "time by rank (ms)", "throughput by rank", "RSS by rank (MiB)"):
        [chart] = [c for t, c in charts.items() if title in t]
        assert all(f"<title>rank {r}</title>" in chart for r in range(nproc)) and "no data" not in chart
    assert "CUDA allocated by rank" not in html and "<script" not in html


MiB = 2**20


def _synthetic(nproc: int, steps: int) -> DistributedSnapshot:
    """The kernel's view of `nproc` ranks after `steps` steps and a memory sample every 500 steps:
    rank 3 the slowest (3x the time, a third of the samples/s) and the largest (300 MiB, 100 the others)."""
    result = RunResult()
    cols: dict[str, list[Any]] = {"step": list(range(1, steps + 1)), "loss": [1.0 / s for s in range(1, steps + 1)]}
    cols["step_time"] = [0.01] * steps
    samples = steps // 500
    views = {}
    for r in range(nproc):
        slow = 3 if r == 3 else 1
        losses = [1.0 / s + 0.01 * r for s in range(1, steps + 1)]
        history = {"step": list(cols["step"]), "loss": losses, "step_time": [0.01 * slow] * steps}
        history["samples_per_s"] = [100.0 / slow] * steps
        views[r] = RankView(r, history, step=steps, memory_history={"rss": [100 * slow * MiB] * samples})
    for name in ("loss", "step_time", "samples_per_s"):
        per_step = list(zip(*(v.columns[name] for v in views.values())))
        for q, pick in (("p0", min), ("p50", lambda xs: sorted(xs)[len(xs) // 2]), ("p100", max)):
            cols[f"{name}_{q}"] = [pick(row) for row in per_step]
    result.columns = cols  # type: ignore[assignment]  # the dashboard reads columns as a mapping of sequences
    memory = {"time": [0.5 * i for i in range(1, samples + 1)], "step": [500 * i for i in range(1, samples + 1)]}
    for key, value in (("rss", 300), ("rss_p0", 100), ("rss_p50", 100), ("rss_p100", 300)):
        memory[key] = [value * MiB] * samples
    result.memory = memory  # type: ignore[assignment]
    result.steps = steps
    return DistributedSnapshot(result, None, None, None, False, ranks=views)


@pytest.mark.parametrize("nproc", [8, 16])
def test_many_ranks_stay_within_the_budget_and_agree_with_the_frozen_snapshot(nproc):
    """Up to 8 ranks a line each; beyond, the p0-p100 band and the p50 line. Per refresh the curves
    by rank share RANK_BYTES_PER_REFRESH, whatever N, and a replace stays under 20 KB."""
    with recording_comms() as rec:
        dash = LiveDashboard("ddp", transport="lab")
        sizes, setup = [], []
        for steps in range(500, 50_001, 500):
            before = len(rec.messages)
            dash(_synthetic(nproc, steps))
            sent = [(d, b) for _, d, b in rec.messages[before:] if d.get("method") == "custom"]
            sizes.extend(_size(d, b) for d, b in sent if d["content"].get("kind") == "torchmagic.refresh")
            setup.append(len(sent) - 1)  # bokeh's own messages: the plots by rank joining the layout
        final = _synthetic(nproc, 50_000)
        final.final = True
        final.result.columns = columns.build(final.result.columns)  # as a finished run holds them
        dash(final)
    refreshes = _refreshes(rec)
    ranks = _streamed(refreshes, dash.figs.ranks.id)
    memory = _streamed(refreshes, dash.figs.rank_memory.id)
    if nproc <= 8:
        assert set(ranks) == {"x", *(f"{k}{i}" for k in "ltr" for i in range(nproc))}
        assert np.nanmedian(ranks["t3"]) == pytest.approx(30.0) and np.nanmedian(ranks["t0"]) == pytest.approx(10.0)
        assert np.nanmedian(ranks["r3"]) == pytest.approx(100 / 3) and np.nanmedian(ranks["r0"]) == pytest.approx(100)
        assert set(memory) == {"t", *(f"m{i}" for i in range(nproc))}  # no CUDA: no CUDA curves
        assert set(memory["m3"]) == {300.0} and set(memory["m0"]) == {100.0}
    else:
        assert set(ranks) == {"x", *(f"{k}_{q}" for k in "ltr" for q in ("p0", "p50", "p100"))}
        assert np.nanmax(ranks["t_p100"]) == pytest.approx(30.0)
        assert np.nanmin(ranks["r_p0"]) == pytest.approx(100 / 3) and np.nanmax(ranks["r_p100"]) == pytest.approx(100)
        assert set(memory) == {"t", "m_p0", "m_p50", "m_p100"}
        assert set(memory["m_p100"]) == {300.0} and set(memory["m_p50"]) == {100.0}
    assert len(memory["t"]) == 100  # a sample every 500 steps, each sent once
    assert len(ranks["x"]) <= 1000
    assert len(sizes) == 100 and max(sizes) < 20_000, max(sizes)  # one message a refresh, replaces included
    assert setup[0] > 0 and setup[1:] == [0] * 99  # the plots by rank are added once, at the first refresh
    streams = [
        sum(len(b[i]) for i in batch["columns"].values())
        for c, b in refreshes
        for batch in c["streams"]
        if batch["source"] == dash.figs.ranks.id
    ]
    assert max(streams) <= max(RANK_BYTES_PER_REFRESH, len(ranks) * MIN_POINTS * 4)  # whatever N
    html = panels.snapshot_html(final.result, final)
    assert "loss by rank" in html and "throughput by rank" in html and "RSS by rank" in html
    assert "CUDA allocated by rank" not in html
    if nproc <= 8:
        assert all(f"<title>rank {r}</title>" in html for r in range(nproc))
    else:
        assert html.count("<polygon") == 4 and "<title>p50</title>" in html and "<title>rank 1</title>" not in html


def test_a_single_process_snapshot_has_no_curves_by_rank():
    result = RunResult()
    result.columns = columns.build({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]})
    result.steps = 3
    with recording_comms():
        dash = LiveDashboard("model", transport="lab")
        dash(Snapshot(result, None, None, None, final=True))
    assert dash.figs.ranks is None
    assert "by rank" not in panels.snapshot_html(result)
