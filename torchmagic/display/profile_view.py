"""``%profile`` results in the notebook: the live explorer, and (from ``profile_summary``) the static summary.

The explorer (in a kernel) is ipywidgets controls driving bokeh models inside one jupyter_bokeh
``BokehModel``: a sortable ``DataTable`` of the ops (group by op, shape, module or source line;
filter by text), a zoomable timeline (one lane per thread or stream, nested ops stacked) and the
memory curve. BokehJS comes from the front end, never from a CDN.

``html`` and ``text`` are the static summary's: the view formatters read them from this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchmagic.core.profile_result import GROUPS, ProfileResult
from torchmagic.display.profile_summary import COLUMNS, html, lane_rows, memory_points, op_color, text, visible_columns
from torchmagic.display.svg import PALETTE

__all__ = ["ProfileExplorer", "html", "memory_figure", "text", "timeline_figure"]

TABLE_ROWS = 1000  # rows sent to the live table after grouping and filtering


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

        source = ColumnDataSource({c.key: [] for c in COLUMNS})
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
        data = {c.key: [r.get(c.key) for r in rows] for c in cols}
        self.table.columns = [
            self._column_model(
                field=c.key,
                title=c.title + (" (us)" if c.kind == "us" else " (B)" if c.kind == "bytes" else ""),
                formatter=self._formatters[c.kind],
                width=60 if c.kind != "text" else (320 if c.key in ("name", "source", "input_shapes") else 140),
            )
            for c in cols
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
    colors = [color_of.setdefault(n, op_color(n)) for n in tl.names]
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
