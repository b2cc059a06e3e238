"""Bounded, decimated copies of growing histories, shaped as bokeh column batches.

A :class:`Decimator` follows a history that only grows. Each refresh it hands out the new rows
averaged into buckets of ``stride`` rows; when the points sent would pass ``limit`` it doubles
the stride and hands out the whole history again (a *replace*). So a run of any length keeps at
most ``limit`` points per curve in the browser, and the cost of a refresh stays bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

Columns = dict[str, np.ndarray]
UpdateKind = Literal["stream", "replace"]


class SeriesBatch(NamedTuple):
    """What a :class:`Decimator` hands out: points to append (``stream``) or the whole curve (``replace``)."""

    kind: UpdateKind
    columns: Columns


def as_float32(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)


class Decimator:
    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self.stride = 1
        self.consumed = 0  # history rows already folded into sent points
        self.sent = 0  # points in the browser

    def take(self, columns: dict[str, Sequence[float | None]], x: str) -> SeriesBatch | None:
        """What changed since the last call, or None."""
        n = len(columns.get(x, ()))
        complete = (n // self.stride) * self.stride
        if complete <= self.consumed:
            return None
        new_points = (complete - self.consumed) // self.stride
        if self.sent + new_points <= self.limit:
            batch = self._buckets(columns, x, self.consumed, complete)
            self.consumed, self.sent = complete, self.sent + new_points
            return SeriesBatch("stream", batch)
        while n // self.stride > self.limit // 2:
            self.stride *= 2
        complete = (n // self.stride) * self.stride
        batch = self._buckets(columns, x, 0, complete)
        self.consumed, self.sent = complete, complete // self.stride
        return SeriesBatch("replace", batch)

    def _buckets(self, columns: dict[str, Sequence[float | None]], x: str, start: int, stop: int) -> Columns:
        s = self.stride
        out: Columns = {}
        for name, values in columns.items():
            arr = as_float32(values[start:stop])
            if s == 1:
                out[name] = arr
            elif name == x:
                out[name] = arr[s - 1 :: s]
            else:
                with np.errstate(all="ignore"):
                    out[name] = np.nanmean(arr.reshape(-1, s), axis=1).astype(np.float32) if arr.size else arr
        return out


class Smoothed(NamedTuple):
    values: list[float | None]
    last: float | None  # where the next call continues from


def ema(values: Sequence[float | None], alpha: float = 0.1, start: float | None = None) -> Smoothed:
    """Exponential moving average, continuing from ``start``."""
    out: list[float | None] = []
    avg = start
    for v in values:
        if v is not None and np.isfinite(v):
            avg = v if avg is None else avg + alpha * (v - avg)
        out.append(avg)
    return Smoothed(out, avg)


# ----------------------------------------------------------------- ranks of a distributed run
MAX_RANK_LINES = 8  # one line per rank up to this many ranks; beyond, a p0-p100 band and the p50 line
SPREAD = ("p0", "p50", "p100")


def rank_time_column(cols: Mapping[str, Any]) -> str:
    """The time drawn per rank: ``local_time`` (data loading and forward, the part no rank waits for
    another, so a straggler stands out) where the ranks measured it, else the whole ``step_time``."""
    return "local_time" if "local_time" in cols else "step_time"


def rank_labels(ranks: Mapping[int, Any]) -> list[str]:
    """The legend of each per-rank line (``l{i}``/``t{i}`` columns), or [] when the ranks are drawn as a band."""
    return [f"rank {r}" for r in sorted(ranks)] if len(ranks) <= MAX_RANK_LINES else []


def rank_curves(cols: Mapping[str, Any], ranks: Mapping[int, Any], start: int, stop: int) -> dict[str, list[float | None]]:
    """Rows ``start..stop`` of the aggregate history as per-rank curves: ``x`` (the step), then the loss
    ``l{i}`` and the time in ms ``t{i}`` of the i-th rank, or, beyond MAX_RANK_LINES ranks, ``l_p0`` ..
    ``t_p100`` from the aggregate's percentile columns."""
    steps = [int(s) for s in list(cols.get("step", ()))[start:stop]]
    what = rank_time_column(cols)
    out: dict[str, list[float | None]] = {"x": [float(s) for s in steps]}
    if rank_labels(ranks):
        for i, r in enumerate(sorted(ranks)):
            view = ranks[r]
            out[f"l{i}"] = [view.value("loss", s) for s in steps]
            out[f"t{i}"] = [_ms(view.value(what, s)) for s in steps]
        return out
    for key, name in (("l", "loss"), ("t", what)):
        for q in SPREAD:
            column = cols.get(f"{name}_{q}")
            values = list(column[start:stop]) if column is not None else []
            values += [None] * (len(steps) - len(values))
            out[f"{key}_{q}"] = values if key == "l" else [_ms(v) for v in values]
    return out


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else float(seconds) * 1e3
