"""Small static SVG charts for the frozen dashboard: no JavaScript, survive any export."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import NamedTuple

from torchmagic.core.formatting import number

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
    height: int = 150,
    log_y: bool = False,
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None,
    colors: Sequence[str] | None = None,
    legend: bool | None = None,
) -> str:
    """An SVG line chart of one or more series sharing x; empty series are left out. ``band`` (low
    and high values at each x, linear y only) is shaded behind the first series' colour. ``colors``:
    one per series (default: the palette); ``legend``: name the series (default: when several)."""
    palette = list(colors) if colors else list(PALETTE)
    color_of = {name: palette[i % len(palette)] for i, name in enumerate(series)}
    pad_l, pad_b, pad_t = 46, 18, 18
    lines = {}
    for name, ys in series.items():
        pts = _finite_points(xs, ys)
        if log_y:
            pts = [Point(p.x, math.log10(p.y)) for p in pts if p.y > 0]
        if pts:
            lines[name] = decimate(pts)
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="tm-chart">'
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
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + (abs(y0) or 1) * 0.1
    pw, ph = width - pad_l - 6, height - pad_b - pad_t

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return pad_t + ph - (y - y0) / (y1 - y0) * ph

    def label(v: float) -> str:
        return number(10**v if log_y else v, 3)

    body = [
        f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="none" stroke="#ddd"/>',
        f'<text x="{pad_l - 3}" y="{pad_t + 8}" font-size="9" text-anchor="end" fill="#666">{label(y1)}</text>',
        f'<text x="{pad_l - 3}" y="{pad_t + ph}" font-size="9" text-anchor="end" fill="#666">{label(y0)}</text>',
        f'<text x="{pad_l}" y="{height - 4}" font-size="9" fill="#666">{number(x0, 3)}</text>',
        f'<text x="{width - 6}" y="{height - 4}" font-size="9" text-anchor="end" fill="#666">{number(x1, 3)}</text>',
    ]
    if lo and hi:
        outline = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in [*lo, *reversed(hi)])
        body.append(
            f'<polygon fill="{palette[0]}" fill-opacity="0.25" stroke="none" points="{outline}"><title>p0–p100</title></polygon>'
        )
    for i, (name, pts) in enumerate(lines.items()):
        color = color_of[name]
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in pts)
        body.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{path}"><title>{escape(name)}</title></polyline>'
        )
        if legend if legend is not None else len(lines) > 1:
            body.append(
                f'<text x="{width - 8}" y="{pad_t + 10 + 10 * i}" font-size="9" text-anchor="end" '
                f'fill="{color}">{escape(name)}</text>'
            )
    return head + "".join(body) + "</svg>"
