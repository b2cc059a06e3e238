"""``%profile`` results as a static summary: escaped HTML + SVG, or text.

The static summary is what survives a saved notebook, nbconvert's HTML and a headless run: the
top ops as an escaped table, an SVG sketch of the timeline and the memory curve. No scripts.
The table columns, lane layout and memory decimation here are shared with the live explorer.
"""

from __future__ import annotations

import zlib
from html import escape
from typing import Any, NamedTuple

import numpy as np

from torchmagic.core.formatting import duration, micros, nbytes
from torchmagic.core.profile_result import ProfileResult
from torchmagic.display.svg import PALETTE

STATIC_ROWS = 15
TENSORBOARD_NOTE = (
    "its Overview page loads Google Charts from the internet; offline, use the op table, timeline and memory views here"
)
MEMORY_POINTS = 800
SVG_TIMELINE_EVENTS = 400
STATUS_COLORS = {"completed": "#2ca02c", "interrupted": "#ff7f0e", "failed": "#d62728", "empty": "#777"}
LIVE_CLASS = "tm-prof-live"  # on the live explorer's widget
TWIN_CLASS = "tm-prof-twin"  # the static table and charts, hidden in a cell whose live explorer rendered
# Table cells: two classes and two types, to outrank JupyterLab's right-aligned
# `:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td` (text left, numbers right).
STYLE = f"""<style>
.jp-Cell-outputArea:has(.{LIVE_CLASS}) .{TWIN_CLASS}{{display:none}}
.tm-prof{{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;color:var(--jp-ui-font-color1,#222)}}
.tm-prof table{{border-collapse:collapse;font-size:11px;margin:4px 0}}
.tm-prof table td:not(.num),.tm-prof table th:not(.num),
.tm-prof table td.num,.tm-prof table th.num{{padding:1px 6px;text-align:left;border-bottom:1px solid #eee;white-space:nowrap}}
.tm-prof table td.num,.tm-prof table th.num{{text-align:right;font-variant-numeric:tabular-nums}}
.tm-prof .tm-kv{{display:inline-block;margin-right:14px}}
.tm-prof .tm-badge{{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-weight:600}}
.tm-prof .tm-note{{color:#777}}
.tm-prof svg{{margin:2px 6px 2px 0}}
.tm-prof svg.tm-wide{{max-width:100%;height:auto}}
.tm-prof .tm-scroll{{overflow-x:auto}}
</style>"""


class Column(NamedTuple):
    """A column of the op tables: the row's key, its header, and how its values read."""

    key: str
    title: str
    kind: str  # "us", "bytes", "int" or "text"


COLUMNS = (
    Column("module", "module", "text"),
    Column("source", "source line", "text"),
    Column("name", "op", "text"),
    Column("calls", "calls", "int"),
    Column("self_cpu_time_us", "self CPU", "us"),
    Column("cpu_time_total_us", "CPU total", "us"),
    Column("self_device_time_us", "self device", "us"),
    Column("device_time_total_us", "device total", "us"),
    Column("input_shapes", "input shapes", "text"),
    Column("self_cpu_memory_bytes", "self CPU mem", "bytes"),
    Column("cpu_memory_bytes", "CPU mem", "bytes"),
    Column("self_device_memory_bytes", "self device mem", "bytes"),
)


def visible_columns(result: ProfileResult, rows: list[dict[str, Any]]) -> list[Column]:
    present = set(rows[0]) if rows else {"name", "calls", "self_cpu_time_us", "cpu_time_total_us"}
    has_device = any(r.get("self_device_time_us") for r in rows)
    cols = []
    for col in COLUMNS:
        if col.key not in present:
            continue
        if col.key in ("self_device_time_us", "device_time_total_us", "self_device_memory_bytes") and not has_device:
            continue
        cols.append(col)
    return cols


def _cell(value: Any, kind: str) -> str:
    if kind == "us":
        return micros(value)
    if kind == "bytes":
        return nbytes(value) if value else "0"
    return str(value)


