"""What every rank adds to its own monitor: a publisher of compact payloads, and the step boundary.

:class:`RankPublisher` is an ``on_refresh`` callback: at each refresh it writes the history rows
the kernel has not acknowledged yet (at most ``LIVE_ROWS``) and the rank's vitals under
``rank<r>/state``. Rows the kernel missed are sent again, so nothing is lost when a refresh is
overwritten before the kernel read it, and the payload stays bounded when the kernel lags.

:class:`StepBoundary` runs after each optimizer step (after the monitor's own hook): it times
the part of the step no rank waits for another (``local_time``: data loading and forward), and
settles the stop step that all ranks agree on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as nn_module
from torch.nn.parallel import DistributedDataParallel
from torch.optim import optimizer as optim_module

from torchmagic.core.compiled import eager_only
from torchmagic.core.distributed import columns, protocol
from torchmagic.core.distributed.protocol import Store
from torchmagic.core.monitor import Snapshot, TrainingMonitor

MAX_ROOTS = 8  # root modules timed per rank (a model, its DDP wrapper, an evaluation model...)


class StepBoundary:
    """Per-step local time, and the agreed stop, for one rank's monitor.

    Local time: from the end of the previous step to the end of the step's last root forward,
    less what DDP spends syncing before it calls the wrapped module. Hooks go on the root
    modules only (found by a global pre-hook that removes itself at the first forward of a
    step), so the other modules' forwards stay on PyTorch's fast path.

    Stop agreement: the kernel sets ``stop``. The first rank to see it at the end of its step
    ``k`` claims ``k + 1`` as the last step (a compare-and-set, so one value wins). Under DDP
    no rank can have finished step ``k + 1`` yet (it needs this rank's gradients), and every
    rank checks at each step, so each reads the claim at a step ``<= k + 1`` and stops after
    ``k + 1``. The kernel's own view lags by a refresh, which is why the ranks settle it.
    """

    def __init__(self, monitor: TrainingMonitor, store: Store, *, agree_stop: bool = True) -> None:
        self.monitor = monitor
        self.store = store
        self.agree_stop = agree_stop  # False under torchrun: each rank gets the launcher's SIGINT itself
        self.local_times: dict[int, float] = {}
        self.stop_step: int | None = None
        self._handles: list[Any] = []
        self._finder: Any = None  # the global pre-hook that looks for the step's first root
        self._roots: list[torch.nn.Module] = []
        self._seen = 0  # the monitor's step at the last boundary
        self._boundary: float | None = None  # the end of the last step; the first step has none
        self._root_started: float | None = None
        self._forward_end: float | None = None
        self._sync = 0.0  # seconds DDP spent syncing before the wrapped module's forward

    def __enter__(self) -> StepBoundary:
        self._handles = [optim_module.register_optimizer_step_post_hook(eager_only(self._after_step))]
        self._look_for_root()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._finder is not None:
            self._finder.remove()
            self._finder = None
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _look_for_root(self) -> None:
        if self._finder is None and len(self._roots) < MAX_ROOTS:
            self._finder = nn_module.register_module_forward_pre_hook(eager_only(self._first_forward))

    def _first_forward(self, module: torch.nn.Module, args: Any) -> None:
        self._finder.remove()  # safe here: PyTorch iterates over a copy of the hooks
        self._finder = None
        if any(module is root for root in self._roots):
            return
        self._roots.append(module)
        self._handles += [
            module.register_forward_pre_hook(eager_only(self._root_pre)),
            module.register_forward_hook(eager_only(self._root_post)),
        ]
        if isinstance(module, DistributedDataParallel):
            self._handles.append(module.module.register_forward_pre_hook(eager_only(self._inner_pre)))
        self._root_pre(module, args)  # its own pre-hook was registered too late for this call

    def _root_pre(self, module: torch.nn.Module, args: Any) -> None:
        self._root_started = time.perf_counter()

    def _inner_pre(self, module: torch.nn.Module, args: Any) -> None:
        if self._root_started is not None:
            self._sync += time.perf_counter() - self._root_started  # DDP may broadcast buffers first

    def _root_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._forward_end = time.perf_counter()

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        step = self.monitor.step
        if step == self._seen:
            return  # a second optimizer of the same step
        self._seen = step
        now = time.perf_counter()
        end = self._forward_end
        if self._boundary is not None and end is not None and end > self._boundary:
            self.local_times[step] = max(0.0, end - self._boundary - self._sync)
        self._boundary, self._sync = now, 0.0
        self._look_for_root()
        if self.agree_stop:
            self._check_stop(step)

    def _check_stop(self, step: int) -> None:
        if self.stop_step is None:
            if not protocol.has_key(self.store, protocol.STOP):
                return
            self.stop_step = int(self.store.compare_set(protocol.STOP_STEP, "", str(step + 1)))
        if step >= self.stop_step:
            self.monitor.stop_request.request()  # the monitor raises TrainingStopped at the next forward

    def at_refresh(self) -> None:
        """Loops without an optimizer (a step per backward) never reach ``_after_step``: they
        stop at the refresh after the flag, without a step agreed across ranks."""
        if self.agree_stop and self._seen == 0 and self.monitor.step > 0 and protocol.has_key(self.store, protocol.STOP):
            self.monitor.stop_request.request()


class RankPublisher:
    """``on_refresh`` callback of a rank: writes :class:`~protocol.Payload` s to the store."""

    def __init__(self, store: Store, rank: int, boundary: Callable[[], StepBoundary | None] = lambda: None) -> None:
        self.store = store
        self.rank = rank
        self._boundary = boundary
        self._settled = 0  # history rows whose local time is known (or will never be)
        self._started = time.perf_counter()
        self.sizes: list[tuple[int, int]] = []  # (bytes, rows) of each payload written, for the traffic benchmark
        store.set(protocol.ack_key(rank), protocol.format_ack(0, 0))

    def __call__(self, snap: Snapshot) -> None:
        r = snap.result
        boundary = self._boundary()
        if boundary is not None:
            self._settled = _fill_local_times(r.columns, boundary.local_times, self._settled, snap.final)
            boundary.at_refresh()
        else:
            self._settled = columns.row_count(r.columns)
        rows, alerts = protocol.parse_ack(self.store.get(protocol.ack_key(self.rank)))
        payload = protocol.make_payload(
            r,
            self.rank,
            rows,
            alerts,
            upto=self._settled,
            status=r.status if snap.final else "running",
            elapsed=r.elapsed if snap.final else time.perf_counter() - self._started,
            fraction=snap.fraction,
            eta=snap.eta,
            samples_per_s=snap.samples_per_s,
        )
        data = payload.encode()
        self.sizes.append((len(data), payload.row_count))
        protocol.set_bytes(self.store, protocol.state_key(self.rank), data)


def _fill_local_times(cols: Any, local_times: dict[int, float], start: int, final: bool) -> int:
    """Write the boundary's local times into the rank's history, as a column like any other;
    returns how many rows are settled. A refresh can run inside the monitor's own step hook,
    before the boundary timed that step: the last row then waits for the next refresh."""
    steps = cols.get("step", ())
    if not local_times and "local_time" not in cols:
        return len(steps)
    i = start
    while i < len(steps):
        value = local_times.pop(int(steps[i]), None)
        if value is None and i == len(steps) - 1 and not final:
            break
        columns.set_value(cols, "local_time", i, value)
        i += 1
    return i
