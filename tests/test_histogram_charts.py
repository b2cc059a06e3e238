"""Gradient histograms per named parameter (live and frozen), chosen with glob patterns, and the
frozen charts' axes: round ticks, labels inside the picture, constant series and log axes said so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

import torchmagic
import torchmagic.display.dashboard  # noqa: F401 - bokeh adds warnings filters when first imported
from torchmagic.display import axes, histograms, svg
from torchmagic.display.testing import recording_comms

SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential()
model.add_module("encoder", nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16)))
model.add_module("fc", nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
"""
LOOP = """
for i in range(12):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
"""
# Steps of at least 20 ms with refreshes due every 50 ms: refreshes come after the first histograms,
# however fast or loaded the machine (a slower one only adds refreshes).
PACED_LOOP = "import time\n" + LOOP.replace("optimizer.step()", "optimizer.step()\n    time.sleep(0.02)")
NAMES = ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "fc.weight", "fc.bias"]


def _texts(chart: str) -> list[tuple[float, str]]:
    return [(float(x), t) for x, t in re.findall(r'<text x="([-\d.]+)"[^>]*>([^<]*)</text>', chart)]


def _inside(chart: str) -> None:
    """Every label starts inside the picture and, as far as its estimated width goes, ends inside it."""
    width = float(re.search(r'viewBox="0 0 (\d+) \d+"', chart).group(1))
    for tag in re.findall(r"<text [^>]*>[^<]*</text>", chart):
        x = float(re.search(r'x="([-\d.]+)"', tag).group(1))
        text = re.search(r">([^<]*)<", tag).group(1)
        w = axes.text_px(text)
        anchor = re.search(r'text-anchor="(\w+)"', tag)
        left = {"end": x - w, "middle": x - w / 2}.get(anchor.group(1) if anchor else "start", x)
        assert left >= 0 and x >= 0, tag
        assert left + w <= width + 1 or "translate" in tag, tag


def test_ticks_are_four_to_six_round_numbers_from_the_data_bounds():
    for lo, hi in [(0, 3070), (8.31e-7, 12.5), (1, 200), (0.0012, 0.0031), (2.3, 2.9), (-0.4, 1.3), (1, 1e6)]:
        ticks = axes.nice_ticks(lo, hi)
        assert 4 <= len(ticks) <= 6 and ticks[0] <= lo and ticks[-1] >= hi, (lo, hi, ticks)
        step = ticks[1] - ticks[0]
        assert float(f"{step / 10 ** np.floor(np.log10(step)):.6g}") in (1, 2, 2.5, 5), step
    assert axes.nice_ticks(8.31e-7, 12.5)[0] == 0  # a time axis starts at 0, not at 8.31e-07
    assert [axes.tick_label(t, 1000) for t in axes.nice_ticks(0, 3070)] == ["0", "1000", "2000", "3000", "4000"]
    assert [axes.decade_label(d) for d in (-6, -2, 0, 2)] == ["1e-06", "0.01", "1", "100"]


def test_frozen_chart_labels_stay_inside_the_picture():
    samples = svg.line_chart("samples/s", list(range(1, 40)), {"samples/s": [3070.0 + (i % 5) * 20 for i in range(39)]})
    memory = svg.line_chart("memory (MiB)", [8.31e-7, 3.0, 6.5], {"RSS": [320, 330, 345]}, legend=True)
    for chart in (samples, memory):
        _inside(chart)
    assert "e+03" not in samples and ">3080<" in samples or ">3.1k<" in samples
    x_labels = [t for _, t in _texts(memory) if t and t[0].isdigit()]
    assert "0" in x_labels and "8.31e-07" not in memory
    assert ">RSS</text>" in memory  # the legend sits above the plot area, under the title
    legend_y = float(re.search(r'<text x="[\d.]+" y="(\d+)" font-size="9" fill="#444">RSS', memory).group(1))
    plot_top = float(re.search(r'<rect x="[\d.]+" y="(\d+)" width', memory).group(1))
    assert legend_y <= plot_top


def test_a_constant_series_says_its_value_and_a_log_axis_says_log():
    flat = svg.line_chart("memory", [1, 2, 3, 4], {"RSS": [350.0] * 4})
    assert [t for _, t in _texts(flat) if t == "350"] and "(constant)" not in flat  # its value, at the middle
    assert "-1" not in [t for _, t in _texts(flat)]
    lr = svg.line_chart("learning rate", [1, 2, 3, 4], {"lr": [0.05] * 4}, y_from_zero=True, note_constant=True)
    labels = [t for _, t in _texts(lr)]
    assert labels.count("lr 0.05 (constant)") == 1 and "0" in labels  # an axis from 0, as the live chart's
    top = float(re.search(r'<rect x="[\d.]+" y="(\d+)" width', lr).group(1))
    line_y = float(re.search(r'points="[\d.]+,([\d.]+) ', lr).group(1))
    note_y = float(re.search(r'<text x="[\d.]+" y="([\d.]+)"[^>]*>lr 0.05 \(constant\)', lr).group(1))
    assert top < line_y < note_y, (top, line_y, note_y)  # the line under the top, the note under the line
    _inside(lr)
    grad = svg.line_chart("gradient norm", list(range(1, 6)), {"grad norm": [1e-4, 1e-3, 1e-2, 0.1, 1.0]}, log_y=True)
    assert "gradient norm (log scale)" in grad
    labels = [t for _, t in _texts(grad)]
    assert {"0.0001", "0.01", "1"} <= set(labels) or {"1e-04", "0.01", "1"} <= set(labels)
    _inside(grad)


