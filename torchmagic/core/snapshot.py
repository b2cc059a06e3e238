"""What a display is handed at each refresh, and the clock readings of a run."""

from __future__ import annotations

from dataclasses import dataclass

from torchmagic.core.result import RunResult


@dataclass
class Snapshot:
    """What a display gets at each refresh; ``result`` is live and grows between refreshes."""

    result: RunResult
    fraction: float | None  # progress 0..1 when the loop's length is known
    eta: float | None  # seconds
    samples_per_s: float | None
    final: bool = False


@dataclass
class RunClock:
    """``time.perf_counter()`` readings of a run."""

    start: float
    last_step: float
    last_refresh: float = 0.0
