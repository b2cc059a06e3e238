"""The dashboard's bokeh plots and the data sources they draw from."""

from __future__ import annotations

from dataclasses import dataclass, field

from bokeh.models import ColumnDataSource, DataRange1d, GridBox, HoverTool, NoOverlap
from bokeh.plotting import figure

from torchmagic.display import chart_specs as specs
from torchmagic.display import constant_notes, log_axis
from torchmagic.display.constant_notes import ConstantNote
from torchmagic.display.figure_parts import histogram_figure, legend_above
from torchmagic.display.series import rank_column_names
from torchmagic.display.svg import PALETTE

TRACKED_LAYERS = specs.TRACKED_LAYERS
WIDTH, HEIGHT = 330, 185
MIN_WIDTH = 300  # a chart narrower than this cannot show its title, ticks and toolbar side by side
# The grid reflows: as many columns of at least MIN_WIDTH as the output area holds, each stretched to an
# equal share, the charts placed in reading order. Inline styles outrank the row/column bokeh assigns
# each chart (and the fixed column count of the grid), which are rules of the charts' stylesheets.
GRID_STYLES = {"grid-template-columns": f"repeat(auto-fill, minmax({MIN_WIDTH}px, 1fr))", "grid-template-rows": "none"}
CHART_STYLES = {"grid-area": "auto"}


@dataclass
class DashboardFigures:
    layout: object
    steps: ColumnDataSource  # x, loss, loss_smooth, lr, rate
    memory: ColumnDataSource  # t, rss, cuda_allocated, cuda_reserved (MiB)
    layers: ColumnDataSource  # scheduled steps: x, gn (global grad norm), g0..g7 (by layer), a0..a7 (activation std)
    ranks: ColumnDataSource | None = None  # distributed runs: x, l0.., t0.., r0.. (by rank) or l_p0.. .. r_p100 (a band)
    rank_memory: ColumnDataSource | None = None  # distributed runs: t, m0.. (RSS), c0.. (CUDA allocated) or m_p0.. (MiB)
    hists: list[ColumnDataSource] = field(default_factory=list)  # one per parameter shown: x, w, y, v (see add_histograms)
    logged: list[ColumnDataSource] = field(default_factory=list)  # one per logged value charted: x (step), y
    logged_markers: list[object] = field(default_factory=list)  # their dots (renderers), hidden once dense
    notes: dict[str, ConstantNote] = field(default_factory=dict)  # by the series' name: "lr", a logged value's


def _figure(title: str, x_label: str | None = None, y_label: str | None = None, **kw: object) -> figure:
    x_title, y_title = specs.axis_titles(title, x_label)
    y_title = y_title if y_label is None else y_label
    p = figure(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        min_width=MIN_WIDTH,
        sizing_mode="stretch_width",
        styles=CHART_STYLES,
        tools="pan,wheel_zoom,box_zoom,reset,hover",
        toolbar_location="right",
        x_axis_label=x_title,
        y_axis_label=y_title or None,
        **kw,
    )
    p.title.text_font_size = "11px"
    p.toolbar.logo = None
    p.xaxis.axis_label_text_font_size = p.yaxis.axis_label_text_font_size = "10px"
    p.xaxis.ticker.desired_num_ticks = p.yaxis.ticker.desired_num_ticks = 5
    for axis in (*p.xaxis, *p.yaxis):  # labels that would overlap (a log axis over few decades) are left out
        axis.major_label_policy = NoOverlap()
    # As in TensorBoard: anywhere above a step, each curve's value there.
    hover = p.select_one(HoverTool)
    hover.mode = "vline"
    hover.tooltips = [("step", "$snap_x{0,0}"), ("value", "$snap_y{%.4g}")]
    hover.formatters = {"$snap_y": "printf"}
    return p


