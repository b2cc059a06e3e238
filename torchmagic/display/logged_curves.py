"""The live dashboard's charts of the user's logged values (``torchmagic.log``, a framework's eval_loss…).

The same columns as the frozen view's (:func:`torchmagic.display.chart_specs.logged_columns`), a chart
each, added when the column first appears. Logged values are sparse (an accuracy every few hundred
steps): each curve holds only the rows with a value, so its line joins them as the frozen chart's does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from torchmagic.display import chart_specs as specs
from torchmagic.display import figures
from torchmagic.display.constant_notes import ConstantNote
from torchmagic.display.series import Decimator, SeriesBatch, halve

POINTS_KEPT = 8000  # points per curve held for the browser (then halved)


class LoggedCurve:
    """One logged column: its points (step, value) and the rows of the history already read."""

    def __init__(self, name: str, source: Any, markers: Any, note: ConstantNote) -> None:
        self.name, self.source, self.markers, self.note = name, source, markers, note
        self.points: dict[str, list[float | None]] = {"x": [], "y": []}
        self.rows_seen = 0
        self.logged = 0  # rows with a value so far (the points kept for the browser may be fewer)
        self.decimator = Decimator(1000)


class LoggedCurves:
    """The logged-value curves of one dashboard: ``batches()`` each refresh, at most ``points_per_refresh`` new points a curve."""

    def __init__(self, figs: figures.DashboardFigures, points_per_refresh: int) -> None:
        self.figs = figs
        self.points_per_refresh = points_per_refresh
        self.curves: list[LoggedCurve] = []

    def batches(self, columns: Mapping[str, Any], distributed: bool, final: bool) -> list[tuple[SeriesBatch, Any]]:
        """New points of every logged curve (adding the charts of columns new since the last call)."""
        new = [name for name in specs.logged_columns(columns, distributed) if name not in {c.name for c in self.curves}]
        if new:  # all of them in one change of the layout
            sources = figures.add_logged(self.figs, new)
            markers = self.figs.logged_markers[-len(new) :]
            notes = [self.figs.notes[name] for name in new]
            self.curves.extend(LoggedCurve(*curve) for curve in zip(new, sources, markers, notes))
        steps: Sequence[Any] = columns.get("step", ())
        # A value logged right after its step's optimizer.step() joins that row at the next refresh:
        # until the run ends, the newest row is read once the next one exists.
        stop = len(steps) if final else len(steps) - 1
        out = []
        for curve in self.curves:
            if stop > curve.rows_seen:
                values = columns.get(curve.name)
                self._read_rows(curve, steps, values if values is not None else (), stop)
            points: dict[str, Sequence[float | None]] = dict(curve.points)
            batch = curve.decimator.take(points, "x")
            if batch is not None:
                out.append((batch, curve.source))
        return out

    def _read_rows(self, curve: LoggedCurve, steps: Sequence[Any], values: Sequence[Any], stop: int) -> None:
        start, curve.rows_seen = curve.rows_seen, stop
        rows = [(step, value) for step, value in zip(steps[start:stop], values[start:stop]) if value is not None]
        curve.logged += len(rows)
        curve.note.read([value for _, value in rows])  # every value, not only the points kept
        keep = _evenly(len(rows), self.points_per_refresh)
        curve.points["x"].extend(float(rows[i][0]) for i in keep)
        curve.points["y"].extend(float(rows[i][1]) for i in keep)
        if curve.markers.visible and curve.logged > specs.LOGGED_MARKERS_UP_TO:
            # Dense now: the line alone, as the frozen chart draws it. Counted on the rows, not on the
            # points kept: a run with few refreshes keeps fewer points than it logged values.
            curve.markers.visible = False
        if len(curve.points["x"]) > POINTS_KEPT:
            halve(curve.points, "x")
            curve.decimator.restart()


def _evenly(n: int, limit: int) -> list[int]:
    """At most ``limit`` of ``n`` indices, evenly spaced, the last one always kept."""
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))
