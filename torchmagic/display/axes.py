"""Axis ticks and tick labels for the static SVG charts: 4-6 round numbers, short labels that fit.

Ticks are 1, 2 or 5 times a power of ten apart, and the axis is widened to the outer ticks, so a
time axis that starts at 8.31e-07 s starts at 0. On a log axis the ticks are whole decades
(1, 2 or 5 decades apart), labelled with their real values ("0.01", "1e-06").
"""

from __future__ import annotations

import math

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


def tick_label(value: float, step: float) -> str:
    """A tick's value, as short as its spacing allows: "0", "250", "1.5k", "0.05", "2e-05"."""
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 1e4:
        for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
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
