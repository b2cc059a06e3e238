"""The dashboard's bokeh figures drawn as static SVG from their own declaration, in Python.

Front ends with stock widgets only (VS Code, Colab) cannot be relied on to load BokehJS, so the
stock dashboard shows each figure as the static renderer draws it: the figure's title, its line
glyphs (field names, colours, legend labels), its log scale and its band (``varea``) as declared
in :mod:`torchmagic.display.figures`, with the data its sources hold. A rect heatmap (gradient
histograms) becomes a small PNG. Each line is thinned to ``POINTS`` points so a refresh stays small.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from torchmagic.display import png, svg

POINTS = 100  # per line: a chart's plot area is about 250 px wide
WIDTH, HEIGHT = 330, 160
HEAT_COLUMNS, HEAT_ROWS = 64, 112


def figures_of(layout: Any) -> list[Any]:
    """The figures of a gridplot, in reading order (row, then column)."""
    children = getattr(layout, "children", [])
    cells = sorted(((row, col, fig) for fig, row, col in children), key=lambda c: (c[0], c[1]))
    return [fig for _, _, fig in cells]


def figure_svg(fig: Any, width: int = WIDTH, height: int = HEIGHT) -> str:
    from bokeh.models import Line, LogScale, Rect, VArea

    title = fig.title.text if fig.title is not None else ""
    labels = _legend_labels(fig)
    xs: Sequence[Any] = []
    series: dict[str, Sequence[Any]] = {}
    colors: list[str] = []
    band = None
    for r in fig.renderers:
        glyph, data = getattr(r, "glyph", None), getattr(getattr(r, "data_source", None), "data", {})
        if isinstance(glyph, Rect):
            return _heatmap_svg(title, data, width, height)
        if isinstance(glyph, VArea) and glyph.x in data:
            band = (data.get(glyph.y1, []), data.get(glyph.y2, []))
            continue
        if not isinstance(glyph, Line) or glyph.x not in data or glyph.y not in data:
            continue
        xs = data[glyph.x]
        series[labels.get(r.id, glyph.y)] = data[glyph.y]
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
    )


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


def _heatmap_svg(title: str, data: dict[str, Sequence[Any]], width: int, height: int) -> str:
    """Rects (x, y, value) binned into a small image, newest on the right, drawn under the title."""
    x = np.asarray(data.get("x", []), dtype=np.float64)
    y = np.asarray(data.get("y", []), dtype=np.float64)
    v = np.asarray([np.nan if a is None else a for a in data.get("v", [])], dtype=np.float64)
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="tm-chart">'
    head += f'<text x="4" y="12" font-size="11" font-family="sans-serif" fill="#333">{escape(title)}</text>'
    if not len(x) or len(x) != len(y) or len(x) != len(v):
        empty = f'<text x="{width // 2}" y="{height // 2}" font-size="10" fill="#999" text-anchor="middle">no data</text>'
        return head + empty + "</svg>"
    steps = np.unique(x)
    col = np.searchsorted(steps, x) * HEAT_COLUMNS // max(len(steps), 1)
    y0, y1 = float(y.min()), float(y.max())
    row = ((y1 - y) / ((y1 - y0) or 1.0) * (HEAT_ROWS - 1)).astype(int)
    grid = np.full((HEAT_ROWS, HEAT_COLUMNS), np.nan)
    grid[row, np.minimum(col, HEAT_COLUMNS - 1)] = v
    used = int(np.minimum(col, HEAT_COLUMNS - 1).max()) + 1
    pixels = png.colormap(grid[:, :used])
    data_uri = base64.b64encode(png.png_bytes(pixels)).decode("ascii")
    pad_l, pad_t = 46, 18
    body = (
        f'<image x="{pad_l}" y="{pad_t}" width="{width - pad_l - 6}" height="{height - pad_t - 18}" '
        f'preserveAspectRatio="none" style="image-rendering:pixelated" href="data:image/png;base64,{data_uri}"/>'
        f'<text x="{pad_l}" y="{height - 4}" font-size="9" fill="#666">step {svg.number(float(steps[0]), 3)}</text>'
        f'<text x="{width - 6}" y="{height - 4}" font-size="9" text-anchor="end" fill="#666">'
        f"{svg.number(float(steps[-1]), 3)}</text>"
    )
    return head + body + "</svg>"


def charts_html(layout: Any) -> str:
    """Every figure of the dashboard's layout, as SVG, in rows of three."""
    return "".join(figure_svg(fig) for fig in figures_of(layout))
