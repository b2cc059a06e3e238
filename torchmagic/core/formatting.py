"""The one place that formats bytes, durations, rates, numbers and shapes for people."""

from __future__ import annotations

import math
from collections.abc import Iterable


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def nbytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def number(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def rate(per_second: float | None, unit: str = "samples") -> str:
    if per_second is None or not math.isfinite(per_second):
        return "?"
    if per_second >= 1e4:
        return f"{per_second / 1e3:.1f}k {unit}/s"
    return f"{per_second:.0f} {unit}/s" if per_second >= 10 else f"{per_second:.2f} {unit}/s"


def micros(us: float | None) -> str:
    """A short duration given in microseconds: "850 us", "12.3 ms", "4.56 s"."""
    if us is None or not math.isfinite(us):
        return "?"
    if abs(us) < 1000:
        return f"{us:.0f} us" if abs(us) >= 10 else f"{us:.2f} us"
    if abs(us) < 1e6:
        return f"{us / 1e3:.3g} ms" if abs(us) < 1e5 else f"{us / 1e3:.0f} ms"
    return f"{us / 1e6:.3g} s"


def dims(shape: Iterable[int]) -> str:
    """``[2, 3]``: a shape as torch's own error messages print it."""
    return "[" + ", ".join(str(d) for d in shape) + "]"