def op_color(name: str) -> str:
    """A colour per op name, the same in every view and every run."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def header_html(r: ProfileResult) -> str:
    parts = [
        f'<span class="tm-badge" style="background:{STATUS_COLORS.get(r.status, "#777")}">{escape(r.status)}</span>',
        _kv("code ran", duration(r.wall_s) if r.wall_s >= 1 else micros(r.wall_s * 1e6)),
        _kv("ops", f"{r.op_count:,}"),
        _kv("events", f"{r.events:,}"),
        _kv("self CPU", micros(r.self_cpu_time_us)),
    ]
    if r.options.get("steps"):
        parts.append(_kv("steps profiled", f"{r.steps_profiled} of {r.options['steps']} (saw {r.steps_seen})"))
    if r.memory:
        parts.append(_kv("peak allocated", ", ".join(f"{c.device} {nbytes(c.peak)}" for c in r.memory)))
    parts.append(_kv("read in", micros(r.analysis_s * 1e6)))
    lines = [" ".join(parts)]
    if r.error:
        lines.append(f'<div style="color:#d62728">stopped by {escape(r.error)}; showing what was collected</div>')
    files = []
    if r.trace_path:
        files.append(f"trace (Perfetto / chrome://tracing): <code>{escape(r.trace_path)}</code>")
    if r.run_dir:
        files.append(f"TensorBoard run: <code>{escape(r.run_dir)}</code>")
    if r.tensorboard_url:
        url = escape(r.tensorboard_url, quote=True)
        files.append(f'TensorBoard: <a href="{url}" target="_blank">{escape(r.tensorboard_url)}</a> ({escape(TENSORBOARD_NOTE)})')
    if files:
        lines.append('<div class="tm-note">' + " · ".join(files) + "</div>")
    return "".join(f"<div>{line}</div>" for line in lines)


def _kv(key: str, value: str) -> str:
    return f'<span class="tm-kv"><b>{escape(key)}</b> {escape(value)}</span>'


def table_html(result: ProfileResult, by: str = "op", top: int = STATIC_ROWS) -> str:
    rows = result.rows(by)
    cols = visible_columns(result, rows)
    head = "".join(f'<th class="{_align(c)}">{escape(c.title)}</th>' for c in cols)
    body = []
    for row in rows[:top]:
        cells = "".join(f'<td class="{_align(c)}">{escape(_cell(row.get(c.key), c.kind))}</td>' for c in cols)
        body.append(f"<tr>{cells}</tr>")
    more = f'<div class="tm-note">top {min(top, len(rows))} of {len(rows)} rows by self CPU time</div>'
    return f'<div class="tm-scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>{more}'


def _align(col: Column) -> str:
    return "num" if col.kind != "text" else ""


def lane_rows(result: ProfileResult, max_depth: int = 8) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """y of each timeline event (lanes stacked, nested ops one row deeper) and the lane labels."""
    tl = result.timeline
    y = np.zeros(tl.shown, dtype=np.float64)
    labels = []
    base = 0.0
    depth = np.minimum(tl.depth, max_depth)
    for k, lane in enumerate(tl.lanes):
        mask = tl.lane == k
        rows = int(depth[mask].max()) + 1 if mask.any() else 1
        y[mask] = base + depth[mask]
        labels.append((base, lane))
        base += rows + 0.5
    return y, labels


def timeline_svg(result: ProfileResult, width: int = 760, row_h: int = 9) -> str:
    tl = result.timeline
    title = f"timeline: {tl.shown:,} of {tl.total:,} events kept (the longest)"
    if not tl.shown:
        head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="24">'
        return head + f'<text x="4" y="14" font-size="11">{escape(title)}: none</text></svg>'
    y, labels = lane_rows(result, max_depth=5)
    order = np.argsort(-tl.dur_us)[:SVG_TIMELINE_EVENTS]
    pad_l, pad_t = 110, 18
    span = max(tl.span_us, 1e-9)
    height = int(pad_t + (y.max() + 1.5) * row_h + 14)
    pw = width - pad_l - 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'class="tm-chart tm-wide">'
    ]
    out.append(
        f'<text x="4" y="12" font-size="11" font-family="sans-serif" fill="#333">'
        f"{escape(title)}; the {SVG_TIMELINE_EVENTS} longest drawn here</text>"
    )
    for base, lane in labels:
        out.append(f'<text x="4" y="{pad_t + base * row_h + row_h - 1:.1f}" font-size="9" fill="#555">{escape(lane[:18])}</text>')
    labels_svg: list[str] = []
    for i in order.tolist():
        x = pad_l + tl.start_us[i] / span * pw
        w = max(tl.dur_us[i] / span * pw, 0.6)
        name = tl.names[i]
        top = pad_t + y[i] * row_h
        out.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" height="{row_h - 1}" fill="{op_color(name)}">'
            f"<title>{escape(name)} {escape(micros(float(tl.dur_us[i])))}</title></rect>"
        )
        label = _bar_label(name, w)
        if label:
            labels_svg.append(
                f'<text x="{x + 2:.1f}" y="{top + row_h - 2:.1f}" font-size="{row_h - 2}" fill="#fff" '
                f'font-family="sans-serif" pointer-events="none">{escape(label)}</text>'
            )
    out.extend(labels_svg)  # over every bar, so a later bar never covers a label
    out.append(f'<text x="{pad_l}" y="{height - 3}" font-size="9" fill="#555">0</text>')
    out.append(
        f'<text x="{width - 6}" y="{height - 3}" font-size="9" fill="#555" text-anchor="end">{escape(micros(span))}</text>'
    )
    return "".join(out) + "</svg>"


def _bar_label(name: str, width_px: float, char_px: float = 4.6) -> str:
    """The op's name cut to fit a bar ``width_px`` wide, or "" when not even a few letters fit."""
    name = name.removeprefix("aten::")
    fits = int((width_px - 4) / char_px)
    if fits < 4:
        return ""
    return name if len(name) <= fits else name[: fits - 1] + "…"


