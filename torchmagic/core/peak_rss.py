"""The peak RSS of this process while a cell runs, and over the process's life.

Peak RSS during a cell comes from the kernel's own high-water mark where Linux lets a process
reset it (``/proc/self/clear_refs``, value 5; ``VmHWM`` in ``/proc/self/status``): exact, no
thread, no cost while the cell runs. ``resource.getrusage`` cannot do this job: its maximum RSS
is the process's lifetime maximum, so once one cell peaked high no later cell's peak is seen.
Where the reset is unavailable (not Linux, or /proc read-only) a sampling thread reads the RSS
every few milliseconds while the recorded cell runs only; ``stop()`` ends and joins it.
"""

from __future__ import annotations

import threading

from torchmagic.core.memory import process_rss

SAMPLE_INTERVAL_S = 0.002
STRATEGIES = ("auto", "hwm", "sampling")

# The process's peak RSS as it was before the high-water mark was last reset.
_folded_peak = 0


def _read_hwm() -> int | None:
    """The kernel's high-water mark of this process's RSS, in bytes (Linux), or None."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Resets the high-water mark to the current RSS; False where the system does not allow it."""
    global _folded_peak
    before = _read_hwm()
    if before is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    _folded_peak = max(_folded_peak, before)
    return True


def process_peak_rss() -> int:
    """The highest RSS this process has had, in bytes (survives the per-cell resets)."""
    hwm = _read_hwm()
    if hwm is not None:
        return max(_folded_peak, hwm)
    import resource
    import sys

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(_folded_peak, maxrss if sys.platform == "darwin" else maxrss * 1024)


class PeakRss:
    """The peak RSS between ``start()`` and ``stop()``: the kernel's high-water mark, or sampling."""

    def __init__(self, strategy: str = "auto", interval: float = SAMPLE_INTERVAL_S) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        self.strategy = strategy
        self.interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._peak = process_rss()
        if self.strategy in ("auto", "hwm") and _reset_hwm():
            self.strategy = "hwm"
            return
        if self.strategy == "hwm":
            raise RuntimeError("this system does not let a process reset its RSS high-water mark")
        self.strategy = "sampling"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="torchmagic-rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = process_rss()
            if rss > self._peak:
                self._peak = rss

    def current(self) -> int:
        """The peak so far in bytes, without ending the measurement."""
        hwm = _read_hwm() if self.strategy == "hwm" else None
        return max(self._peak, hwm or 0)

    def stop(self) -> int:
        """Ends the measurement (joins the sampling thread) and returns the peak in bytes."""
        rss = process_rss()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.strategy == "hwm":
            hwm = _read_hwm()
            if hwm is not None:
                self._peak = max(self._peak, hwm)
        self._peak = max(self._peak, rss)
        return self._peak

    @property
    def running(self) -> bool:
        return self._thread is not None
