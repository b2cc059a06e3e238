"""The live dashboard's curves by rank, for a distributed run: what they hold and what each refresh sends.

Over steps (one source, ``figs.ranks``): loss, time and smoothed samples/s of each rank, or their
p0/p50/p100 across ranks beyond ``series.MAX_RANK_LINES`` ranks. Over time (``figs.rank_memory``):
each rank's RSS, and its CUDA allocated memory where a rank uses CUDA. The step curves follow the
dashboard's own thinning of new rows; their points per refresh shrink as the curves grow in number,
so what they cost a second does not grow with N.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from torchmagic.display import figures, series
from torchmagic.display.series import Decimator, SeriesBatch, as_float32

RANK_BYTES_PER_REFRESH = 2400  # new step points of all the curves by rank, per refresh (float32)
MIN_POINTS = 4  # per curve and refresh, however many ranks
REPLACE_VALUES = 5000  # float32 values a whole curve replace may carry (under 20 KB)


class RankCurves:
    """Adds the plots by rank to ``figs`` and keeps the points they were sent."""

    def __init__(self, figs: figures.DashboardFigures, cols: Mapping[str, Any], ranks: Mapping[int, Any], most: int) -> None:
        keys = series.rank_memory_keys(ranks)
        self.steps, self.memory = figures.add_ranks(figs, series.rank_labels(ranks), series.rank_time_title(cols), keys)
        curves = len(self.steps.data)
        self.limit = max(MIN_POINTS, min(most, RANK_BYTES_PER_REFRESH // (4 * curves)))  # points per curve a refresh
        self._steps_dec = Decimator(min(1000, REPLACE_VALUES // curves))
        self._memory_dec = Decimator(min(1000, REPLACE_VALUES // len(self.memory.data)))
        self._memory_keys = keys
        self._ema: dict[str, float | None] = {}  # where each smoothed curve stands
        self.points: dict[str, list[float]] = {name: [] for name in self.steps.data}

    def append(self, cols: Mapping[str, Any], ranks: Mapping[int, Any], start: int, stop: int, keep: np.ndarray) -> None:
        """Rows ``start..stop`` of the aggregate history; ``keep``: the indices (of those rows) to draw.
        The smoothed curves are averaged over every row, before the thinning."""
        for name, curve in series.rank_curves(cols, ranks, start, stop, self._ema).items():
            self.points[name].extend(as_float32(curve)[keep].tolist())

    def batches(self, memory: Mapping[str, Any], ranks: Mapping[int, Any]) -> list[tuple[SeriesBatch, Any]]:
        """What is new for each source, with the source."""
        out = []
        batch = _take(self._steps_dec, dict(self.points), "x")
        if batch is not None:
            out.append((batch, self.steps))
        if memory.get("time"):
            batch = _take(self._memory_dec, dict(series.rank_memory_columns(memory, ranks, self._memory_keys)), "t")
            if batch is not None:
                for name in batch.columns:
                    if name != "t":
                        batch.columns[name] = batch.columns[name] / np.float32(2**20)  # MiB
                out.append((batch, self.memory))
        return out


def _take(decimator: Decimator, columns: dict[str, Any], x: str) -> SeriesBatch | None:
    # a bucket of a curve without values (a rank that sent none yet) warns "Mean of empty slice";
    # inside a run that warning would become one of the run's alerts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return decimator.take(columns, x)
