"""``%profile`` results: a static summary (escaped HTML + SVG, or text) and a live explorer.

The static summary is what survives a saved notebook, nbconvert's HTML and a headless run: the
top ops as an escaped table, an SVG sketch of the timeline and the memory curve. No scripts.

The explorer (in a kernel) is ipywidgets controls driving bokeh models inside one jupyter_bokeh
``BokehModel``: a sortable ``DataTable`` of the ops (group by op, shape, module or source line;
filter by text), a zoomable timeline (one lane per thread or stream, nested ops stacked) and the
memory curve. BokehJS comes from the front end, never from a CDN.
"""

from __future__ import annotations

import zlib
from html import escape
from typing import Any

import numpy as np

from torchmagic.core.formatting import duration, micros, nbytes
from torchmagic.core.profile_result import GROUPS, ProfileResult
from torchmagic.display.svg import PALETTE

STATIC_ROWS = 15
TABLE_ROWS = 1000  # rows sent to the live table after grouping and filtering
MEMORY_POINTS = 800
SVG_TIMELINE_EVENTS = 400
STATUS_COLORS = {"completed": "#2ca02c", "interrupted": "#ff7f0e", "failed": "#d62728", "empty": "#777"}
STYLE = """<style>
.tm-prof{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;color:var(--jp-ui-font-color1,#222)}
.tm-prof table{border-collapse:collapse;font-size:11px;margin:4px 0}
.tm-prof td,.tm-prof th{padding:1px 6px;text-align:left;border-bottom:1px solid #eee;white-space:nowrap}
.tm-prof td.num,.tm-prof th.num{text-align:right;font-variant-numeric:tabular-nums}
.tm-prof .tm-kv{display:inline-block;margin-right:14px}
.tm-prof .tm-badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-weight:600}
.tm-prof .tm-note{color:#777}
.tm-prof svg{margin:2px 6px 2px 0}
</style>"""

# (column, header, kind) for the tables; kind: "us", "bytes", "int" or "text"
COLUMNS = (
    ("module", "module", "text"),
    ("source", "source line", "text"),
    ("name", "op", "text"),
    ("calls", "calls", "int"),
    ("self_cpu_time_us", "self CPU", "us"),
    ("cpu_time_total_us", "CPU total", "us"),
    ("self_device_time_us", "self device", "us"),
    ("device_time_total_us", "device total", "us"),
    ("input_shapes", "input shapes", "text"),
    ("self_cpu_memory_bytes", "self CPU mem", "bytes"),
    ("cpu_memory_bytes", "CPU mem", "bytes"),
    ("self_device_memory_bytes", "self device mem", "bytes"),
)


