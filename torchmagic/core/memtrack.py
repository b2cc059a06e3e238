"""Per-cell memory attribution: RSS and CUDA deltas and peaks, and memory held per module.

A :class:`CellMemoryTracker` measures one cell; the peak RSS comes from
:mod:`torchmagic.core.peak_rss` and the per-module numbers from
:mod:`torchmagic.core.module_memory`. Measured cells are kept in a history that
``memory_history()`` shows as a DataFrame.

CUDA numbers are read only when this process already initialised CUDA; the CUDA peak resets
torch's peak counter of the current device at the start of a recorded cell.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from torchmagic.core.memory import cuda_in_use, process_rss
from torchmagic.core.module_memory import ModuleMemory, ModuleMemoryHooks
from torchmagic.core.peak_rss import PeakRss, process_peak_rss
from torchmagic.core.peak_rss import _reset_hwm as _reset_hwm  # benchmarks/memory_overhead.py probes it here

__all__ = [
    "HISTORY_COLUMNS",
    "CellMemory",
    "CellMemoryTracker",
    "ModuleMemory",
    "ModuleMemoryHooks",
    "PeakRss",
    "clear_history",
    "history",
    "memory_history",
    "process_peak_rss",
    "record",
    "recording",
    "set_recording",
]


@dataclass
class CellMemory:
    """What one cell did to memory (sizes in bytes; ``*_peak`` are absolute highs)."""

    cell: int | None = None
    code: str = ""
    duration: float = 0.0
    rss_start: int = 0
    rss_delta: int = 0
    rss_peak: int = 0
    peak_method: str = ""  # "hwm" or "sampling"
    cuda_start: int | None = None
    cuda_delta: int | None = None
    cuda_peak: int | None = None
    modules: list[ModuleMemory] = field(default_factory=list)  # held, largest first
    forwards: int = 0  # root forwards seen (with --by-module)
    sampled_forwards: int = 0

    def row(self) -> dict[str, Any]:
        """One row of ``memory_history()``."""
        top = self.modules[0].name if self.modules else None
        return {
            "cell": self.cell,
            "code": self.code,
            "duration": self.duration,
            "rss_delta": self.rss_delta,
            "rss_peak": self.rss_peak,
            "cuda_delta": self.cuda_delta,
            "cuda_peak": self.cuda_peak,
            "top_module": top,
        }


class CellMemoryTracker:
    """Measures one cell: ``start()`` before it runs, ``stop()`` after (always, even on error)."""

    def __init__(
        self,
        *,
        by_module: bool = False,
        every: int = 1,
        top: int = 10,
        strategy: str = "auto",
        names: Callable[[torch.nn.Module], str | None] | None = None,
    ) -> None:
        self.peak = PeakRss(strategy)
        self.hooks = ModuleMemoryHooks(every, names) if by_module else None
        self.top_n = top
        self.result = CellMemory()
        self._t0 = 0.0
        self.active = False

    def start(self, cell: int | None = None, code: str = "") -> None:
        r = self.result
        r.cell, r.code = cell, _first_line(code)
        if cuda_in_use():
            r.cuda_start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self.peak.start()
        r.rss_start = process_rss()
        if self.hooks is not None:
            self.hooks.attach()
        self.active = True
        self._t0 = time.perf_counter()

    def stop(self) -> CellMemory:
        if not self.active:
            return self.result
        self.active = False
        r = self.result
        r.duration = time.perf_counter() - self._t0
        if self.hooks is not None:
            self.hooks.detach()
            r.modules = self.hooks.top(self.top_n)
            r.forwards, r.sampled_forwards = self.hooks.forwards, self.hooks.sampled
        rss = process_rss()
        r.rss_peak = max(self.peak.stop(), r.rss_start, rss)
        r.rss_delta = rss - r.rss_start
        r.peak_method = self.peak.strategy
        if cuda_in_use():
            start = r.cuda_start or 0
            r.cuda_delta = torch.cuda.memory_allocated() - start
            r.cuda_peak = torch.cuda.max_memory_allocated()
        return r


def _first_line(code: str) -> str:
    for line in code.splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""


# --------------------------------------------------------------------------- the history

_history: list[CellMemory] = []
_recording = False


def set_recording(on: bool) -> None:
    """Whether every cell is being recorded (``%memory on``); shown in the side panel."""
    global _recording
    _recording = on


def recording() -> bool:
    return _recording


def record(cell: CellMemory) -> None:
    _history.append(cell)


def history() -> list[CellMemory]:
    return list(_history)


def clear_history() -> None:
    _history.clear()


HISTORY_COLUMNS = ["cell", "code", "duration", "rss_delta", "rss_peak", "cuda_delta", "cuda_peak", "top_module"]


def memory_history() -> Any:
    """The cells recorded by ``%memory on`` and ``%%memory``: a DataFrame, one row per cell.

    Sizes are in bytes: ``rss_delta`` (RSS at the end minus at the start), ``rss_peak`` (the
    highest RSS during the cell), and with CUDA in use ``cuda_delta`` and ``cuda_peak``
    (allocated bytes). ``top_module`` names the module whose forward held the most, with
    ``--by-module``.
    """
    import pandas as pd

    rows = [c.row() for c in _history]
    columns = list(HISTORY_COLUMNS)
    if not any(r["cuda_delta"] is not None for r in rows):
        columns = [c for c in columns if not c.startswith("cuda_")]
    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)
