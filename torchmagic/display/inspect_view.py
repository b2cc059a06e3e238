"""``%tensor_inspect`` results as static HTML (escaped text, inline SVG, PNG data URIs) and as text.

No scripts and no downloads: the output survives notebook export and reads the same offline.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from html import escape
from typing import Any

import numpy as np

from torchmagic.core.formatting import nbytes, number
from torchmagic.core.inspect_result import Finding, InspectResult, TensorCard, View

STYLE = """<style>
.tm-insp{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;color:var(--jp-ui-font-color1,#222)}
.tm-insp table{border-collapse:collapse;font-size:11px;margin:4px 0}
.tm-insp td,.tm-insp th{padding:1px 6px;text-align:left;border-bottom:1px solid #eee;white-space:nowrap}
.tm-insp td.num{text-align:right;font-variant-numeric:tabular-nums}
.tm-insp .tm-kv{display:inline-block;margin-right:14px}
.tm-insp .tm-bad{color:#d62728;font-weight:600}
.tm-insp .tm-note{color:#777}
.tm-insp .tm-finding{margin:3px 0;padding:3px 6px;border-left:3px solid #d62728;background:rgba(214,39,40,.06)}
.tm-insp .tm-finding.tm-broadcast{border-color:#ff7f0e;background:rgba(255,127,14,.06)}
.tm-insp .tm-views>div{display:inline-block;vertical-align:top;margin:2px 10px 2px 0}
.tm-insp img{image-rendering:pixelated}
</style>"""


# --------------------------------------------------------------------------------------------
# PNG without PIL: 8-bit grey, RGB or RGBA, one zlib stream


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 HxW, HxWx1, HxWx3 or HxWx4 array as PNG."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    h, w = a.shape[:2]
    color = {2: 0, 3: {3: 2, 4: 6}.get(a.shape[2] if a.ndim == 3 else 0, 2)}[a.ndim]
    raw = b"".join(b"\x00" + a[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def png_img(pixels: np.ndarray, scale: int = 1, title: str = "") -> str:
    h, w = pixels.shape[:2]
    data = base64.b64encode(png_bytes(pixels)).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" width="{w * scale}" height="{h * scale}" '
        f'title="{escape(title)}" alt="{escape(title)}"/>'
    )


def colormap(values: np.ndarray) -> np.ndarray:
    """Blue–white–red around zero when the values change sign, else white to dark blue; NaN/Inf grey."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    out = np.full(v.shape + (3,), 160, dtype=np.uint8)
    if not finite.any():
        return out
    lo, hi = float(v[finite].min()), float(v[finite].max())
    if lo < 0 < hi:
        m = max(-lo, hi)
        t = np.where(finite, v / m, 0.0)
        pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
        r = 255 - neg * 200
        g = 255 - (pos + neg) * 200
        b = 255 - pos * 200
    else:
        t = np.where(finite, (v - lo) / ((hi - lo) or 1.0), 0.0)
        r = 255 - t * 230
        g = 255 - t * 180
        b = 255 - t * 80
    rgb = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    out[finite] = rgb[finite]
    return out


# --------------------------------------------------------------------------------------------
# pieces


def _kv(key: str, value: str, bad: bool = False) -> str:
    cls = ' class="tm-bad"' if bad else ""
    return f'<span class="tm-kv"><b>{escape(key)}</b> <span{cls}>{escape(value)}</span></span>'


def shape_text(shape: Any) -> str:
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        return (
            f"nested ({len(shape)}): "
            + ", ".join("[" + ", ".join(str(d) for d in s) + "]" for s in shape[:6])
            + (", …" if len(shape) > 6 else "")
        )
    return "[" + ", ".join(str(d) for d in shape) + "]"


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
            text = f"{value:,}" + (f" ({value / n:.1%})" if n and value and key != "nnz" else "")
        else:
            text = "–" if value is None else str(value)
        out.append((label, text, bad))
    return out


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
        scale = max(1, min(4, 128 // max(img.shape[:2])))
        return f"<div>{title}{png_img(img, scale, view.title)}{note}</div>"
    if view.kind == "heatmap":
        data = np.asarray(view.data)
        scale = max(1, min(8, 160 // max(data.shape)))
        finite = data[np.isfinite(data)]
        scale_note = f"{number(float(finite.min()))} … {number(float(finite.max()))}" if finite.size else ""
        return (
            f"<div>{title}{png_img(colormap(data), scale, view.title)}<div class='tm-note'>{escape(scale_note)}</div>{note}</div>"
        )
    if view.kind == "channels":
        head = "<tr><th>channel</th><th>min</th><th>max</th><th>mean</th><th>std</th></tr>"
        rows = "".join(
            f"<tr><td>{r['channel']}</td>"
            + "".join(f"<td class='num'>{number(r[k])}</td>" for k in ("min", "max", "mean", "std"))
            + "</tr>"
            for r in view.data[:16]
        )
        more = f"<tr><td colspan=5>… {len(view.data) - 16} more</td></tr>" if len(view.data) > 16 else ""
        return f"<div>{title}<table>{head}{rows}{more}</table>{note}</div>"
    return ""


def finding_html(f: Finding) -> str:
    cls = "tm-finding tm-broadcast" if f.kind == "broadcast" else "tm-finding"
    label = {"shape_error": "shape error", "broadcast": "broadcast", "op_error": "error"}.get(f.kind, f.kind)
    where = f" line {f.line}" if f.line else ""
    return f'<div class="{cls}"><b>{escape(label)}</b>{escape(where)}: {escape(f.message)}</div>'


# --------------------------------------------------------------------------------------------
# whole results


def html(result: InspectResult) -> str:
    body = {"tensor": _tensor_html, "module": _module_html, "cell": _cell_html}[result.kind](result)
    return f'{STYLE}<div class="tm-insp">{body}</div>'


def _tensor_html(r: InspectResult) -> str:
    assert r.card is not None
    parts = [f"<div><b>{escape(r.name)}</b></div>", "<div>" + "".join(_kv(k, v) for k, v in card_items(r.card)) + "</div>"]
    if r.stats:
        parts.append("<div>" + "".join(_kv(k, v, bad) for k, v, bad in stat_items(r.stats)) + "</div>")
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


def _shapes_cell(value: str) -> str:
    return escape(value if len(value) <= 90 else value[:87] + "…")


def _module_html(r: InspectResult) -> str:
    t = r.totals
    head = [
        _kv("module", f"{r.name}: {r.module_type}"),
        _kv("parameters", f"{t.get('params', 0):,}"),
        _kv("trainable", f"{t.get('trainable', 0):,}"),
        _kv("parameter memory", nbytes(t.get("param_bytes", 0))),
        _kv("buffers", f"{t.get('buffers', 0):,} ({nbytes(t.get('buffer_bytes', 0))})"),
        _kv("devices", ", ".join(t.get("devices", [])) or "–"),
    ]
    if r.flops is not None:
        head.append(_kv("FLOPs", number(float(r.flops), 3)))
    if r.output:
        head.append(_kv("output", r.output))
    parts = [f"<div>{''.join(head)}</div>"]
    if r.note:
        parts.append(f'<div class="tm-note">{escape(r.note)}</div>')
    if r.trace_rows:
        rows = []
        for row in r.trace_rows[:300]:
            indent = "&nbsp;&nbsp;" * row["depth"]
            name = row["module"] or "(root)"
            bad = ' class="tm-bad"' if row["output"] == "✗ raised" else ""
            flops = number(float(row["flops"]), 3) if row["flops"] else ""
            rows.append(
                f"<tr><td>{indent}<code>{escape(name)}</code></td><td>{escape(row['type'])}</td>"
                f"<td>{_shapes_cell(row['input'])}</td><td{bad}>{_shapes_cell(row['output'])}</td>"
                f"<td class='num'>{row['params']:,}</td><td class='num'>{flops}</td></tr>"
            )
        more = f"<tr><td colspan=6>… {len(r.trace_rows) - 300} more calls</td></tr>" if len(r.trace_rows) > 300 else ""
        parts.append(
            "<details open><summary>layer-by-layer trace</summary><table><tr><th>module</th><th>type</th>"
            "<th>input</th><th>output</th><th>params</th><th>FLOPs</th></tr>" + "".join(rows) + more + "</table></details>"
        )
    prow = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{p['kind']}</td>"
        f"<td>{escape(shape_text(p['shape']) if p['shape'] is not None else 'uninitialised')}</td>"
        f"<td>{escape(p['dtype'])}</td><td>{escape(p['device'])}</td><td class='num'>{p['count']:,}</td>"
        f"<td class='num'>{nbytes(p['bytes'])}</td><td>{'yes' if p['trainable'] else 'no'}</td></tr>"
        for p in r.parameters[:200]
    )
    parts.append(
        f"<details{' open' if not r.trace_rows else ''}><summary>parameters and buffers "
        f"({len(r.parameters)})</summary><table><tr><th>name</th><th>kind</th><th>shape</th><th>dtype</th>"
        f"<th>device</th><th>count</th><th>bytes</th><th>trainable</th></tr>{prow}</table></details>"
    )
    return "".join(parts)


def _cell_html(r: InspectResult) -> str:
    parts = [f"<div>{_kv('torch ops', str(sum(o.count for o in r.ops)))}{_kv('distinct', str(len(r.ops)))}</div>"]
    parts += [finding_html(f) for f in r.findings]
    rows = []
    last = object()
    for o in r.ops[:400]:
        if o.line != last:
            src = r.source[o.line - 1].strip() if o.line and 0 < o.line <= len(r.source) else ""
            rows.append(
                f"<tr><td colspan=5 style='background:rgba(0,0,0,.03)'><b>line {o.line or '?'}</b> "
                f"<code>{escape(src[:120])}</code></td></tr>"
            )
            last = o.line
        count = f"×{o.count}" if o.count > 1 else ""
        rows.append(
            f"<tr><td><code>{escape(o.module or '')}</code></td><td>{escape(o.op)}</td>"
            f"<td>{_shapes_cell(o.inputs)}</td><td>{_shapes_cell(o.outputs)}</td><td>{count}</td></tr>"
        )
    if len(r.ops) > 400 or r.ops_dropped:
        rows.append(f"<tr><td colspan=5>… {max(len(r.ops) - 400, 0) + r.ops_dropped} more</td></tr>")
    parts.append(
        "<table><tr><th>module</th><th>op</th><th>inputs</th><th>outputs</th><th></th></tr>" + "".join(rows) + "</table>"
    )
    return "".join(parts)


def explanation_html(finding: Finding) -> str:
    """What the notebook shows above the traceback of a failing cell."""
    return f'{STYLE}<div class="tm-insp">{finding_html(finding)}</div>'


# --------------------------------------------------------------------------------------------
# text, for terminals and logs


def text(result: InspectResult) -> str:
    return {"tensor": _tensor_text, "module": _module_text, "cell": _cell_text}[result.kind](result)


def _tensor_text(r: InspectResult) -> str:
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


def _module_text(r: InspectResult) -> str:
    t = r.totals
    lines = [
        f"{r.name}: {r.module_type}  parameters={t.get('params', 0):,} (trainable {t.get('trainable', 0):,}, "
        f"{nbytes(t.get('param_bytes', 0))})  buffers={t.get('buffers', 0):,}"
        + (f"  FLOPs={number(float(r.flops), 3)}" if r.flops is not None else "")
    ]
    if r.note:
        lines.append(f"  ({r.note})")
    if r.trace_rows:
        width = min(40, max(len(row["module"] or "(root)") + 2 * row["depth"] for row in r.trace_rows) + 2)
        for row in r.trace_rows[:200]:
            name = ("  " * row["depth"] + (row["module"] or "(root)"))[:width]
            lines.append(f"  {name:<{width}} {row['type']:<18} {row['input']:<28} -> {row['output']}")
    else:
        for p in r.parameters[:50]:
            lines.append(
                f"  {p['name']:<30} {shape_text(p['shape']) if p['shape'] is not None else 'uninitialised':<18} "
                f"{p['dtype']:<5} {p['count']:>12,}  {'' if p['trainable'] else '(frozen)'}"
            )
    return "\n".join(lines)


def _cell_text(r: InspectResult) -> str:
    lines = [r.summary()]
    lines += [f"  ! {f.message}" for f in r.findings]
    last = object()
    for o in r.ops[:200]:
        if o.line != last:
            src = r.source[o.line - 1].strip() if o.line and 0 < o.line <= len(r.source) else ""
            lines.append(f"line {o.line or '?'}: {src}")
            last = o.line
        where = f"[{o.module}] " if o.module else ""
        lines.append(f"    {where}{o.op}({o.inputs}) -> {o.outputs}" + (f"  ×{o.count}" if o.count > 1 else ""))
    return "\n".join(lines)


class Explanation:
    """A shape error's explanation, displayed above the traceback (HTML in a notebook, text elsewhere)."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding

    def _repr_html_(self) -> str:
        return explanation_html(self.finding)

    def __repr__(self) -> str:
        return self.finding.message