LOG_RANGES = [
    (0.07, 0.4),
    (0.3, 1.2),
    (0.52, 0.61),
    (0.11, 1.05),
    (0.3, 4),
    (1, 100),
    (3e-3, 2),
    (1e-3, 10),
    (1e-8, 1e2),
    (1e-30, 1e10),
]


def test_log_axis_ticks_are_four_to_six_real_values_inside_the_range():
    for lo, hi in LOG_RANGES:
        ticks = axes.log_ticks(lo, hi)
        assert (4 if hi / lo > 3 else 5) <= len(ticks) <= 6 and all(lo <= t <= hi for t in ticks), (lo, hi, ticks)
    # under a decade, spaced about evenly on the page rather than 1 and 0.5 alone; beyond, never piling up
    assert [axes.log_label(t) for t in axes.log_ticks(0.07, 0.4)] == ["0.07", "0.1", "0.15", "0.2", "0.3"]
    assert [axes.log_label(t) for t in axes.log_ticks(0.52, 0.61)] == ["0.52", "0.54", "0.56", "0.58", "0.6"]
    assert [axes.log_label(t) for t in axes.log_ticks(3e-3, 2)] == ["0.003", "0.01", "0.03", "0.1", "0.3", "1"]
    assert [axes.log_label(t) for t in axes.log_ticks(1e-8, 1e2)] == ["1e-08", "1e-06", "1e-04", "0.01", "1", "100"]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js (the lab extension's build needs it too)")
def test_the_live_log_axis_ticks_and_labels_as_the_frozen_one():
    """The JavaScript BokehJS runs for the live log axis, run by Node, against its Python twin."""
    from torchmagic.display import log_axis

    script = (
        f"const ticks = (cb_data) => {{{log_axis.LOG_TICKS_JS}}};\n"
        f"const label = (tick) => {{{log_axis.LOG_LABEL_JS}}};\n"
        f"console.log(JSON.stringify({json.dumps(LOG_RANGES)}.map(([start, end]) => {{"
        " const t = ticks({start, end}); return [t, t.map(label)]; })));"
    )
    live = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    for (lo, hi), (ticks, labels) in zip(LOG_RANGES, live):
        frozen = axes.log_ticks(lo, hi)
        assert ticks == pytest.approx(frozen, rel=1e-12), (lo, hi)
        assert labels == [axes.log_label(t) for t in frozen], (lo, hi)


def test_frozen_charts_have_escaped_axis_titles_inside_the_picture():
    chart = svg.line_chart(
        "grad norm", list(range(1, 30)), {"g": [0.3 + 0.03 * i for i in range(29)]}, log_y=True,
        x_title="step", y_title="<norm> (log)",
    )  # fmt: skip
    height = float(re.search(r'viewBox="0 0 \d+ (\d+)"', chart).group(1))
    x_title = re.search(r'<text class="tm-axis-title" x="([\d.]+)" y="([\d.]+)"[^>]*>step</text>', chart)
    y_title = re.search(r'<text class="tm-axis-title" transform="translate\(9,([\d.]+)\)[^>]*>([^<]*)</text>', chart)
    assert x_title and y_title and y_title.group(2) == "&lt;norm&gt; (log)" and "<norm>" not in chart
    assert float(x_title.group(2)) <= height and 0 < float(y_title.group(1)) < height
    tick_ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" font-size="9" text-anchor="middle"', chart)]
    assert tick_ys and max(tick_ys) < float(x_title.group(2)) - 8  # the x tick labels sit above their title
    y_labels = re.findall(r'text-anchor="end" fill="#666">([^<]+)</text>', chart)
    assert 4 <= len(y_labels) <= 6 and "1" in y_labels, y_labels  # a log axis over less than a decade: round steps
    hist = histograms.chart_svg("fc.weight", {"x": [5.0], "w": [10.0], "y": [-2.25], "v": [1.0], "h": [0.5]})
    assert ">step</text>" in hist and ">|grad| (log)</text>" in hist


def test_glob_patterns_choose_parameters_and_say_what_matched_nothing():
    chosen = histograms.select(NAMES, ("fc", "encoder.0.*", "decoder.*"))
    assert chosen.names == ["encoder.0.weight", "encoder.0.bias", "fc.weight", "fc.bias"]
    assert chosen.unmatched == ("decoder.*",)
    assert "no parameter matches 'decoder.*'" in histograms.note(chosen) and "fc.weight" in histograms.note(chosen)
    many = histograms.select([f"layer{i}.weight" for i in range(11)])
    assert len(many.names) == histograms.MAX_SHOWN and "+3 more" in histograms.note(many)
    assert histograms.note(histograms.select(NAMES)) == ""


def test_colours_match_bokehs_linear_mapper_buckets():
    from bokeh.models import LinearColorMapper  # the live plots' mapper, configured as figure_parts does

    mapper = LinearColorMapper(palette=list(histograms.PALETTE), low=0, high=histograms.SHARE_HIGH)
    assert mapper.palette == list(histograms.PALETTE)
    shares = np.array([0.001, 0.049, 0.05, 0.2, 0.39, 0.4, 0.9])
    assert histograms.colour_index(shares).tolist() == [0, 0, 1, 4, 7, 7, 7]


def test_magic_with_patterns_streams_named_histograms_and_freezes_their_twin(shell, monkeypatch):
    published: list[str] = []
    monkeypatch.setattr(shell.display_pub, "publish", lambda data, *a, **k: published.append(data.get("text/html", "")))
    shell.run_cell(SETUP)
    with recording_comms() as rec:
        out = shell.run_cell(
            "%%train --display widgets --every 2 --refresh 20 --histograms 'fc,encoder.0.*,nothing.*'\n" + PACED_LOOP
        )
    assert out.success, out.error_in_exec
    result = torchmagic.last_run()
    assert result.status == "completed" and result.histograms["names"] == NAMES
    custom = [d["content"] for k, d, _ in rec.messages if k == "comm_msg" and d.get("method") == "custom"]
    refreshes = [c for c in custom if c.get("kind") == "torchmagic.refresh"]
    patches = "".join(c.get("payload", "") for c in custom if c.get("msg") == "patch")
    # the histogram plots joined the live layout, titled with the chosen parameters, with a colour scale
    for name in ("encoder.0.weight", "encoder.0.bias", "fc.weight", "fc.bias"):
        assert f'"text":"{name}"' in patches.replace(" ", ""), name
    assert "encoder.2.weight" not in patches and "ColorBar" in patches
    streamed = {b["source"] for c in refreshes for b in c["streams"] + c["replace"] if set(b["columns"]) == {"x", "w", "y", "v"}}
    assert len(streamed) == 4
    alerts = "".join(c["sections"].get("alerts", "") for c in refreshes)
    assert "no parameter matches &#x27;nothing.*&#x27;" in alerts and "encoder.2.weight" in alerts
    frozen = next(html for html in published if "tm-dash" in html)
    assert frozen.count("|grad| (log)") == 4 and "≥40%" in frozen  # four charts, each with its scale
    for name in ("encoder.0.weight", "fc.bias"):
        assert f">{name}</text>" in frozen
    assert ">encoder.2.weight</text>" not in frozen


def test_api_with_a_list_of_patterns_and_a_finished_runs_html(shell):
    shell.run_cell(SETUP)
    cell = "import torchmagic\nwith torchmagic.train(model, optimizer, every=3, histograms=['fc'], display='none'):\n"
    out = shell.run_cell(cell + textwrap.indent(LOOP.strip(), "    "))
    assert out.success, out.error_in_exec
    result = torchmagic.last_run()
    assert result.histograms["steps"] == [1, 3, 6, 9, 12]
    html = torchmagic.display.panels.snapshot_html(result, histograms=("fc",))
    assert ">fc.weight</text>" in html and ">fc.bias</text>" in html and ">encoder.0.weight</text>" not in html
    everything = torchmagic.display.panels.snapshot_html(result)  # no patterns: the first parameters
    assert all(f">{name}</text>" in everything for name in NAMES)


@pytest.mark.parametrize("value", [True, "fc", ["fc", "encoder.*"]])
def test_histograms_values_the_api_accepts(value, shell):
    shell.run_cell(SETUP)
    shell.user_ns["choice"] = value
    out = shell.run_cell("import torchmagic\nrun = torchmagic.train(model, optimizer, histograms=choice, display='none')")
    assert out.success, out.error_in_exec
    assert shell.user_ns["run"].monitor.histograms is True


def test_an_axis_labels_its_ticks_in_one_unit():
    assert axes.tick_labels([2000, 4000, 6000, 8000, 10000]) == ["2k", "4k", "6k", "8k", "10k"]  # not 8000 beside 10k
    assert axes.tick_labels([0, 500_000, 1_000_000, 1_500_000]) == ["0", "0.5M", "1M", "1.5M"]
    assert axes.tick_labels([3060, 3080, 3100]) == ["3060", "3080", "3100"]
    chart = svg.line_chart("samples/s", [1, 2, 3], {"r": [2500.0, 9000.0, 9800.0]})
    assert ">10k</text>" in chart and ">8k</text>" in chart and ">8000</text>" not in chart
