"""Bounded, decimated copies of growing histories, shaped as bokeh column batches.

A :class:`Decimator` follows a history that only grows. Each refresh it hands out the new rows
averaged into buckets of ``stride`` rows; when the points sent would pass ``limit`` it doubles
the stride and hands out the whole history again (a *replace*). So a run of any length keeps at
most ``limit`` points per curve in the browser, and the cost of a refresh stays bounded.
"""

from __future__ import annotations

import warnings
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

    def restart(self) -> None:
        """The columns it reads were rebuilt (see :func:`halve`): the next take() replaces the curve."""
        self.stride, self.consumed, self.sent = 1, 0, self.limit + 1

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


def halve(columns: dict[str, list[Any]], x: str) -> None:
    """Pairs of points merged into one (x: the later one; values: their mean), in place.

    The display's own copy of its curves is halved whenever it passes a bound, so its memory and
    the work of a replace stay bounded however long the run is; the run's full history is the core's.
    """
    for name, values in columns.items():
        n = len(values) // 2 * 2
        rest = values[n:]  # an odd newest point stays as it is
        if name == x:
            columns[name] = values[1:n:2] + rest
            continue
        arr = as_float32(values[:n]).reshape(-1, 2)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a pair of two gaps stays a gap
            merged = np.nanmean(arr, axis=1)
        columns[name] = merged.tolist() + rest


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
# Curves by rank over steps, by the letter of their columns (``l0``.. or ``l_p0``..): the history
# column each draws, and whether it is smoothed (samples/s of one step is noisy: smoothed like the loss).
RANK_STEP_CURVES = {"l": ("loss", False), "t": ("time", False), "r": ("samples_per_s", True)}
# Curves by rank over time, from each rank's memory samples (bytes; the charts show MiB).
RANK_MEMORY_CURVES = {"m": "rss", "c": "cuda_allocated"}


def rank_time_column(cols: Mapping[str, Any]) -> str:
    """The time drawn per rank: ``local_time`` (data loading and forward, the part no rank waits for
    another, so a straggler stands out) where the ranks measured it, else the whole ``step_time``."""
    return "local_time" if "local_time" in cols else "step_time"


def rank_time_title(cols: Mapping[str, Any]) -> str:
    return ("data + forward" if rank_time_column(cols) == "local_time" else "step") + " time by rank (ms)"


def rank_labels(ranks: Mapping[int, Any]) -> list[str]:
    """The legend of each per-rank line (``l{i}``/``t{i}`` columns), or [] when the ranks are drawn as a band."""
    return [f"rank {r}" for r in sorted(ranks)] if len(ranks) <= MAX_RANK_LINES else []


def rank_column_names(keys: Sequence[str], lines: int) -> list[str]:
    """The columns of the curves ``keys`` (letters of RANK_STEP_CURVES or RANK_MEMORY_CURVES), with a
    line for each of ``lines`` ranks, or a band (0 lines)."""
    return [f"{k}{i}" for k in keys for i in range(lines)] if lines else [f"{k}_{q}" for k in keys for q in SPREAD]


def rank_curves(
    cols: Mapping[str, Any],
    ranks: Mapping[int, Any],
    start: int,
    stop: int,
    smooth: dict[str, float | None] | None = None,
) -> dict[str, list[float | None]]:
    """Rows ``start..stop`` of the aggregate history as per-rank curves: ``x`` (the step), then the loss
    ``l{i}``, the time in ms ``t{i}`` and the smoothed samples/s ``r{i}`` of the i-th rank, or, beyond
    MAX_RANK_LINES ranks, ``l_p0`` .. ``r_p100`` from the aggregate's percentile columns. ``smooth``
    holds where each smoothed curve's average stands, and is advanced: pass the same dict from one
    call to the next (a new one starts from the first row)."""
    smooth = {} if smooth is None else smooth
    steps = [int(s) for s in list(cols.get("step", ()))[start:stop]]
    out: dict[str, list[float | None]] = {"x": [float(s) for s in steps]}
    by_rank = bool(rank_labels(ranks))
    for key, (name, smoothed) in RANK_STEP_CURVES.items():
        name = rank_time_column(cols) if name == "time" else name
        if by_rank:
            curves = {f"{key}{i}": [ranks[r].value(name, s) for s in steps] for i, r in enumerate(sorted(ranks))}
        else:
            curves = {f"{key}_{q}": _rows(cols.get(f"{name}_{q}"), start, stop) for q in SPREAD}
        for column, values in curves.items():
            if key == "t":
                values = [_ms(v) for v in values]
            if smoothed:
                values, smooth[column] = ema(values, start=smooth.get(column))
            out[column] = values
    return out


def rank_memory_keys(ranks: Mapping[int, Any]) -> list[str]:
    """The memory curves by rank to draw: RSS, and CUDA allocated only where a rank uses CUDA."""

    def uses_cuda(view: Any) -> bool:
        history = view.memory_history.get("cuda_allocated", ())
        return view.memory.get("cuda_allocated") is not None or any(v is not None for v in history)

    return ["m", "c"] if any(uses_cuda(v) for v in ranks.values()) else ["m"]


def rank_memory_columns(memory: Mapping[str, Any], ranks: Mapping[int, Any], keys: Sequence[str]) -> dict[str, Sequence[Any]]:
    """The memory samples as per-rank curves in bytes: ``t`` (seconds), then ``m{i}`` (RSS) and
    ``c{i}`` (CUDA allocated) of the i-th rank, or ``m_p0`` .. ``c_p100`` beyond MAX_RANK_LINES
    ranks. The columns are the held series themselves where they are whole (no copy per refresh)."""
    times = memory.get("time") or []
    n = len(times)
    out: dict[str, Sequence[Any]] = {"t": times}
    labels = rank_labels(ranks)
    for key in keys:
        name = RANK_MEMORY_CURVES[key]
        if labels:
            for i, r in enumerate(sorted(ranks)):
                out[f"{key}{i}"] = _whole(ranks[r].memory_history.get(name), n)
        else:
            for q in SPREAD:
                out[f"{key}_{q}"] = _whole(memory.get(f"{name}_{q}"), n)
    return out


def _rows(column: Sequence[Any] | None, start: int, stop: int) -> list[Any]:
    values = list(column[start:stop]) if column is not None else []
    return values + [None] * (stop - start - len(values))


def _whole(column: Sequence[Any] | None, n: int) -> Sequence[Any]:
    if column is not None and len(column) == n:
        return column
    values = list(column or [])[:n]
    return values + [None] * (n - len(values))


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else float(seconds) * 1e3
