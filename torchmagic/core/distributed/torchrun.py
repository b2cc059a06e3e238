"""Under ``torchrun``: every rank runs the script; rank 0 shows one view of all ranks, others stay silent.

Each rank's monitor gets a :class:`RankZeroView` as its refresh callback. Every rank publishes
its payload; rank 0 also reads the others' and hands a merged
:class:`~torchmagic.core.distributed.merge.DistributedSnapshot` to its display. The payloads go
through a store every rank already reaches: torchrun's agent store (``MASTER_ADDR:MASTER_PORT``
when ``TORCHELASTIC_USE_AGENT_STORE`` is set; it outlives the workers), else the default process
group's store. Never a collective: refreshes follow each rank's wall clock, so a collective
issued there would pair with a different one of the training on another rank.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from torchmagic.core.distributed.merge import Collector, LiveMerge
from torchmagic.core.distributed.protocol import PrefixStore, Store, TCPStore
from torchmagic.core.distributed.rank import RankPublisher, StepBoundary
from torchmagic.core.monitor import Snapshot, active_monitor

FINAL_WAIT = 5.0  # seconds rank 0's last refresh waits for the other ranks' last payloads
_runs = itertools.count()  # every rank counts its runs in the same order: a run's key prefix


@dataclass(frozen=True)
class TorchrunEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    agent_store: bool  # torchrun's agent hosts a store at MASTER_ADDR:MASTER_PORT


def torchrun_env(environ: Mapping[str, str] = os.environ) -> TorchrunEnv | None:
    """The launcher's environment (torchrun, or any launcher that sets the same variables), or None."""
    try:
        return TorchrunEnv(
            rank=int(environ["RANK"]),
            world_size=int(environ["WORLD_SIZE"]),
            local_rank=int(environ.get("LOCAL_RANK", environ["RANK"])),
            master_addr=environ["MASTER_ADDR"],
            master_port=int(environ["MASTER_PORT"]),
            agent_store=environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
        )
    except (KeyError, ValueError):
        return None


def connect(env: TorchrunEnv, timeout: timedelta = timedelta(seconds=60)) -> Store | None:
    """A store all ranks share, or None (no agent store and no process group yet)."""
    if env.agent_store:
        return TCPStore(env.master_addr, env.master_port, None, False, timeout=timeout)
    if dist.is_available() and dist.is_initialized():
        store: Store = dist.distributed_c10d._get_default_store()
        return store
    return None


class RankZeroView:
    """The refresh callback of every rank's monitor; only rank 0's ``display`` is ever called.

    Without a shared store (no agent store, no process group) rank 0 shows its own run only.
    """

    def __init__(self, env: TorchrunEnv, display: Callable[[Snapshot], None] | None, store: Store | None = None) -> None:
        self.env = env
        self.display = display if env.rank == 0 else None
        base = store if store is not None else connect(env)
        self.publisher: RankPublisher | None = None
        self.collector: Collector | None = None
        self.boundary: StepBoundary | None = None
        self.live = LiveMerge(env.world_size)
        self._started = time.perf_counter()
        self._shared: Store | None = None
        if base is not None:
            self._shared = PrefixStore(f"torchmagic/run{next(_runs)}", base)
            self.publisher = RankPublisher(self._shared, env.rank, lambda: self.boundary)
            if env.rank == 0:
                self.collector = Collector(self._shared, self.live)

    def __call__(self, snap: Snapshot) -> None:
        self._time_steps(snap.final)
        if self.publisher is not None:
            self.publisher(snap)
        if self.display is None:
            return
        if self.collector is None:
            self.display(snap)
            return
        self.collector.poll()
        deadline = time.monotonic() + FINAL_WAIT
        while snap.final and not self.collector.finished() and time.monotonic() < deadline:
            time.sleep(0.05)
            self.collector.poll()
        self.live.update(time.perf_counter() - self._started)
        merged = self.live.snapshot(final=snap.final)
        if snap.final:
            own = snap.result
            views = self.live.ranks.values()
            failed = any(v.status == "failed" for v in views)
            merged.result.status = "failed" if failed else own.status
            merged.result.error = own.error
            merged.result.elapsed = max(own.elapsed, merged.result.elapsed)
            merged.result.layers, merged.result.histograms = own.layers, own.histograms
        self.display(merged)

    def _time_steps(self, final: bool) -> None:
        """Local step times (for stragglers under DDP) from the first refresh, which the monitor
        makes at its start, to its last; no stop agreement: torchrun signals every rank itself."""
        monitor = active_monitor()
        if self.boundary is None and not final and monitor is not None and self._shared is not None:
            self.boundary = StepBoundary(monitor, self._shared, agree_stop=False).__enter__()
        elif final and self.boundary is not None:
            self.boundary.__exit__()
