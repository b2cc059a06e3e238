"""Axis ticks and tick labels for the static SVG charts: 4-6 round numbers, short labels that fit.

A linear axis spans its data and 5 % more on each side, as BokehJS's ``DataRange1d`` pads the live
charts' (:func:`padded`), and is ticked inside at 1, 2, 2.5 or 5 times a power of ten
(:func:`ticks_inside`), so a frozen chart frames its lines as its live twin does. A log axis
(:func:`log_ticks`) likewise ticks real values inside its range (0.1, 0.15, 0.2, 0.3; 0.001, 0.01 ..),
as the live charts tick theirs (:mod:`torchmagic.display.log_axis`, the same rule in JavaScript).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FONT_PX = 9
CHAR_PX = 5.4  # average advance of a 9 px sans-serif digit: what a label's width is estimated from


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round-number ticks whose first is <= lo and last >= hi; at most ``most`` of them (4-6 for any span)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / (most - 2)
    magnitude = 10 ** math.floor(math.log10(raw))
    for mantissa in (1, 2, 2.5, 5, 10):
        step = mantissa * magnitude
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if last - first + 1 <= most:
            break
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    return [0.0 if t == 0 else t for t in ticks]


def decade_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Whole decades (log10 units) around lo..hi, 1, 2 or 5 decades apart; at least two."""
    for every in (1, 2, 5, 10, 20):
        first, last = math.floor(lo / every) * every, math.ceil(hi / every) * every
        if last == first:
            last = first + every
        if (last - first) // every + 1 <= most:
            return [float(d) for d in range(first, last + 1, every)]
    return [float(math.floor(lo)), float(math.ceil(hi))]


def padded(lo: float, hi: float) -> tuple[float, float]:
    """The range BokehJS gives data from ``lo`` to ``hi``: 10 % wider, centred (``range_padding``);
    a single value, 1 either side (``default_span``)."""
    if hi <= lo:
        return lo - 1.0, lo + 1.0
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def ticks_inside(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round-number ticks inside ``lo..hi`` (lo < hi): 4 to ``most`` of them where a round step gives
    as many, at least the two ends where none does (a span too small for 12 decimals)."""
    ticks = _steps_inside(lo, hi, most) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else []
    return [0.0 if t == 0 else t for t in ticks] if len(ticks) >= 2 else [lo, hi]


# Multiples per decade tried on a log axis, densest first, each set about evenly spaced in log
# (round steps would crowd its top); then every 2, 5... decades.
LOG_MANTISSAS = ((1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8), (1, 1.5, 2, 3, 5, 7), (1, 2, 3, 5), (1, 2, 5), (1, 3), (1,))
LOG_EVERY = (2, 5, 10, 20, 50)


def log_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Ticks of a log axis from ``lo`` to ``hi`` (real values), all inside it, at most ``most``: round
    steps when hi < 2 lo (0.52, 0.54 ..: log and linear look alike there), else the densest set of
    multiples of each decade (LOG_MANTISSAS), or of every 2, 5.. decades, not giving more."""
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        return []
    if hi < 2 * lo:
        steps = _steps_inside(lo, hi, most)
        if len(steps) >= 2:  # (round steps under 1e-12 round to nothing: those take the decades' multiples)
            return steps
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in LOG_MANTISSAS:
        ticks = [t for d in range(first, last + 1) for m in mantissas if _inside(t := _times_decade(m, d), lo, hi)]
        if len(ticks) <= most:
            return ticks
    for every in LOG_EVERY:
        ticks = [t for d in range(first, last + 1) if d % every == 0 and _inside(t := _times_decade(1, d), lo, hi)]
        if len(ticks) <= most:
            return ticks
    return [lo, hi]


def log_label(value: float) -> str:
    """A log axis tick's real value, up to 6 significant digits: "0.001" .. "1000", else "3e-05", "1e+04"."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    mantissa, _, exponent = f"{value:.5e}".partition("e")
    e = int(exponent)
    if -3 <= e < 4:
        return _trim(f"{value:.{max(0, 5 - e)}f}")
    return _trim(mantissa) + f"e{e:+03d}"


def _steps_inside(lo: float, hi: float, most: int) -> list[float]:
    """Multiples of a round step (1, 2, 2.5, 5 times a power of ten) inside lo..hi: the smallest step
    giving 4 to ``most`` of them, else the smallest giving at most ``most``."""
    magnitude = 10 ** math.floor(math.log10((hi - lo) / most))
    fallback: list[float] = []
    for mantissa in (1, 2, 2.5, 5, 10, 20):
        step = mantissa * magnitude
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first + 1 > most:
            continue
        ticks = [t for k in range(first, last + 1) if lo <= (t := round(k * step, 12)) <= hi]
        if len(ticks) >= 4:
            return ticks
        fallback = fallback or ticks
    return fallback


def _inside(t: float, lo: float, hi: float) -> bool:
    """A decade's multiple within lo..hi, give or take a rounding (JavaScript's 10 ** 30 is not Python's)."""
    return lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)


def _times_decade(m: float, d: int) -> float:
    """m * 10**d, exact where it can be (3 / 10, not 3 * 0.1): the JavaScript twin computes the same."""
    return float(m * 10**d) if d >= 0 else m / 10 ** (-d)


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """An axis's tick labels, in one unit: 2k, 4k .. 10k rather than 8000 beside 10k."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    top = max((abs(t) for t in ticks), default=0.0)
    return [tick_label(t, step, top) for t in ticks]


def tick_label(value: float, step: float, top: float | None = None) -> str:
    """A tick's value, as short as its spacing allows: "0", "250", "1.5k", "0.05", "2e-05"; ``top``,
    the axis's largest magnitude, chooses the unit (k, M, G) of all its ticks."""
    if value == 0:
        return "0"
    a = abs(value)
    big = a if top is None else max(a, top)
    if big >= 1e4:
        for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if big >= div:
                return _trim(f"{value / div:.{_decimals(step / div)}f}") + unit
    if a < 1e-3:
        return _trim(f"{value:.{max(0, _decimals(step / 10 ** math.floor(math.log10(a))))}e}").replace("e-0", "e-")
    return _trim(f"{value:.{_decimals(step)}f}")


def decade_label(decade: float) -> str:
    """The real value at a whole decade: "0.001" .. "100", else "1e-06", "1e+04"."""
    e = int(round(decade))
    return f"{10.0**e:g}" if -3 <= e <= 2 else f"1e{e:+03d}"


def text_px(text: str) -> float:
    return len(text) * CHAR_PX


def _decimals(step: float) -> int:
    """Decimals that tell ticks ``step`` apart."""
    if step <= 0 or not math.isfinite(step):
        return 0
    return max(0, -math.floor(math.log10(step) + 1e-9) + (0 if _is_whole(step) else 1))


def _is_whole(step: float) -> bool:
    scaled = step / 10 ** math.floor(math.log10(step) + 1e-9)
    return abs(scaled - round(scaled)) < 1e-6


def _trim(text: str) -> str:
    """Trailing zeros of a fixed-point mantissa dropped ("2.50k" -> "2.5k"); exponents kept."""
    mantissa, e, exponent = text.partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return mantissa + e + exponent
