"""The live dashboard from stock ipywidgets only, for front ends without the lab extension.

VS Code, Colab and other front ends render the standard ``@jupyter-widgets/controls`` models but
may load BokehJS from a CDN or not at all, so this view sends no ``BokehModel``: the sections are
HTML widgets, the progress a ``FloatProgress``, and the plots one HTML widget holding the figures
drawn as SVG (:mod:`torchmagic.display.figure_svg`) from the same sources the lab view streams to.
Each refresh changes at most the widgets whose content changed, one message each.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets
import numpy as np

from torchmagic.display import figure_svg, protocol

CHARTS_CSS = "<style>.tm-stock-charts svg{margin:2px 6px 2px 0}</style>"


class StockView:
    """The widgets of the stock dashboard and how a refresh reaches them."""

    def __init__(self, figs: Any) -> None:
        self.figs = figs
        self.html = {name: ipywidgets.HTML() for name in protocol.SECTIONS}
        self.bar = ipywidgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout={"width": "60%"})
        self.bar_label = ipywidgets.Label()
        self.charts = ipywidgets.HTML()
        self.charts.add_class("tm-stock-charts")
        row = ipywidgets.HBox([self.bar, self.bar_label])
        h = self.html
        self.widget = ipywidgets.VBox([h["header"], row, h["alerts"], self.charts, h["layers"], h["footer"]])
        self.children: list[ipywidgets.Widget] = [self.widget, row, self.bar, self.bar_label, self.charts, *h.values()]

    def apply(self, sections: dict[str, str], progress: dict[str, Any], updates: list[Any]) -> None:
        """Sections, progress and new points (``SourceUpdate``\\ s); the charts are redrawn when points came."""
        for name, html in sections.items():
            self.html[name].value = html
        fraction = progress["fraction"]
        self.bar.bar_style = "" if fraction is not None else "info"
        self.bar.value = fraction if fraction is not None else 1.0
        self.bar_label.value = progress["label"]
        for update in updates:
            data = {name: _finite_or_none(arr) for name, arr in update.columns.items()}
            if update.kind == "stream":
                update.source.stream(data, update.rollover)  # in Python only: no document, nothing sent
            else:
                update.source.data = data
        if updates or not self.charts.value:
            self.charts.value = CHARTS_CSS + figure_svg.charts_html(self.figs.layout)

    def close(self) -> None:
        for w in self.children:
            try:
                w.close()
            except Exception:  # noqa: BLE001 - closing is best effort; the comm may be gone
                pass


def _finite_or_none(arr: Any) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(arr, dtype=np.float64).tolist()]
