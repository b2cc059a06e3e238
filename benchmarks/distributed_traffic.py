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
  ``multi_get``): the figure that grows with N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from torchmagic.core.distributed import run_distributed  # noqa: E402
from torchmagic.core.distributed.merge import Collector  # noqa: E402
from torchmagic.core.distributed.rank import RankPublisher  # noqa: E402
from torchmagic.core.monitor import active_monitor  # noqa: E402

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
    with tempfile.TemporaryDirectory() as out_dir:
        result = run_distributed(_cell(model, seconds, pause, out_dir), nproc=nproc, models=[model], timeout=120)
        ranks = [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(nproc)]
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
    }


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
                f"kernel B/poll {row['kernel_bytes_per_poll']:>7.0f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
