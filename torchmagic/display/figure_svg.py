"""The dashboard's bokeh figures drawn as static SVG from their own declaration, in Python.

Front ends with stock widgets only (VS Code, Colab) cannot be relied on to load BokehJS, so the
stock dashboard shows each figure as the static renderer draws it: the figure's title and axis
titles, its line glyphs (field names, colours, legend labels), its log or from-zero y axis, its
note on a constant series, and its band
(``varea``) as declared in :mod:`torchmagic.display.figures`, with the data its sources hold. A parameter's gradient
histograms (rects) become the chart of :mod:`torchmagic.display.histograms`. Each line is
thinned to ``POINTS`` points so a refresh stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from torchmagic.display import constant_notes, histograms, svg

POINTS = 100  # per line: a chart's plot area is about 250 px wide
WIDTH, HEIGHT = 330, 175


def figures_of(layout: Any) -> list[Any]:
    """The figures of a gridplot, in reading order (row, then column)."""
    children = getattr(layout, "children", [])
    cells = sorted(((row, col, fig) for fig, row, col in children), key=lambda c: (c[0], c[1]))
    return [fig for _, _, fig in cells]


def figure_svg(fig: Any, width: int = WIDTH, height: int = HEIGHT) -> str:
    from bokeh.models import DataRange1d, Line, LogScale, Rect, VArea

    title = fig.title.text if fig.title is not None else ""
    x_title, y_title = _axis_label(fig.xaxis), _axis_label(fig.yaxis)
    labels = _legend_labels(fig)
    xs: Sequence[Any] = []
    series: dict[str, Sequence[Any]] = {}
    colors: list[str] = []
    band = None
    for r in fig.renderers:
        glyph, data = getattr(r, "glyph", None), getattr(getattr(r, "data_source", None), "data", {})
        if isinstance(glyph, Rect):  # a parameter's gradient histograms, drawn as the frozen view draws them
            return histograms.chart_svg(title, data, width, height, x_title=x_title)
        if isinstance(glyph, VArea) and glyph.x in data:
            band = (data.get(glyph.y1, []), data.get(glyph.y2, []))
            continue
        if not isinstance(glyph, Line) or glyph.x not in data or glyph.y not in data:
            continue
        xs = data[glyph.x]
        series[labels.get(r.id, r.name or glyph.y)] = data[glyph.y]  # a line's name: what the frozen view calls it
        colors.append(str(glyph.line_color))
    keep = _thin(len(xs), POINTS)
    return svg.line_chart(
        title,
        [xs[i] for i in keep],
        {name: [ys[i] if i < len(ys) else None for i in keep] for name, ys in series.items()},
        width=width,
        height=height,
        log_y=isinstance(fig.y_scale, LogScale),
        band=None if band is None else ([band[0][i] for i in keep], [band[1][i] for i in keep]),
        colors=colors,
        legend=bool(labels),
        x_title=x_title,
        y_title=y_title,
        y_from_zero=isinstance(fig.y_range, DataRange1d) and fig.y_range.start == 0,
        note_constant=constant_notes.shown(fig),
    )


def _axis_label(axes: Any) -> str:
    """The title of a figure's (first) x or y axis, "" when it has none."""
    label = axes[0].axis_label if len(axes) else None
    return str(label) if label else ""


def _legend_labels(fig: Any) -> dict[str, str]:
    out = {}
    for legend in fig.legend:
        for item in legend.items:
            label = getattr(item.label, "value", None)
            for r in item.renderers:
                if label:
                    out[r.id] = str(label)
    return out


def _thin(n: int, limit: int) -> list[int]:
    """Evenly spaced indices, the last one always kept."""
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def charts_html(layout: Any) -> str:
    """Every figure of the dashboard's layout, as SVG, in rows of three."""
    return "".join(figure_svg(fig) for fig in figures_of(layout))