def visible_columns(result: ProfileResult, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    present = set(rows[0]) if rows else {"name", "calls", "self_cpu_time_us", "cpu_time_total_us"}
    has_device = any(r.get("self_device_time_us") for r in rows)
    cols = []
    for key, title, kind in COLUMNS:
        if key not in present:
            continue
        if key in ("self_device_time_us", "device_time_total_us", "self_device_memory_bytes") and not has_device:
            continue
        cols.append((key, title, kind))
    return cols


def _cell(value: Any, kind: str) -> str:
    if kind == "us":
        return micros(value)
    if kind == "bytes":
        return nbytes(value) if value else "0"
    return str(value)


def _color(name: str) -> str:
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


# ---------------------------------------------------------------------- static
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
        files.append(f'TensorBoard: <a href="{url}" target="_blank">{escape(r.tensorboard_url)}</a>')
    if files:
        lines.append('<div class="tm-note">' + " · ".join(files) + "</div>")
    return "".join(f"<div>{line}</div>" for line in lines)


def _kv(key: str, value: str) -> str:
    return f'<span class="tm-kv"><b>{escape(key)}</b> {escape(value)}</span>'


def table_html(result: ProfileResult, by: str = "op", top: int = STATIC_ROWS) -> str:
    rows = result.rows(by)
    cols = visible_columns(result, rows)
    head = "".join(f'<th class="{"num" if k != "text" else ""}">{escape(t)}</th>' for _, t, k in cols)
    body = []
    for row in rows[:top]:
        cells = "".join(f'<td class="{"num" if k != "text" else ""}">{escape(_cell(row.get(key), k))}</td>' for key, _, k in cols)
        body.append(f"<tr>{cells}</tr>")
    more = f'<div class="tm-note">top {min(top, len(rows))} of {len(rows)} rows by self CPU time</div>'
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


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
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="tm-chart">']
    out.append(
        f'<text x="4" y="12" font-size="11" font-family="sans-serif" fill="#333">'
        f"{escape(title)}; the {SVG_TIMELINE_EVENTS} longest drawn here</text>"
    )
    for base, lane in labels:
        out.append(f'<text x="4" y="{pad_t + base * row_h + row_h - 1:.1f}" font-size="9" fill="#555">{escape(lane[:18])}</text>')
    for i in order.tolist():
        x = pad_l + tl.start_us[i] / span * pw
        w = max(tl.dur_us[i] / span * pw, 0.6)
        name = tl.names[i]
        out.append(
            f'<rect x="{x:.1f}" y="{pad_t + y[i] * row_h:.1f}" width="{w:.1f}" height="{row_h - 1}" fill="{_color(name)}">'
            f"<title>{escape(name)} {escape(micros(float(tl.dur_us[i])))}</title></rect>"
        )
    out.append(f'<text x="{pad_l}" y="{height - 3}" font-size="9" fill="#555">0</text>')
    out.append(
        f'<text x="{width - 6}" y="{height - 3}" font-size="9" fill="#555" text-anchor="end">{escape(micros(span))}</text>'
    )
    return "".join(out) + "</svg>"


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
    parts = [header_html(result), table_html(result, "op")]
    if result.timeline.shown:
        parts.append(timeline_svg(result))
    if result.memory:
        parts.append(memory_svg(result))
    return f'{STYLE}<div class="tm-prof">{"".join(parts)}</div>'


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
    cols = [c for c in visible_columns(r, rows) if c[0] != "input_shapes"]
    widths = [max(len(t), *(len(_cell(row.get(k), kind)) for row in rows[:top])) if rows else len(t) for k, t, kind in cols]
    widths[0] = min(widths[0], 48)
    lines.append("  ".join(t.ljust(w) if kind == "text" else t.rjust(w) for (k, t, kind), w in zip(cols, widths)))
    for row in rows[:top]:
        cells = []
        for (k, _, kind), w in zip(cols, widths):
            s = _cell(row.get(k), kind)
            cells.append(s[:w].ljust(w) if kind == "text" else s.rjust(w))
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
        lines.append(f"TensorBoard: {r.tensorboard_url}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- live explorer
class ProfileExplorer:
    """Group/filter controls (ipywidgets) over a bokeh table, timeline and memory curve."""

    def __init__(self, result: ProfileResult) -> None:
        import ipywidgets as widgets
        from bokeh.layouts import column
        from bokeh.models import TabPanel, Tabs
        from jupyter_bokeh import BokehModel

        self.result = result
        self.group_by = widgets.Dropdown(options=[g for g in GROUPS if self._can_group(g)], value="op", description="group by")
        self.filter = widgets.Text(value="", placeholder="filter: op, module or line contains…", description="filter")
        self.count = widgets.Label()
        self.table, self.source = self._table()
        panels = [TabPanel(child=self.table, title="ops")]
        self.timeline = timeline_figure(result)
        if self.timeline is not None:
            panels.append(TabPanel(child=self.timeline, title="timeline"))
        self.memory = memory_figure(result)
        if self.memory is not None:
            panels.append(TabPanel(child=self.memory, title="memory"))
        self.layout = column(Tabs(tabs=panels))
        self.plot = BokehModel(self.layout)
        self.group_by.observe(self._refresh, names="value")
        self.filter.observe(self._refresh, names="value")
        self._refresh()
        controls = widgets.HBox([self.group_by, self.filter, self.count])
        self.widget = widgets.VBox([controls, self.plot])

    def _can_group(self, by: str) -> bool:
        if by == "shape":
            return self.result.recorded_shapes
        if by in ("module", "line"):
            return self.result.recorded_stacks
        return True

    def _table(self) -> tuple[Any, Any]:
        from bokeh.models import ColumnDataSource, DataTable, NumberFormatter, StringFormatter, TableColumn

        source = ColumnDataSource({key: [] for key, _, _ in COLUMNS})
        table = DataTable(source=source, columns=[], sortable=True, width=980, height=330, index_position=None)
        self._formatters = {
            "us": NumberFormatter(format="0,0.0"),
            "bytes": NumberFormatter(format="0,0"),
            "int": NumberFormatter(format="0,0"),
            "text": StringFormatter(),
        }
        self._column_model = TableColumn
        return table, source

    def rows(self) -> list[dict[str, Any]]:
        rows = self.result.rows(self.group_by.value)
        needle = self.filter.value.strip().lower()
        if needle:
            rows = [
                r for r in rows if any(needle in str(r.get(k, "")).lower() for k in ("name", "module", "source", "input_shapes"))
            ]
        return rows

    def _refresh(self, change: Any = None) -> None:
        all_rows = self.rows()
        rows = all_rows[:TABLE_ROWS]
        cols = visible_columns(self.result, rows or self.result.rows(self.group_by.value)[:1])
        data = {key: [r.get(key) for r in rows] for key, _, _ in cols}
        self.table.columns = [
            self._column_model(
                field=key,
                title=title + (" (us)" if kind == "us" else " (B)" if kind == "bytes" else ""),
                formatter=self._formatters[kind],
                width=60 if kind != "text" else (320 if key in ("name", "source", "input_shapes") else 140),
            )
            for key, title, kind in cols
        ]
        self.source.data = data
        shown = f"{len(rows):,} of {len(all_rows):,}" if len(all_rows) > len(rows) else f"{len(rows):,}"
        self.count.value = f"{shown} rows · click a header to sort"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def close(self) -> None:
        for w in (self.widget, self.group_by, self.filter, self.count, self.plot):
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort; the comm may be gone
                pass
        document = self.layout.document
        if document is not None:
            document.remove_root(self.layout)


def timeline_figure(result: ProfileResult) -> Any:
    """Quads per event on thread/stream lanes, zoomable; None when nothing was kept."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    tl = result.timeline
    if not tl.shown:
        return None
    y, labels = lane_rows(result)
    color_of: dict[str, str] = {}
    colors = [color_of.setdefault(n, _color(n)) for n in tl.names]
    source = ColumnDataSource(
        {
            "left": (tl.start_us / 1e3).astype(np.float32),
            "right": ((tl.start_us + tl.dur_us) / 1e3).astype(np.float32),
            "bottom": (-y - 0.9).astype(np.float32),
            "top": (-y).astype(np.float32),
            "name": tl.names,
            "dur": tl.dur_us.astype(np.float32),
            "color": colors,
        }
    )
    p = figure(
        title=f"timeline (ms): {tl.shown:,} of {tl.total:,} events kept — the longest",
        width=980,
        height=int(min(600, 90 + 14 * (y.max() + 1.5))),
        tools="xpan,xwheel_zoom,box_zoom,reset",
        active_scroll="xwheel_zoom",
        x_axis_label="ms from start",
    )
    p.toolbar.logo = None
    p.quad(left="left", right="right", bottom="bottom", top="top", fill_color="color", line_color=None, source=source)
    p.add_tools(HoverTool(tooltips=[("op", "@name"), ("duration (us)", "@dur{0,0.0}")]))
    p.yaxis.ticker = [-b - 0.45 for b, _ in labels]
    p.yaxis.major_label_overrides = {-b - 0.45: lane for b, lane in labels}
    p.ygrid.grid_line_color = None
    return p


def memory_figure(result: ProfileResult) -> Any:
    from bokeh.plotting import figure

    if not result.memory:
        return None
    p = figure(
        title="memory allocated since the profile started (MiB)",
        width=980,
        height=280,
        tools="xpan,xwheel_zoom,box_zoom,reset,hover",
        x_axis_label="ms from start",
    )
    p.toolbar.logo = None
    for k, curve in enumerate(result.memory):
        t, v = memory_points(curve.t_us, curve.allocated)
        p.step(
            (t / 1e3).astype(np.float32),
            (v / 2**20).astype(np.float32),
            mode="after",
            color=PALETTE[k % len(PALETTE)],
            legend_label=curve.device,
        )
    p.legend.location = "top_left"
    return p
