"""Text fallback for terminals, plain Python and headless runs: one updating line, then a summary."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from torchmagic.core.formatting import duration, number, rate
from torchmagic.core.monitor import Snapshot


class TextProgress:
    def __init__(self, stream: TextIO | None = None, interval: float = 0.5, width: int = 24) -> None:
        self.stream = stream or sys.stdout
        self.interval = interval
        self.width = width
        self._last = 0.0
        self._printed = 0

    def __call__(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if not snap.final and now - self._last < self.interval:
            return
        self._last = now
        line = self.line(snap)
        pad = " " * max(0, self._printed - len(line))
        self.stream.write("\r" + line + pad)
        self._printed = len(line)
        if snap.final:
            self.stream.write("\n" + self.summary(snap) + "\n")
        self.stream.flush()

    def line(self, snap: Snapshot) -> str:
        r = snap.result
        losses = [v for v in r.columns.get("loss", [])[-1:] if v is not None]
        parts = []
        if snap.fraction is not None:
            filled = int(snap.fraction * self.width)
            parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}] {snap.fraction * 100:3.0f}%")
        parts.append(f"step {r.steps}" + (f"/~{r.total_steps}" if r.total_steps else ""))
        if losses:
            parts.append(f"loss {number(losses[0])}")
        if snap.samples_per_s:
            parts.append(rate(snap.samples_per_s))
        if snap.eta is not None and not snap.final:
            parts.append(f"ETA {duration(snap.eta)}")
        if r.alerts:
            parts.append(f"{len(r.alerts)} alert(s)")
        return " · ".join(parts)

    def summary(self, snap: Snapshot) -> str:
        r = snap.result
        lines = [f"torchmagic: {r.summary()}"]
        lines += [f"  {a}" for a in r.alerts[:10]]
        if len(r.alerts) > 10:
            lines.append(f"  … {len(r.alerts) - 10} more alerts")
        return "\n".join(lines)