def build(histograms: bool = False) -> DashboardFigures:
    """The dashboard's plots (:data:`chart_specs.STEP_CHARTS`); the gradient histograms
    (``histograms``) join when their parameters are known."""
    steps = ColumnDataSource({k: [] for k in ("x", "loss", "loss_smooth", "lr", "rate")}, name="tm-steps")
    mem = ColumnDataSource({k: [] for k in ("t", "rss", "cuda_allocated", "cuda_reserved")}, name="tm-memory")
    layer_cols = ["x", "gn"] + [f"g{i}" for i in range(TRACKED_LAYERS)] + [f"a{i}" for i in range(TRACKED_LAYERS)]
    layers = ColumnDataSource({k: [] for k in layer_cols}, name="tm-layers")
    sources = {"steps": steps, "grads": layers, "acts": layers, "memory": mem}
    notes: dict[str, ConstantNote] = {}
    charts = [chart_figure(spec, sources[spec.source], notes) for spec in specs.STEP_CHARTS]
    layout = GridBox(
        children=[(fig, i // 3, i % 3) for i, fig in enumerate(charts)],
        sizing_mode="stretch_width",
        spacing=4,
        styles=GRID_STYLES,
    )
    return DashboardFigures(layout, steps, mem, layers, notes=notes)


def chart_figure(spec: specs.Chart, source: ColumnDataSource, notes: dict[str, ConstantNote] | None = None) -> figure:
    """The live plot of ``spec``: its lines (those ``when_present`` join later, see :func:`show_cuda_memory`),
    and the note on its first line while that is constant, added to ``notes`` under the line's name."""
    kw: dict[str, object] = {"y_axis_type": "log"} if spec.log_y else {}
    if spec.y_from_zero:  # bokeh pads 5 % above the data; the frozen twin draws the same
        kw["y_range"] = DataRange1d(start=0)
    fig = _figure(spec.title, spec.x_title, spec.y_title, **kw)
    if spec.log_y:
        log_axis.apply(fig)
    for line in spec.lines:
        if not line.when_present:
            _line(fig, spec, line, source)
    if spec.layers is not None:
        for i in range(TRACKED_LAYERS):
            fig.line(spec.x, f"{spec.layers}{i}", source=source, color=spec.layer_color(i), alpha=0.8)
    if spec.legend:
        legend_above(fig)
    if spec.note_constant and notes is not None:
        first = spec.lines[0]
        notes[first.label] = ConstantNote(constant_notes.add_label(fig, first.color), first.label)
    return fig


def _line(fig: figure, spec: specs.Chart, line: specs.Line, source: ColumnDataSource) -> None:
    style: dict[str, object] = {"line_dash": line.dash} if line.dash else {}
    if spec.legend:
        style["legend_label"] = line.label
    # named as the frozen view names the series: the stock view's SVG reads the name
    fig.line(spec.x, line.column, source=source, color=line.color, line_width=line.width, name=line.label, **style)


def _next_row(figs: DashboardFigures) -> int:
    """The grid row after the last one used: plots added during the run go below the others."""
    return 1 + max((row for _, row, _ in figs.layout.children), default=-1)  # type: ignore[attr-defined]


def _drawing(figs: DashboardFigures, field_name: str) -> figure | None:
    """The plot with a line of the column ``field_name``."""
    for fig, _, _ in figs.layout.children:  # type: ignore[attr-defined]
        if any(getattr(getattr(r, "glyph", None), "y", None) == field_name for r in fig.renderers):
            return fig
    return None


def show_cuda_memory(figs: DashboardFigures) -> None:
    """The CUDA curves of the memory plot, added once the run uses CUDA (a CPU run shows none)."""
    memory = _drawing(figs, "rss")
    if memory is None or len(memory.renderers) > 1:
        return
    for line in specs.MEMORY.lines:
        if line.when_present:
            _line(memory, specs.MEMORY, line, figs.memory)


def add_histograms(figs: DashboardFigures, names: list[str]) -> list[ColumnDataSource]:
    """A histogram plot per parameter in ``names`` (see :mod:`torchmagic.display.histograms`), in
    rows of three below the others, sharing the step axis; their sources are ``figs.hists``."""
    first = _next_row(figs)
    charts = []
    for i, name in enumerate(names):
        source = ColumnDataSource({k: [] for k in ("x", "w", "y", "v")}, name=f"tm-hist-{i}")
        kw = {"x_range": charts[0].x_range} if charts else {}
        chart = histogram_figure(_figure(name, **kw), source)
        chart.select_one(HoverTool).mode = "mouse"  # the cell under the pointer, not a whole column of bins
        charts.append(chart)
        figs.hists.append(source)
    placed = [(fig, first + i // 3, i % 3) for i, fig in enumerate(charts)]
    figs.layout.children = [*figs.layout.children, *placed]  # type: ignore[attr-defined]
    return figs.hists


def add_logged(figs: DashboardFigures, names: list[str]) -> list[ColumnDataSource]:
    """A chart per logged value in ``names``, titled by its name, below the others: a line through the
    logged points and a dot at each (a value logged once, or every few hundred steps, still shows) while
    they are few (``figs.logged_markers``). Returns their sources, also appended to ``figs.logged``."""
    first = _next_row(figs)
    sources, charts = [], []
    for name in names:
        spec = specs.logged(name)
        source = ColumnDataSource({"x": [], "y": []}, name=f"tm-logged-{len(figs.logged) + len(sources)}")
        chart = chart_figure(spec, source, figs.notes)
        line = chart.renderers[0]
        figs.logged_markers.append(chart.scatter(spec.x, "y", source=source, color=spec.lines[0].color, size=4))
        chart.select_one(HoverTool).renderers = [line]  # one tooltip per step, not the line's and the marker's
        sources.append(source)
        charts.append(chart)
    placed = [(fig, first + i // 3, i % 3) for i, fig in enumerate(charts)]
    figs.layout.children = [*figs.layout.children, *placed]  # type: ignore[attr-defined]
    figs.logged.extend(sources)
    return sources


def add_ranks(
    figs: DashboardFigures, labels: list[str], time_title: str, memory_keys: list[str]
) -> tuple[ColumnDataSource, ColumnDataSource]:
    """Rows for a distributed run: loss, time and throughput by rank, then memory by rank (RSS, and
    CUDA allocated with ``memory_keys`` ["m", "c"]); one line per rank (``labels``) or, with no
    labels, the p0-p100 band across ranks and its p50 line. Returns the sources of the step curves
    and of the memory curves (also ``figs.ranks`` and ``figs.rank_memory``)."""
    source = ColumnDataSource({k: [] for k in ["x", *rank_column_names("ltr", len(labels))]}, name="tm-ranks")
    memory = ColumnDataSource({k: [] for k in ["t", *rank_column_names(memory_keys, len(labels))]}, name="tm-rank-memory")
    charts = [
        _by_rank(_figure("loss by rank"), source, "x", "l", labels),
        _by_rank(_figure(time_title), source, "x", "t", labels),
        _by_rank(_figure("throughput by rank (samples/s, smoothed)"), source, "x", "r", labels),
        _by_rank(_figure("RSS by rank (MiB)", x_label="seconds"), memory, "t", "m", labels),
    ]
    if "c" in memory_keys:
        charts.append(_by_rank(_figure("CUDA allocated by rank (MiB)", x_label="seconds"), memory, "t", "c", labels))
    first = _next_row(figs)
    placed = [(fig, first + i // 3, i % 3) for i, fig in enumerate(charts)]
    figs.layout.children = [*figs.layout.children, *placed]  # type: ignore[attr-defined]
    figs.ranks, figs.rank_memory = source, memory
    return source, memory


def _by_rank(fig: figure, source: ColumnDataSource, x: str, key: str, labels: list[str]) -> figure:
    if labels:
        for i, label in enumerate(labels):
            fig.line(x, f"{key}{i}", source=source, color=PALETTE[i % len(PALETTE)], legend_label=label)
    else:
        fig.varea(x, f"{key}_p0", f"{key}_p100", source=source, color=PALETTE[0], alpha=0.25, legend_label="p0–p100")
        fig.line(x, f"{key}_p50", source=source, color=PALETTE[0], line_width=1.5, legend_label="p50")
    legend_above(fig)
    return fig
