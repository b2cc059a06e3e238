"""The dashboard's bokeh plots and the data sources they draw from."""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure

from torchmagic.display.series import SPREAD
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
    ranks: ColumnDataSource | None = None  # distributed runs: x, l0.., t0.. (by rank) or l_p0.., t_p0.. (a band)


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


def add_ranks(figs: DashboardFigures, labels: list[str], time_title: str) -> ColumnDataSource:
    """A third row for a distributed run: loss and time by rank, one line per rank (``labels``) or,
    with no labels, the p0-p100 band across ranks and its p50 line."""
    cols = ["x", *(f"{k}{i}" for k in "lt" for i in range(len(labels)))] if labels else ["x"]
    cols += [] if labels else [f"{k}_{q}" for k in "lt" for q in SPREAD]
    source = ColumnDataSource({k: [] for k in cols}, name="tm-ranks")
    loss, times = _figure("loss by rank"), _figure(time_title)
    for fig, key in ((loss, "l"), (times, "t")):
        if labels:
            for i, label in enumerate(labels):
                fig.line("x", f"{key}{i}", source=source, color=PALETTE[i % len(PALETTE)], legend_label=label)
        else:
            fig.varea("x", f"{key}_p0", f"{key}_p100", source=source, color=PALETTE[0], alpha=0.25, legend_label="p0–p100")
            fig.line("x", f"{key}_p50", source=source, color=PALETTE[0], line_width=1.5, legend_label="p50")
        fig.legend.label_text_font_size = "9px"
        fig.legend.location = "top_right"
        fig.legend.spacing, fig.legend.padding = 0, 2
    figs.layout.children = [*figs.layout.children, (loss, 2, 0), (times, 2, 1)]  # type: ignore[attr-defined]
    figs.ranks = source
    return source
