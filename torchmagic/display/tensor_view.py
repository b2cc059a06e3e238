"""A tensor's ``%tensor_inspect`` result shown: its card, statistics, histogram and views, as HTML and text.

``kv`` (one ``key value`` of a header line) and ``shape_text`` serve the module and cell views too.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np

from torchmagic.core.formatting import dims, nbytes, number
from torchmagic.core.inspect_result import InspectResult, TensorCard, View
from torchmagic.display.png import colormap, png_img


def kv(key: str, value: str, bad: bool = False) -> str:
    cls = ' class="tm-bad"' if bad else ""
    return f'<span class="tm-kv"><b>{escape(key)}</b> <span{cls}>{escape(value)}</span></span>'


def shape_text(shape: Any) -> str:
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        return f"nested ({len(shape)}): " + ", ".join(dims(s) for s in shape[:6]) + (", …" if len(shape) > 6 else "")
    return dims(shape)


def card_items(c: TensorCard) -> list[tuple[str, str]]:
    items = [("shape", shape_text(c.shape)), ("dtype", c.dtype), ("device", c.device), ("layout", c.layout)]
    if c.kind not in ("dense", "sparse", "nested"):
        items.append(("kind", c.kind))
    if c.strides is not None:
        items.append(("strides", str(c.strides)))
        items.append(("contiguous", "yes" if c.contiguous else "no"))
    for key, value in c.extra.items():
        items.append((key, str(value)))
    size = nbytes(c.nbytes) if c.nbytes is not None else "–"
    if c.storage_bytes is not None and c.nbytes is not None and c.storage_bytes < c.nbytes:
        size += f" (storage {nbytes(c.storage_bytes)}: an expanded view)"
    items += [
        ("elements", f"{c.numel:,}"),
        ("bytes", size),
        ("requires_grad", str(c.requires_grad)),
        ("grad_fn", c.grad_fn or "–"),
        (".grad", "set" if c.has_grad else "–"),
    ]
    return items


STAT_ORDER = ("min", "max", "mean", "std", "norm", "zeros", "nan", "posinf", "neginf")


def stat_items(stats: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for key in STAT_ORDER + tuple(k for k in stats if k not in STAT_ORDER and k != "numel"):
        if key not in stats:
            continue
        value = stats[key]
        bad = key in ("nan", "posinf", "neginf") and bool(value)
        label = {"posinf": "+inf", "neginf": "-inf"}.get(key, key)
        if isinstance(value, float):
            text = number(value)
        elif isinstance(value, int) and key in ("zeros", "nan", "posinf", "neginf", "true", "false", "finite", "nnz"):
            n = stats.get("numel") or 0
            text = f"{value:,}" + (f" ({share(value, n)})" if n and value and key != "nnz" else "")
        else:
            text = "–" if value is None else str(value)
        out.append((label, text, bad))
    return out


def share(count: int, total: int) -> str:
    """``count`` of ``total`` as a percentage that never reads 0.0% for a non-zero count, nor 100.0% short of all."""
    pct = 100 * count / total
    if 0 < pct < 0.1:
        return "<0.1%"
    if 99.9 < pct < 100:
        return ">99.9%"
    return f"{pct:.1f}%"


def thumbnail_scale(h: int, w: int, fit: int = 128, least: int = 64, most: int = 16) -> int:
    """The whole-pixel zoom that shows an ``h`` x ``w`` picture at least ``least`` px on its long side."""
    side = max(h, w, 1)
    return max(1, min(most, max(math.ceil(least / side), fit // side)))


def histogram_svg(counts: np.ndarray, edges: np.ndarray, *, width: int = 300, height: int = 110) -> str:
    pad_l, pad_b, pad_t = 6, 16, 14
    pw, ph = width - 2 * pad_l, height - pad_b - pad_t
    top = max(int(counts.max()), 1)
    n = len(counts)
    bar = pw / n
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        '<text x="4" y="10" font-size="10" fill="#333">histogram (sample)</text>',
    ]
    for i, c in enumerate(counts):
        h = ph * int(c) / top
        tip = f"[{number(float(edges[i]))}, {number(float(edges[i + 1]))}): {int(c)}"
        body.append(
            f'<rect x="{pad_l + i * bar:.1f}" y="{pad_t + ph - h:.1f}" width="{max(bar - 1, 1):.1f}" '
            f'height="{h:.1f}" fill="#1f77b4"><title>{escape(tip)}</title></rect>'
        )
    body.append(f'<text x="{pad_l}" y="{height - 3}" font-size="9" fill="#666">{escape(number(float(edges[0])))}</text>')
    body.append(
        f'<text x="{width - pad_l}" y="{height - 3}" font-size="9" fill="#666" text-anchor="end">'
        f"{escape(number(float(edges[-1])))}</text></svg>"
    )
    return "".join(body)


def view_html(view: View) -> str:
    note = f'<div class="tm-note">{escape(view.note)}</div>' if view.note else ""
    title = f"<div><b>{escape(view.title)}</b></div>"
    if view.kind == "image":
        img = np.asarray(view.data)
        scale = thumbnail_scale(*img.shape[:2])
        return f"<div>{title}{png_img(img, scale, view.title)}{note}</div>"
    if view.kind == "heatmap":
        data = np.asarray(view.data)
        scale = thumbnail_scale(*data.shape, fit=160)
        finite = data[np.isfinite(data)]
        scale_note = f"{number(float(finite.min()))} … {number(float(finite.max()))}" if finite.size else ""
        if finite.size < data.size:
            scale_note += f"{'; ' if scale_note else ''}grey: NaN or ±Inf"
        return (
            f"<div>{title}{png_img(colormap(data), scale, view.title)}<div class='tm-note'>{escape(scale_note)}</div>{note}</div>"
        )
    if view.kind == "channels":
        head = "<tr>" + "".join(f"<th class='num'>{k}</th>" for k in ("channel", "min", "max", "mean", "std")) + "</tr>"
        rows = "".join(
            f"<tr><td class='num'>{r['channel']}</td>"
            + "".join(f"<td class='num'>{number(r[k])}</td>" for k in ("min", "max", "mean", "std"))
            + "</tr>"
            for r in view.data[:16]
        )
        more = f"<tr><td colspan=5>… {len(view.data) - 16} more</td></tr>" if len(view.data) > 16 else ""
        return f"<div>{title}<table>{head}{rows}{more}</table>{note}</div>"
    return ""


def tensor_html(r: InspectResult) -> str:
    assert r.card is not None
    parts = [f"<div><b>{escape(r.name)}</b></div>", "<div>" + "".join(kv(k, v) for k, v in card_items(r.card)) + "</div>"]
    if r.stats:
        parts.append("<div>" + "".join(kv(k, v, bad) for k, v, bad in stat_items(r.stats)) + "</div>")
    if r.note:
        parts.append(f'<div class="tm-note">{escape(r.note)}</div>')
    figures = []
    if r.histogram is not None:
        counts, edges = r.histogram
        figures.append(
            f"<div>{histogram_svg(np.asarray(counts), np.asarray(edges))}"
            f"<div class='tm-note'>{r.sample_size:,} values sampled</div></div>"
        )
    figures += [view_html(v) for v in r.views]
    if figures:
        parts.append(f'<div class="tm-views">{"".join(figures)}</div>')
    return "".join(parts)


def tensor_text(r: InspectResult) -> str:
    assert r.card is not None
    lines = [f"{r.name}: " + "  ".join(f"{k}={v}" for k, v in card_items(r.card))]
    if r.stats:
        lines.append("  " + "  ".join(f"{k}={v}" for k, v, _ in stat_items(r.stats)))
    if r.note:
        lines.append(f"  ({r.note})")
    if r.histogram is not None:
        counts, edges = r.histogram
        lines.append("  " + sparkline(np.asarray(counts)) + f"  [{number(float(edges[0]))} … {number(float(edges[-1]))}]")
    for v in r.views:
        if v.kind == "channels":
            lines.append(
                f"  {v.title}: "
                + "; ".join(f"{row['channel']}: μ={number(row['mean'], 3)} σ={number(row['std'], 3)}" for row in v.data[:8])
                + (" …" if len(v.data) > 8 else "")
            )
    return "\n".join(lines)


def sparkline(counts: np.ndarray) -> str:
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(int(counts.max()), 1) if counts.size else 1
    return "".join(blocks[min(8, math.ceil(8 * int(c) / top))] for c in counts)
