"""The live dashboard's gradient histograms: the parameters chosen, their plots and new cells.

The parameters' names arrive with the first recorded histogram, so the plots (one per chosen
parameter, :func:`figures.add_histograms`) join the dashboard then. Each later snapshot streams its
non-empty bins as cells; a plot keeps the last ``ROLLOVER_SNAPSHOTS`` snapshots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torchmagic.core.result import RunResult
from torchmagic.display import figures, histograms
from torchmagic.display.series import Columns

ROLLOVER_SNAPSHOTS = 64


class HistogramCurves:
    def __init__(self, figs: figures.DashboardFigures, patterns: Sequence[str] = ()) -> None:
        self.figs = figs
        self.patterns = tuple(patterns)  # (): the first parameters
        self.selection: histograms.Selection | None = None
        self._last_step = 0

    def note_html(self) -> str:
        """What the user should know about the choice (a pattern matching nothing, parameters left out)."""
        return histograms.note_html(self.selection) if self.selection is not None else ""

    def updates(self, r: RunResult) -> list[tuple[Any, Columns, int]]:
        """(source, columns, rollover) for each plot, when a snapshot came since the last call."""
        h = r.histograms
        if not h or not h["steps"] or h["steps"][-1] <= self._last_step:
            return []
        if self.selection is None:
            self.selection = histograms.select(h["names"], self.patterns)
            figures.add_histograms(self.figs, self.selection.names)
        step, counts = h["steps"][-1], h["counts"][-1]
        width = step - self._last_step if self._last_step else max(1, step)
        self._last_step = step
        edges = np.asarray(h["edges"], dtype=np.float32)
        centres = (edges[:-1] + edges[1:]) / 2
        out = []
        for source, index in zip(self.figs.hists, self.selection.indices):
            share = histograms.shares(counts[index]).astype(np.float32)
            filled = np.flatnonzero(share > 0)
            columns = {
                "x": np.full(len(filled), step - width / 2, dtype=np.float32),
                "w": np.full(len(filled), width, dtype=np.float32),
                "y": centres[filled],
                "v": share[filled],
            }
            out.append((source, columns, ROLLOVER_SNAPSHOTS * len(share)))
        return out
