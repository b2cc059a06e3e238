"""Gradient histograms as small multiples: which parameters to show, their colours, their SVG.

Each chart is one parameter: steps across, log10|g| up, each cell coloured by the share of the
sampled gradient values in that half-decade bin (empty bins left blank). The live dashboard
(:mod:`torchmagic.display.figures`) and the frozen snapshot draw the same charts with the same
colour scale (:data:`PALETTE` over 0..:data:`SHARE_HIGH`, bokeh's ``LinearColorMapper`` buckets).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from html import escape
from typing import Any

import numpy as np

from torchmagic.core import devicestats
from torchmagic.display import axes, png, svg
from torchmagic.display.chart_specs import STEP_AXIS

MAX_SHOWN = 8  # charts at most: more would push the rest of the dashboard out of sight
# Light to dark (ColorBrewer YlGnBu without its near-white end), so sparse bins fade into the page.
PALETTE = ("#edf8b1", "#c7e9b4", "#7fcdbb", "#41b6c4", "#1d91c0", "#225ea8", "#253494", "#081d58")
SHARE_HIGH = 0.4  # the darkest colour: 40% of the values or more in one bin
SCALE_TICKS = {0.0: "0%", 0.2: "20%", 0.4: "≥40%"}
Y_LABEL = "|grad| (log)"
WIDTH, HEIGHT = 300, 165
BIN_HEIGHT = (devicestats.HIST_LOG10_RANGE[1] - devicestats.HIST_LOG10_RANGE[0]) / devicestats.HIST_BINS


@dataclass(frozen=True)
class Selection:
    """The parameters to draw (``indices`` into ``available``) and what to tell the user about the rest."""

    indices: list[int]
    available: list[str]
    more: int  # matching parameters left out beyond MAX_SHOWN
    unmatched: tuple[str, ...]  # patterns that matched no parameter

    @property
    def names(self) -> list[str]:
        return [self.available[i] for i in self.indices]


def matches(name: str, pattern: str) -> bool:
    """A glob on a parameter's name; a module's name (``fc``, ``encoder.*``) stands for its parameters."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def select(names: Sequence[str], patterns: Sequence[str] = ()) -> Selection:
    """The parameters matching any of ``patterns`` (all with none), in model order, at most MAX_SHOWN."""
    names = list(names)
    chosen = [i for i, n in enumerate(names) if not patterns or any(matches(n, p) for p in patterns)]
    unmatched = tuple(p for p in patterns if not any(matches(n, p) for n in names))
    return Selection(chosen[:MAX_SHOWN], names, max(0, len(chosen) - MAX_SHOWN), unmatched)


def note(selection: Selection) -> str:
    """One line about patterns that matched nothing and parameters left out; "" when there is nothing to say."""
    parts = []
    if selection.unmatched:
        shown = ", ".join(selection.available[:12]) + (" …" if len(selection.available) > 12 else "")
        patterns = ", ".join(repr(p) for p in selection.unmatched)
        parts.append(f"no parameter matches {patterns}; the parameters are: {shown}")
    if selection.more:
        parts.append(f"+{selection.more} more not shown (choose with patterns, e.g. 'encoder.*,fc')")
    return "gradient histograms: " + "; ".join(parts) if parts else ""


def note_html(selection: Selection) -> str:
    text = note(selection)
    cls = "tm-alert tm-warning" if selection.unmatched else "tm-note"
    return f'<div class="{cls}">{escape(text)}</div>' if text else ""


def shares(counts: Sequence[float]) -> np.ndarray:
    """Counts of one histogram as shares of its values (all zero when it counted nothing)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else np.zeros_like(c)


def colour_index(share: np.ndarray) -> np.ndarray:
    """The PALETTE entry of each share, as bokeh's LinearColorMapper(low=0, high=SHARE_HIGH) buckets it."""
    n = len(PALETTE)
    return np.clip(np.floor(np.asarray(share) / SHARE_HIGH * n), 0, n - 1).astype(np.int64)


def decade_overrides(lo: float, hi: float) -> dict[float, str]:
    """Tick labels of a log10 axis at every whole decade of lo..hi: the real values."""
    return {float(d): axes.decade_label(d) for d in range(math.floor(lo), math.ceil(hi) + 1)}


# ------------------------------------------------------------------ the frozen (and stock) charts
def recorded_cells(h: dict[str, Any], index: int) -> dict[str, np.ndarray]:
    """One parameter's recorded histograms as cells: ``x`` (the middle of the steps a snapshot stands
    for: since the one before), ``w`` (how many steps), ``y`` (the bin's centre, log10|g|), ``h``
    (the bin's height), ``v`` (the share)."""
    edges = np.asarray(h["edges"], dtype=np.float64)
    centres, height = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    cols: dict[str, list[float]] = {"x": [], "w": [], "y": [], "v": []}
    last = 0
    for step, counts in zip(h["steps"], h["counts"]):
        share = shares(counts[index])
        width = step - last if last else max(1, step)
        for b in np.flatnonzero(share > 0):
            cols["x"].append(step - width / 2)
            cols["w"].append(width)
            cols["y"].append(float(centres[b]))
            cols["v"].append(float(share[b]))
        last = step
    out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    out["h"] = np.full(len(out["x"]), height)
    return out


