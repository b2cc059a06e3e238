"""How many bytes does a distributed run put through the store per refresh, and how does it grow with N?

Run from the repository root::

    .venv/bin/python benchmarks/distributed_traffic.py                 # N = 1, 2, 4, 8; about a minute
    .venv/bin/python benchmarks/distributed_traffic.py --ranks 2,4 --seconds 2 --json out.json

Each configuration runs ``run_distributed`` (gloo, CPU) on a small DDP MLP for ``--seconds`` at
two step rates: ``paced`` (a 10 ms step, about 25 history rows per 0.25 s refresh) and ``flat
out`` (no pause; a payload then carries up to ``LIVE_ROWS`` rows). Measured:

* ``bytes/payload``: what one rank writes per refresh (``rank<r>/state``), median and max, read
  from each worker's publisher at the end of the cell;
* ``rows``: history rows per payload (median); ``B/row``: bytes per row;
* ``kernel B/poll``: what the kernel reads per poll (every rank's latest payload in one
  ``multi_get``): the figure that grows with N;
* the dashboard's side (the lab transport's messages, recorded instead of sent): messages and
  KB per second while the ranks train (from the end of the first refresh to the last refresh
  before the final one; the one-off messages that add the plots by rank fall inside it), what
  opening the dashboard costs once, and the bytes of the curves by rank (loss, time,
  throughput, memory) per refresh: the figures that must not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from torchmagic.core.distributed import run_distributed  # noqa: E402
from torchmagic.core.distributed.merge import Collector  # noqa: E402
from torchmagic.core.distributed.rank import RankPublisher  # noqa: E402
from torchmagic.core.monitor import Snapshot, active_monitor  # noqa: E402
from torchmagic.display.dashboard import LiveDashboard  # noqa: E402
from torchmagic.display.testing import recording_comms  # noqa: E402

_polls: list[int] = []
_original_poll = Collector.poll


def _counting_poll(self: Collector) -> None:
    before = self.bytes_read
    _original_poll(self)
    _polls.append(self.bytes_read - before)


Collector.poll = _counting_poll  # type: ignore[method-assign]  # the kernel's reads, per poll


def _cell(model: torch.nn.Module, seconds: float, pause: float, out_dir: str):
    def cell() -> None:
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        x, y = torch.randn(32, 64), torch.randn(32, 8)
        deadline = time.monotonic() + seconds
        done = torch.zeros(1)
        while not done.item():
            if pause:
                time.sleep(pause)
            opt.zero_grad()
            F.mse_loss(ddp(x), y).backward()
            opt.step()
            done.fill_(float(time.monotonic() > deadline))
            dist.all_reduce(done, op=dist.ReduceOp.MAX)  # every rank makes the same number of steps
        monitor = active_monitor()
        publisher = next(cb for cb in monitor.on_refresh if isinstance(cb, RankPublisher)) if monitor else None
        with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as f:
            json.dump({"sizes": publisher.sizes if publisher else [], "steps": monitor.step if monitor else 0}, f)

    return cell


def measure(nproc: int, seconds: float, pause: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
    _polls.clear()
    with tempfile.TemporaryDirectory() as out_dir, recording_comms() as rec:
        dash = LiveDashboard("benchmark", transport="lab")
        calls: list[tuple[float, int, bool]] = []  # after each refresh: when, messages so far, final

        def timed(snap: Snapshot) -> None:
            dash(snap)
            calls.append((time.monotonic(), len(rec.messages), snap.final))

        cell = _cell(model, seconds, pause, out_dir)
        result = run_distributed(cell, nproc=nproc, models=[model], on_refresh=[timed], timeout=120)
        ranks = [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(nproc)]
    running = [c for c in calls if not c[2]]
    (t0, first, _), (t1, last, _) = running[0], running[-1]
    steady = rec.messages[first:last]
    refreshes = [(d["content"], b) for kind, d, b in rec.messages if _is_refresh((kind, d, b))]
    by_rank = {s.id for s in (dash.figs.ranks, dash.figs.rank_memory) if s is not None}
    rank_bytes = [
        sum(len(b[i]) for batch in c["streams"] + c["replace"] if batch["source"] in by_rank for i in batch["columns"].values())
        for c, b in refreshes
    ]
    # the payloads while training: not the first (no rows yet) and not the last (the final refresh)
    during = [(b, n) for r in ranks for b, n in r["sizes"][1:-1]]
    sizes = [b for b, _ in during]
    rows_per_payload = statistics.median(n for _, n in during) if during else 0
    polls = [p for p in _polls if p]
    return {
        "nproc": nproc,
        "steps": result.steps,
        "payloads_per_rank": statistics.median(len(r["sizes"]) for r in ranks),
        "bytes_median": statistics.median(sizes) if sizes else 0,
        "bytes_max": max(sizes) if sizes else 0,
        "rows_median": rows_per_payload,
        "bytes_per_row": statistics.median(b / n for b, n in during if n) if during else 0,
        "kernel_bytes_per_poll": statistics.median(polls) if polls else 0,
        "dashboard_messages_per_s": len(steady) / (t1 - t0) if t1 > t0 else 0,
        "dashboard_kb_per_s": _nbytes(steady) / (t1 - t0) / 1e3 if t1 > t0 else 0,
        "dashboard_opening_kb": _nbytes(rec.messages[:first]) / 1e3,
        # inside that window: the refreshes alone, and the one-off messages that add the plots by rank
        "refresh_kb_per_s": _nbytes([m for m in steady if _is_refresh(m)]) / (t1 - t0) / 1e3 if t1 > t0 else 0,
        "rank_plots_kb": _nbytes([m for m in steady if not _is_refresh(m)]) / 1e3,
        "rank_curve_bytes_per_refresh": statistics.median(rank_bytes) if rank_bytes else 0,
        "rank_curve_bytes_max": max(rank_bytes, default=0),
    }


def _is_refresh(message: tuple[str, dict[str, Any], list[bytes]]) -> bool:
    kind, data, _ = message
    return kind == "comm_msg" and data.get("method") == "custom" and data["content"].get("kind") == "torchmagic.refresh"


def _nbytes(messages: list[tuple[str, dict[str, Any], list[bytes]]]) -> int:
    return sum(len(json.dumps(data, default=str)) + sum(len(b) for b in buffers) for _, data, buffers in messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4,8", help="comma-separated rank counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="training time per configuration")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    rows = []
    for label, pause in (("paced", 0.01), ("flat out", 0.0)):
        for n in [int(v) for v in args.ranks.split(",")]:
            row = {"rate": label, **measure(n, args.seconds, pause)}
            rows.append(row)
            print(
                f"{label:>8}  N={row['nproc']:<2} steps {row['steps']:>5}  payloads/rank {row['payloads_per_rank']:>4.0f}  "
                f"bytes/payload median {row['bytes_median']:>6.0f} max {row['bytes_max']:>6.0f}  "
                f"rows {row['rows_median']:>5.1f}  B/row {row['bytes_per_row']:>5.0f}  "
                f"kernel B/poll {row['kernel_bytes_per_poll']:>7.0f}  "
                f"dashboard {row['dashboard_messages_per_s']:.1f} msg/s {row['dashboard_kb_per_s']:.1f} KB/s "
                f"(refreshes {row['refresh_kb_per_s']:.1f} KB/s, plots by rank {row['rank_plots_kb']:.0f} KB once; "
                f"opening {row['dashboard_opening_kb']:.0f} KB), "
                f"by rank {row['rank_curve_bytes_per_refresh']:.0f} B/refresh (max {row['rank_curve_bytes_max']})",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
