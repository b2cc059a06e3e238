"""Parts shared by the dashboard's bokeh plots: legends outside the data, the histogram plot."""

from __future__ import annotations

from bokeh.models import AdaptiveTicker, ColorBar, ColumnDataSource, FixedTicker, HoverTool, LinearColorMapper
from bokeh.plotting import figure

from torchmagic.core import devicestats
from torchmagic.display import histograms


def legend_above(fig: figure) -> None:
    """The plot's legend in one row above the plot area, so it never hides the newest points."""
    legend = fig.legend[0]
    if legend in fig.center:
        fig.center = [r for r in fig.center if r is not legend]
    legend.orientation = "horizontal"
    legend.label_text_font_size = "9px"
    legend.spacing, legend.padding, legend.margin = 6, 0, 2
    legend.glyph_width, legend.glyph_height, legend.label_height = 14, 10, 10
    legend.border_line_alpha = 0
    fig.add_layout(legend, "above")


def histogram_figure(fig: figure, source: ColumnDataSource) -> figure:
    """``fig`` (titled with the parameter's name) drawing ``source``'s cells: ``x`` the step the
    snapshot stands for (centre), ``w`` its steps, ``y`` the bin's centre (log10|g|), ``v`` the
    share of the values in it, coloured as :mod:`torchmagic.display.histograms` says."""
    mapper = LinearColorMapper(
        palette=list(histograms.PALETTE), low=0, high=histograms.SHARE_HIGH, high_color=histograms.PALETTE[-1]
    )
    fig.rect(
        "x",
        "y",
        width="w",
        height=histograms.BIN_HEIGHT,
        source=source,
        fill_color={"field": "v", "transform": mapper},
        line_color=None,
    )
    fig.yaxis.ticker = AdaptiveTicker(base=10, mantissas=[1, 2, 5], min_interval=1, desired_num_ticks=5)
    fig.yaxis.major_label_overrides = histograms.decade_overrides(*devicestats.HIST_LOG10_RANGE)  # type: ignore[assignment]
    fig.yaxis.axis_label = histograms.Y_LABEL
    fig.yaxis.axis_label_text_font_size = "9px"
    fig.yaxis.major_label_text_font_size = "9px"
    scale = ColorBar(
        color_mapper=mapper,
        width=8,
        padding=4,
        ticker=FixedTicker(ticks=list(histograms.SCALE_TICKS)),
        major_label_overrides=dict(histograms.SCALE_TICKS),  # type: ignore[arg-type]
        major_label_text_font_size="8px",
    )
    fig.add_layout(scale, "right")
    hover = fig.select_one(HoverTool)
    if hover is not None:
        hover.tooltips = [("step", "@x{0}"), ("|grad| ~ 10^", "@y{0.0}"), ("share", "@v{0.0%}")]
    fig.xgrid.visible = fig.ygrid.visible = False
    return fig