def memory_points(t: np.ndarray, values: np.ndarray, limit: int = MEMORY_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` points that keep each bucket's minimum and maximum (peaks survive)."""
    n = len(t)
    if n <= limit:
        return t, values
    buckets = np.array_split(np.arange(n), limit // 2)
    idx = sorted(
        {int(b[np.argmin(values[b])]) for b in buckets if len(b)} | {int(b[np.argmax(values[b])]) for b in buckets if len(b)}
    )
    return t[idx], values[idx]


def memory_svg(result: ProfileResult, width: int = 360, height: int = 150) -> str:
    from torchmagic.display.svg import line_chart

    charts = []
    for curve in result.memory:
        t, v = memory_points(curve.t_us, curve.allocated)
        charts.append(
            line_chart(
                f"{curve.device} memory allocated since start (MiB) vs ms; peak {nbytes(curve.peak)}",
                (t / 1e3).tolist(),
                {curve.device: (v / 2**20).tolist()},
                width=width,
                height=height,
            )
        )
    return "".join(charts)


def html(result: ProfileResult) -> str:
    """The static summary: header, top ops, timeline sketch, memory curve."""
    parts = [table_html(result, "op")]
    if result.timeline.shown:
        parts.append(timeline_svg(result))
    if result.memory:
        parts.append(memory_svg(result))
    twin = f'<div class="{TWIN_CLASS}">{"".join(parts)}</div>'
    return f'{STYLE}<div class="tm-prof">{header_html(result)}{twin}</div>'


def text(result: ProfileResult, top: int = STATIC_ROWS) -> str:
    r = result
    lines = [
        f"profile {r.status}: code ran {micros(r.wall_s * 1e6)}, {r.op_count:,} ops, {r.events:,} events, "
        f"self CPU {micros(r.self_cpu_time_us)}, read in {micros(r.analysis_s * 1e6)}"
    ]
    if r.options.get("steps"):
        lines.append(f"steps profiled: {r.steps_profiled} of {r.options['steps']} (saw {r.steps_seen})")
    if r.error:
        lines.append(f"stopped by {r.error}; showing what was collected")
    rows = r.rows("op")
    cols = [c for c in visible_columns(r, rows) if c.key != "input_shapes"]
    widths = [
        max(len(c.title), *(len(_cell(row.get(c.key), c.kind)) for row in rows[:top])) if rows else len(c.title) for c in cols
    ]
    widths[0] = min(widths[0], 48)
    lines.append("  ".join(c.title.ljust(w) if c.kind == "text" else c.title.rjust(w) for c, w in zip(cols, widths)))
    for row in rows[:top]:
        cells = []
        for c, w in zip(cols, widths):
            s = _cell(row.get(c.key), c.kind)
            cells.append(s[:w].ljust(w) if c.kind == "text" else s.rjust(w))
        lines.append("  ".join(cells))
    if len(rows) > top:
        lines.append(f"... {len(rows) - top} more ops (result.table has them all)")
    for c in r.memory:
        lines.append(f"{c.device} memory: peak {nbytes(c.peak)} allocated since start, {len(c.t_us):,} events")
    if r.trace_path:
        lines.append(f"trace: {r.trace_path}")
    if r.run_dir:
        lines.append(f"TensorBoard run: {r.run_dir}")
    if r.tensorboard_url:
        lines.append(f"TensorBoard: {r.tensorboard_url} ({TENSORBOARD_NOTE})")
    return "\n".join(lines)
