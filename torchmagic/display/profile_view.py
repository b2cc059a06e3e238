"""``%profile`` results in the notebook: the live explorer, and (from ``profile_summary``) the static summary.

The explorer (in a kernel) is ipywidgets controls over two jupyter_bokeh ``BokehModel`` views: a
sortable ``DataTable`` of the ops (group by op, shape, module or source line; filter by text), and
tabs with a zoomable timeline (one lane per thread or stream, nested ops stacked) and the memory
curve. BokehJS comes from the front end, never from a CDN.

The table is rebuilt, not patched, on each regrouping or filter: jupyter_bokeh renders the
document it held when the view was created, and patches sent before that (or while a view is
re-created) are lost, which left the browser with a table of no columns.

``html`` and ``text`` are the static summary's: the view formatters read them from this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchmagic.core.profile_result import GROUPS, ProfileResult
from torchmagic.display.profile_summary import (
    LIVE_CLASS,
    Column,
    html,
    lane_rows,
    memory_points,
    op_color,
    text,
    visible_columns,
)
from torchmagic.display.svg import PALETTE

__all__ = ["ProfileExplorer", "html", "memory_figure", "text", "timeline_figure"]

TABLE_ROWS = 1000  # rows sent to the live table after grouping and filtering
TABLE_MAX_HEIGHT = 360
ROW_PX = 25  # SlickGrid's row height in bokeh's DataTable
LABEL_MIN_FRACTION = 0.04  # timeline bars at least this share of the span are labelled (about 35 px unzoomed)
PLOT_PX = 850  # about the timeline's width in a notebook: labels are cut to their bar's share of it
FILTER_KEYS = ("name", "module", "source", "input_shapes")


class ProfileExplorer:
    """Group/filter controls (ipywidgets) over a bokeh table, timeline and memory curve."""

    def __init__(self, result: ProfileResult, group: str = "op") -> None:
        import ipywidgets as widgets
        from bokeh.models import TabPanel, Tabs
        from jupyter_bokeh import BokehModel

        self.result = result
        groups = [g for g in GROUPS if self._can_group(g)]
        self.group_by = widgets.Dropdown(options=groups, value=group if group in groups else "op", description="group by")
        self.filter = widgets.Text(value="", placeholder="filter: op, module or line contains…", description="filter")
        self.count = widgets.Label()
        self.table, self.source = self._build_table()
        self.table_view = BokehModel(self.table)
        panels = []
        self.timeline = timeline_figure(result)
        if self.timeline is not None:
            panels.append(TabPanel(child=self.timeline, title="timeline"))
        self.memory = memory_figure(result)
        if self.memory is not None:
            panels.append(TabPanel(child=self.memory, title="memory"))
        self.plots = Tabs(tabs=panels, sizing_mode="stretch_width") if panels else None
        self.plots_view = BokehModel(self.plots) if self.plots is not None else None
        self.group_by.observe(self._refresh, names="value")
        self.filter.observe(self._refresh, names="value")
        controls = widgets.HBox([self.group_by, self.filter, self.count], layout=widgets.Layout(flex_flow="row wrap"))
        children = [controls, self.table_view] + ([self.plots_view] if self.plots_view is not None else [])
        self.widget = widgets.VBox(children)
        self.widget.add_class(LIVE_CLASS)  # the static summary's CSS hides its twin table next to this

    def _can_group(self, by: str) -> bool:
        if by == "shape":
            return self.result.recorded_shapes
        if by in ("module", "line"):
            return self.result.recorded_stacks
        return True

    def rows(self) -> list[dict[str, Any]]:
        rows = self.result.rows(self.group_by.value)
        needle = self.filter.value.strip().lower()
        if needle:
            rows = [r for r in rows if any(needle in str(r.get(k, "")).lower() for k in FILTER_KEYS)]
        return rows

    def _build_table(self) -> tuple[Any, Any]:
        """A new DataTable with its columns and rows given at construction, and the row count label."""
        from bokeh.models import ColumnDataSource, DataTable

        all_rows = self.rows()
        rows = all_rows[:TABLE_ROWS]
        cols = visible_columns(self.result, rows or self.result.rows(self.group_by.value)[:1])
        source = ColumnDataSource({c.key: [r.get(c.key) for r in rows] for c in cols})
        table = DataTable(
            source=source,
            columns=[_table_column(c) for c in cols],
            sortable=True,
            index_position=None,
            sizing_mode="stretch_width",
            height=min(TABLE_MAX_HEIGHT, ROW_PX * (len(rows) + 1) + 8),
            name="tm-profile-ops",
        )
        shown = f"{len(rows):,} of {len(all_rows):,}" if len(all_rows) > len(rows) else f"{len(rows):,}"
        self.count.value = f"{shown} rows · click a header to sort"
        return table, source

    def _refresh(self, change: Any = None) -> None:
        old = self.table
        self.table, self.source = self._build_table()
        if old.document is not None:
            old.document.remove_on_change(self.table_view)  # its removal must not travel as a patch
            old.document.remove_root(old)
        self.table_view.update_from_model(self.table)  # one message: the new document

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def close(self) -> None:
        views = [self.table_view] + ([self.plots_view] if self.plots_view is not None else [])
        for w in (self.widget, self.group_by, self.filter, self.count, *views):
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort; the comm may be gone
                pass
        for model in (self.table, self.plots):
            document = model.document if model is not None else None
            if document is not None:
                document.remove_root(model)


def _table_column(c: Column) -> Any:
    from bokeh.models import NumberFormatter, StringFormatter, TableColumn

    unit = " (us)" if c.kind == "us" else " (B)" if c.kind == "bytes" else ""
    if c.kind == "text":
        formatter: Any = StringFormatter(text_align="left")
        width = 260 if c.key in ("name", "source", "input_shapes") else 150
    else:
        formatter = NumberFormatter(format="0,0.0" if c.kind == "us" else "0,0", text_align="right")
        width = 105
    return TableColumn(field=c.key, title=c.title + unit, formatter=formatter, width=width)


def timeline_figure(result: ProfileResult) -> Any:
    """Quads per event on thread/stream lanes, zoomable, the wide ones labelled; None when nothing was kept."""
    from bokeh.models import ColumnDataSource, HoverTool, LabelSet
    from bokeh.plotting import figure

    tl = result.timeline
    if not tl.shown:
        return None
    y, labels = lane_rows(result)
    color_of: dict[str, str] = {}
    colors = [color_of.setdefault(n, op_color(n)) for n in tl.names]
    left, right = (tl.start_us / 1e3).astype(np.float32), ((tl.start_us + tl.dur_us) / 1e3).astype(np.float32)
    source = ColumnDataSource(
        {
            "left": left,
            "right": right,
            "bottom": (-y - 0.9).astype(np.float32),
            "top": (-y).astype(np.float32),
            "name": tl.names,
            "dur": tl.dur_us.astype(np.float32),
            "color": colors,
        }
    )
    p = figure(
        title=f"timeline (ms): {tl.shown:,} of {tl.total:,} events kept — the longest",
        sizing_mode="stretch_width",
        height=int(min(600, 90 + 14 * (y.max() + 1.5))),
        tools="xpan,xwheel_zoom,box_zoom,reset",
        active_scroll="xwheel_zoom",
        x_axis_label="ms from start",
    )
    p.toolbar.logo = None
    p.quad(left="left", right="right", bottom="bottom", top="top", fill_color="color", line_color=None, source=source)
    wide = np.flatnonzero(tl.dur_us >= LABEL_MIN_FRACTION * max(tl.span_us, 1e-9))
    if wide.size:
        label_source = ColumnDataSource(
            {
                "x": left[wide],
                "y": (-y[wide] - 0.45).astype(np.float32),
                "text": [_fit(tl.names[i], tl.dur_us[i] / tl.span_us) for i in wide.tolist()],
            }
        )
        p.add_layout(
            LabelSet(x="x", y="y", text="text", source=label_source, x_offset=2, text_font_size="9px", text_baseline="middle")
        )
    p.add_tools(HoverTool(tooltips=[("op", "@name"), ("duration (us)", "@dur{0,0.0}")]))
    p.yaxis.ticker = [-b - 0.45 for b, _ in labels]
    p.yaxis.major_label_overrides = {-b - 0.45: lane for b, lane in labels}
    p.ygrid.grid_line_color = None
    return p


def _fit(name: str, fraction: float) -> str:
    """The op's name cut to the letters its bar holds at the first zoom (about 5.5 px a letter)."""
    name = name.removeprefix("aten::")
    fits = max(3, int(fraction * PLOT_PX / 5.5))
    return name if len(name) <= fits else name[: fits - 1] + "…"


def memory_figure(result: ProfileResult) -> Any:
    from bokeh.plotting import figure

    if not result.memory:
        return None
    p = figure(
        title="memory allocated since the profile started (MiB)",
        sizing_mode="stretch_width",
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
