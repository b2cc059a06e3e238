"""Small static SVG charts for the frozen dashboard: no JavaScript, survive any export."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import NamedTuple

from torchmagic.core.formatting import number
from torchmagic.display import axes

TITLE_PX = 11  # the room an axis title takes: a line of 9 px text
NOTE_PX, NOTE_INSET, NOTE_GAP = 10, 4, 4  # a constant series' note: its size, from the plot's left, under the line
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class Point(NamedTuple):
    x: float
    y: float


def _finite_points(xs: Sequence[float | None], ys: Sequence[float | None]) -> list[Point]:
    return [
        Point(float(x), float(y))
        for x, y in zip(xs, ys)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]


def decimate(points: list[Point], limit: int = 300) -> list[Point]:
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def line_chart(
    title: str,
    xs: Sequence[float | None],
    series: dict[str, Sequence[float | None]],
    *,
    width: int = 300,
    height: int = 165,
    log_y: bool = False,
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None,
    colors: Sequence[str] | None = None,
    legend: bool | None = None,
    x_title: str = "",
    y_title: str = "",
    markers_up_to: int = 0,
    y_from_zero: bool = False,
    note_constant: bool = False,
) -> str:
    """An SVG line chart of one or more series sharing x; empty series are left out. ``band`` (low
    and high values at each x, linear y only) is shaded behind the first series' colour. ``colors``:
    one per series (default: the palette); ``legend``: name the series (default: when several);
    ``x_title``, ``y_title``: the axes' titles (as the live chart's, :mod:`chart_specs`);
    ``markers_up_to``: a dot at each point of a series with at most that many (a value logged rarely);
    ``y_from_zero``: a linear y axis from 0, the top padded as BokehJS pads it; ``note_constant``: a
    constant series says its value under its line (:func:`constant_note`), as the live chart does."""
    palette = list(colors) if colors else list(PALETTE)
    color_of = {name: palette[i % len(palette)] for i, name in enumerate(series)}
    lines = {}
    for name, ys in series.items():
        pts = _finite_points(xs, ys)
        if log_y:
            pts = [Point(p.x, math.log10(p.y)) for p in pts if p.y > 0]
        if pts:
            lines[name] = decimate(pts)
    if log_y and "log" not in title:
        title += " (log scale)"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="tm-chart">'
    )
    head += f'<text x="4" y="12" font-size="11" font-family="sans-serif" fill="#333">{escape(title)}</text>'
    if not lines:
        return (
            head
            + f'<text x="{width // 2}" y="{height // 2}" font-size="10" fill="#999" text-anchor="middle">no data</text></svg>'
        )
    lo = decimate(_finite_points(xs, band[0])) if band is not None and not log_y else []
    hi = decimate(_finite_points(xs, band[1])) if band is not None and not log_y else []
    all_pts = [p for pts in lines.values() for p in pts] + lo + hi
    x0, x1 = min(p.x for p in all_pts), max(p.x for p in all_pts)
    y0, y1 = min(p.y for p in all_pts), max(p.y for p in all_pts)
    constant = y0 == y1 and not lo
    value = y0
    from_zero = y_from_zero and not log_y
    x0, x1 = axes.padded(x0, x1)  # the live chart's ranges (BokehJS's DataRange1d), ticked inside
    x_ticks = axes.ticks_inside(x0, x1)
    if from_zero:  # from 0 to 5 % above the data, as BokehJS pads a range with a fixed start
        y0, y1 = min(y0, 0.0), max(y1, 0.0)
        y1 = y1 + (y1 - y0) * 0.05 if y1 > y0 else 1.0
        y_ticks = axes.ticks_inside(y0, y1)
        y_labels = axes.tick_labels(y_ticks)
    elif constant:  # a flat line says its value, not a made-up spread around it
        y0, y1 = y0 - 1.0, y0 + 1.0
        y_ticks, y_labels = [value], [_value_label(value, log_y)]
    elif log_y:  # padded as BokehJS pads a log range (5% of its decades each side), ticked inside
        y0, y1 = axes.padded(y0, y1)
        values = axes.log_ticks(10**y0, 10**y1)
        y_ticks = [math.log10(v) for v in values]
        y_labels = [axes.log_label(v) for v in values]
    else:
        y0, y1 = axes.padded(y0, y1)
        y_ticks = axes.ticks_inside(y0, y1)
        y_labels = axes.tick_labels(y_ticks)
    show_legend = legend if legend is not None else len(lines) > 1
    legend_rows = _legend_rows(list(lines), width - 8) if show_legend else []
    pad_l = max(16, 6 + max((axes.text_px(t) for t in y_labels), default=0)) + (TITLE_PX if y_title else 0)
    pad_r, pad_b, pad_t = 10, 16 + (TITLE_PX if x_title else 0), 20 + 11 * len(legend_rows)
    pw, ph = width - pad_l - pad_r, height - pad_b - pad_t

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return pad_t + ph - (y - y0) / (y1 - y0) * ph

    body = [f'<rect x="{pad_l:.1f}" y="{pad_t}" width="{pw:.1f}" height="{ph}" fill="none" stroke="#ddd"/>']
    for t, text in zip(y_ticks, y_labels):
        if text:
            body.append(f'<line x1="{pad_l:.1f}" x2="{pad_l + pw:.1f}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#f0f0f0"/>')
            body.append(
                f'<text x="{pad_l - 3:.1f}" y="{sy(t) + 3:.1f}" font-size="{axes.FONT_PX}" text-anchor="end" '
                f'fill="#666">{text}</text>'
            )
    for t, text in zip(x_ticks, axes.tick_labels(x_ticks)):
        half = axes.text_px(text) / 2
        cx = min(max(sx(t), half + 1), width - half - 1)  # the outer labels stay inside the picture
        body.append(
            f'<text x="{cx:.1f}" y="{pad_t + ph + 12}" font-size="{axes.FONT_PX}" text-anchor="middle" fill="#666">{text}</text>'
        )
    body.append(axis_titles_svg(x_title, y_title, (pad_l, pad_t, pw, ph), height))
    if lo and hi:
        outline = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in [*lo, *reversed(hi)])
        body.append(
            f'<polygon fill="{palette[0]}" fill-opacity="0.25" stroke="none" points="{outline}"><title>p0–p100</title></polygon>'
        )
    for name, pts in lines.items():
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in pts)
        body.append(
            f'<polyline fill="none" stroke="{color_of[name]}" stroke-width="1.2" points="{path}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if len(pts) <= markers_up_to:
            body.extend(f'<circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="2" fill="{color_of[name]}"/>' for p in pts)
    if constant and note_constant:  # under the line's left end, where the live chart's note is
        name = next(iter(lines))
        note = constant_note(name, 10**value if log_y else value)
        body.append(
            f'<text x="{pad_l + NOTE_INSET:.1f}" y="{sy(value) + NOTE_GAP + NOTE_PX - 1:.1f}" font-size="{NOTE_PX}" '
            f'fill="{color_of[name]}">{escape(note)}</text>'
        )
    # the legend sits above the plot, under the title: it never hides the newest points
    for row, entries in enumerate(legend_rows):
        for x, name in entries:
            y = 24 + 11 * row
            body.append(f'<rect x="{x:.1f}" y="{y - 6}" width="8" height="3" fill="{color_of[name]}"/>')
            body.append(f'<text x="{x + 11:.1f}" y="{y}" font-size="9" fill="#444">{escape(name)}</text>')
    return head + "".join(body) + "</svg>"


def axis_titles_svg(x_title: str, y_title: str, plot: tuple[float, float, float, float], height: float) -> str:
    """The x title centred under the tick labels, the y title turned up along the left edge."""
    left, top, pw, ph = plot
    out = ""
    if x_title:
        out += (
            f'<text class="tm-axis-title" x="{left + pw / 2:.1f}" y="{height - 3}" font-size="{axes.FONT_PX}" '
            f'text-anchor="middle" fill="#444">{escape(x_title)}</text>'
        )
    if y_title:
        out += (
            f'<text class="tm-axis-title" transform="translate(9,{top + ph / 2:.1f}) rotate(-90)" '
            f'font-size="{axes.FONT_PX}" text-anchor="middle" fill="#444">{escape(y_title)}</text>'
        )
    return out


def constant_note(name: str, value: float) -> str:
    """What a chart of a constant series says of it, live and frozen: ``lr 0.05 (constant)``."""
    return f"{name} {number(value, 3)} (constant)"


def _value_label(y: float, log_y: bool) -> str:
    return number(10**y if log_y else y, 3)


def _legend_rows(names: list[str], right: float) -> list[list[tuple[float, str]]]:
    """Legend entries (x, name) laid out left to right from x=4, wrapping before ``right``."""
    rows: list[list[tuple[float, str]]] = [[]]
    x = 4.0
    for name in names:
        w = 11 + axes.text_px(name) + 10
        if rows[-1] and x + w > right:
            rows.append([])
            x = 4.0
        rows[-1].append((x, name))
        x += w
    return rows if rows[0] else []