def chart_svg(title: str, cells: dict[str, Any], width: int = WIDTH, height: int = HEIGHT, x_title: str = STEP_AXIS) -> str:
    """One parameter's histograms over steps, with its axes (titled as the live chart's) and colour scale, as SVG."""
    x, w, y, v = (np.asarray(cells.get(k, []), dtype=np.float64) for k in ("x", "w", "y", "v"))
    bin_h = float(np.asarray(cells["h"])[0]) if len(cells.get("h", [])) else BIN_HEIGHT
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="tm-chart">'
    )
    head += f'<text x="4" y="12" font-size="11" font-family="sans-serif" fill="#333">{escape(title)}</text>'
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(v) & (v > 0)
    if not keep.any():
        empty = f'<text x="{width // 2}" y="{height // 2}" font-size="10" fill="#999" text-anchor="middle">no data</text>'
        return head + empty + "</svg>"
    x, w, y, v = x[keep], w[keep], y[keep], v[keep]
    x0, x1 = axes.padded(float((x - w / 2).min()), float((x + w / 2).max()))  # as the live chart's range
    x_ticks = axes.ticks_inside(x0, x1)
    ylo, yhi = float(y.min()) - bin_h / 2, float(y.max()) + bin_h / 2
    y_ticks = [t for t in range(math.ceil(ylo), math.floor(yhi) + 1)]
    every = next(e for e in (1, 2, 3, 5, 10) if len(y_ticks[::e]) <= 6)
    y_ticks = y_ticks[::every]
    y_labels = [axes.decade_label(t) for t in y_ticks]
    pad_l = 7 + svg.TITLE_PX + max([axes.text_px(t) for t in y_labels] or [0])
    pad_r, pad_t, pad_b = 44, 18, 16 + (svg.TITLE_PX if x_title else 0)  # the colour scale on the right
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(t: float) -> float:
        return pad_l + (t - x0) / (x1 - x0) * pw

    def sy(t: float) -> float:
        return pad_t + ph - (t - ylo) / (yhi - ylo) * ph

    body = [_heat_image(x, w, y, v, bin_h, (x0, x1), (ylo, yhi), (pad_l, pad_t, pw, ph))]
    body.append(f'<rect x="{pad_l:.1f}" y="{pad_t}" width="{pw:.1f}" height="{ph}" fill="none" stroke="#ddd"/>')
    for t, text in zip(y_ticks, y_labels):
        body.append(
            f'<text x="{pad_l - 3:.1f}" y="{sy(t) + 3:.1f}" font-size="9" text-anchor="end" fill="#666">{escape(text)}</text>'
        )
    body.append(svg.axis_titles_svg(x_title, Y_LABEL, (pad_l, pad_t, pw, ph), height))
    for t, text in zip(x_ticks, axes.tick_labels(x_ticks)):
        half = axes.text_px(text) / 2
        cx = min(max(sx(t), half + 1), pad_l + pw + pad_r - half - 1)
        body.append(f'<text x="{cx:.1f}" y="{pad_t + ph + 12}" font-size="9" text-anchor="middle" fill="#666">{text}</text>')
    body.append(_scale_svg(pad_l + pw + 8, pad_t, ph))
    return head + "".join(body) + "</svg>"


def _heat_image(
    x: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    v: np.ndarray,
    bin_h: float,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    box: tuple[float, float, float, float],
) -> str:
    """The cells as one small RGBA PNG (a pixel column per screen pixel, a row per bin), blank where empty."""
    pad_l, pad_t, pw, ph = box
    columns, rows = max(1, int(pw)), max(1, round((y_range[1] - y_range[0]) / bin_h))
    rgba = np.zeros((rows, columns, 4), dtype=np.uint8)
    colours = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.uint8)
    centres = x_range[0] + (np.arange(columns) + 0.5) / columns * (x_range[1] - x_range[0])
    row_of = np.clip(((y_range[1] - y) / bin_h).astype(np.int64), 0, rows - 1)
    for cell in np.argsort(-w, kind="stable"):  # narrow (later, denser) snapshots drawn over wide ones
        inside = (centres > x[cell] - w[cell] / 2) & (centres <= x[cell] + w[cell] / 2)
        rgba[row_of[cell], inside, :3] = colours[colour_index(v[cell])]
        rgba[row_of[cell], inside, 3] = 255
    uri = base64.b64encode(png.png_bytes(rgba)).decode("ascii")
    return (
        f'<image x="{pad_l:.1f}" y="{pad_t}" width="{pw:.1f}" height="{ph}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="data:image/png;base64,{uri}"/>'
    )


def _scale_svg(x: float, top: float, height: float) -> str:
    """The colour scale: the palette bottom (0%) to top (SHARE_HIGH and more), labelled."""
    n = len(PALETTE)
    cell = height / n
    parts = [
        f'<rect x="{x:.1f}" y="{top + height - (i + 1) * cell:.1f}" width="8" height="{cell + 0.5:.1f}" fill="{c}"/>'
        for i, c in enumerate(PALETTE)
    ]
    for share, text in SCALE_TICKS.items():
        ty = top + height - share / SHARE_HIGH * height
        parts.append(f'<text x="{x + 11:.1f}" y="{ty + 3:.1f}" font-size="8" fill="#666">{escape(text)}</text>')
    parts.append(f"<title>share of the sampled gradient values in each bin (0 to {SHARE_HIGH:.0%} and more)</title>")
    return "<g>" + "".join(parts) + "</g>"


def section_html(h: dict[str, Any], patterns: Sequence[str] = ()) -> str:
    """The frozen snapshot's histograms: a heading, the note, one chart per chosen parameter."""
    if not h or not h.get("steps"):
        return ""
    selection = select(h["names"], patterns)
    charts = "".join(chart_svg(h["names"][i], recorded_cells(h, i)) for i in selection.indices)
    return (
        "<div class='tm-hists'><div><b>gradient histograms</b> · share of sampled values by |grad| "
        f"(log scale), over steps</div>{note_html(selection)}<div class='tm-charts'>{charts}</div></div>"
    )
