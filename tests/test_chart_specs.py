"""Each dashboard chart is described once (:mod:`torchmagic.display.chart_specs`) and both views
draw that description: the live bokeh figure and the frozen SVG."""

from __future__ import annotations

import re

from bokeh.models import ColumnDataSource, Legend, LogScale

from torchmagic.display import chart_specs, figures, panels
from torchmagic.display.chart_specs import Chart, Line

COLUMNS = {"x": [1, 2, 3, 4], "a": [0.5, 0.4, 0.3, 0.25], "b": [2.0, 1.0, 0.5, 0.2], "m0": [1.0, 2.0, 3.0, 4.0]}


def test_a_new_chart_described_once_is_drawn_alike_by_both_views():
    spec = Chart(
        "made up <metric>",
        "steps",
        (Line("a", "first", "#123456"), Line("b", "second", "#abcdef", dash="dashed")),
        y_title="value (log)",
        log_y=True,
        legend=True,
        layers="m",
    )
    live = figures.chart_figure(spec, ColumnDataSource(COLUMNS))
    frozen = panels.chart_svg(spec, COLUMNS, tracked=["encoder"])

    assert live.title.text == spec.title and isinstance(live.y_scale, LogScale)
    assert (live.xaxis[0].axis_label, live.yaxis[0].axis_label) == ("step", "value (log)")
    lines = [(r.glyph.y, r.glyph.line_color) for r in live.renderers]
    assert lines[:2] == [("a", "#123456"), ("b", "#abcdef")] and lines[2][0] == "m0"
    assert live.renderers[1].glyph.line_dash == [6]  # bokeh's "dashed"
    (legend,) = live.select(type=Legend)
    assert [item.label["value"] for item in legend.items] == ["first", "second"]

    assert "made up &lt;metric&gt;" in frozen and "<metric>" not in frozen
    assert re.findall(r'<text class="tm-axis-title"[^>]*>([^<]*)</text>', frozen) == ["step", "value (log)"]
    strokes = re.findall(r'<polyline fill="none" stroke="([^"]+)"', frozen)
    assert strokes == ["#123456", "#abcdef", spec.layer_color(0)]
    for label in ("first", "second", "encoder"):  # the legend, the layer named
        assert f">{label}</text>" in frozen, label


def test_the_grid_and_the_snapshot_draw_the_step_charts_in_the_described_order():
    figs = figures.build()
    assert [fig.title.text for fig, _, _ in figs.layout.children] == [c.title for c in chart_specs.STEP_CHARTS]
    memory = next(fig for fig, _, _ in figs.layout.children if fig.title.text == chart_specs.MEMORY.title)
    assert [r.glyph.y for r in memory.renderers] == ["rss"]  # CUDA lines join on a CUDA run only
    figures.show_cuda_memory(figs)
    wanted = [(line.column, line.color) for line in chart_specs.MEMORY.lines]
    assert [(r.glyph.y, r.glyph.line_color) for r in memory.renderers] == wanted
