"""The dashboard's bokeh plots and the data sources they draw from."""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure

from torchmagic.display.series import rank_column_names
from torchmagic.display.svg import PALETTE

TRACKED_LAYERS = 8
WIDTH, HEIGHT = 330, 185


@dataclass
class DashboardFigures:
    layout: object
    steps: ColumnDataSource  # x, loss, loss_smooth, lr, rate
    memory: ColumnDataSource  # t, rss, cuda_allocated, cuda_reserved (MiB)
    layers: ColumnDataSource  # scheduled steps: x, gn (global grad norm), g0..g7 (by layer), a0..a7 (activation std)
    hist: ColumnDataSource | None  # x, y, w, v
    ranks: ColumnDataSource | None = None  # distributed runs: x, l0.., t0.., r0.. (by rank) or l_p0.. .. r_p100 (a band)
    rank_memory: ColumnDataSource | None = None  # distributed runs: t, m0.. (RSS), c0.. (CUDA allocated) or m_p0.. (MiB)


def _figure(title: str, x_label: str = "step", **kw: object) -> figure:
    p = figure(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        tools="pan,wheel_zoom,box_zoom,reset,hover",
        toolbar_location="right",
        x_axis_label=x_label,
        **kw,
    )
    p.title.text_font_size = "11px"
    p.toolbar.logo = None
    p.xaxis.axis_label_text_font_size = "10px"
    return p


def build(histograms: bool) -> DashboardFigures:
    steps = ColumnDataSource({k: [] for k in ("x", "loss", "loss_smooth", "lr", "rate")}, name="tm-steps")
    mem = ColumnDataSource({k: [] for k in ("t", "rss", "cuda_allocated", "cuda_reserved")}, name="tm-memory")
    layer_cols = ["x", "gn"] + [f"g{i}" for i in range(TRACKED_LAYERS)] + [f"a{i}" for i in range(TRACKED_LAYERS)]
    layers = ColumnDataSource({k: [] for k in layer_cols}, name="tm-layers")

    loss = _figure("loss")
    loss.line("x", "loss", source=steps, color="#9ecae1", legend_label="raw")
    loss.line("x", "loss_smooth", source=steps, color=PALETTE[0], line_width=2, legend_label="smoothed")
    loss.legend.label_text_font_size = "9px"
    loss.legend.location = "top_right"
    lr = _figure("learning rate")
    lr.line("x", "lr", source=steps, color=PALETTE[1])
    rate = _figure("throughput (samples/s)")
    rate.line("x", "rate", source=steps, color=PALETTE[2])
    grad = _figure("gradient norm: global (black) and by layer", y_axis_type="log")
    grad.line("x", "gn", source=layers, color="#222", line_width=1.5)
    for i in range(TRACKED_LAYERS):
        grad.line("x", f"g{i}", source=layers, color=PALETTE[i % len(PALETTE)], alpha=0.8)
    memory = _figure("memory (MiB)", x_label="seconds")
    memory.line("t", "rss", source=mem, color=PALETTE[4], legend_label="RSS")
    memory.line("t", "cuda_allocated", source=mem, color=PALETTE[3], legend_label="CUDA allocated")
    memory.line("t", "cuda_reserved", source=mem, color=PALETTE[5], legend_label="CUDA reserved", line_dash="dashed")
    memory.legend.label_text_font_size = "9px"
    memory.legend.location = "top_left"
    hist_source = None
    if histograms:
        hist_source = ColumnDataSource({k: [] for k in ("x", "y", "w", "v")}, name="tm-hist")
        last = _figure("gradient histograms: log10|g| by parameter, over steps")
        mapper = LinearColorMapper(palette="Viridis256", low=0, high=8)
        last.rect(
            "x",
            "y",
            width="w",
            height=1 / 28,
            source=hist_source,
            fill_color={"field": "v", "transform": mapper},
            line_color=None,
        )
    else:
        last = _figure("activation std by layer")
        for i in range(TRACKED_LAYERS):
            last.line("x", f"a{i}", source=layers, color=PALETTE[i % len(PALETTE)], alpha=0.8)
    layout = gridplot([[loss, lr, rate], [grad, memory, last]], toolbar_location=None, merge_tools=False)
    return DashboardFigures(layout, steps, mem, layers, hist_source)


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
    placed = [(fig, 2 + i // 3, i % 3) for i, fig in enumerate(charts)]
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
    fig.legend.label_text_font_size = "9px"
    fig.legend.location = "top_right"
    fig.legend.spacing, fig.legend.padding = 0, 2
    return fig
