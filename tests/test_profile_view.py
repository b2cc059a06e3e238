"""``%profile``'s views: the explorer's table as the browser receives it, the static summary, and small display rules."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

from torchmagic.core.monitor import Snapshot
from torchmagic.core.native_log import without_kineto_notes
from torchmagic.core.profiling import ProfileSession
from torchmagic.core.result import RunResult
from torchmagic.core.tensorstats import inspect_tensor
from torchmagic.display import panels
from torchmagic.display.inspect_view import html as inspect_html
from torchmagic.display.profile_summary import LIVE_CLASS, TWIN_CLASS, html, timeline_svg
from torchmagic.display.profile_view import ProfileExplorer
from torchmagic.display.tensor_view import share, thumbnail_scale
from torchmagic.display.testing import recording_comms


@pytest.fixture
def ns(shell, tiny_setup):
    model, opt, x, y = tiny_setup
    shell.user_ns.update(model=model, opt=opt, x=x, y=y)
    return shell.user_ns


def _bundle_models(explorer: ProfileExplorer) -> list[dict]:
    """The bokeh models of the table's document, as the browser gets them in the widget's state."""
    bundle = explorer.table_view.render_bundle
    docs = bundle["docs_json"]
    (doc,) = docs.values()
    return doc["roots"]


def _find(obj, name: str) -> list[dict]:
    """Every serialised bokeh object of type ``name`` inside ``obj``."""
    out = []
    if isinstance(obj, dict):
        if obj.get("type") == "object" and obj.get("name") == name:
            out.append(obj)
        for v in obj.values():
            out.extend(_find(v, name))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_find(v, name))
    return out


def _value(prop):
    """A serialised property: a plain value, or {"type": "value", "value": ...}."""
    return prop["value"] if isinstance(prop, dict) and prop.get("type") == "value" else prop


def _column_fields(explorer: ProfileExplorer) -> list[str]:
    return [c["attributes"]["field"] for c in _find(_bundle_models(explorer), "TableColumn")]


def test_the_table_reaches_the_browser_with_its_columns_and_rows(shell, ns):
    r = shell.run_line_magic("profile", "--display none --record-shapes --with-stack model(x).sum().backward()")
    with recording_comms():
        ex = ProfileExplorer(r)
        try:
            assert _column_fields(ex)[:4] == ["name", "calls", "self_cpu_time_us", "cpu_time_total_us"]
            serialised = json.dumps(ex.table_view.render_bundle, default=str)
            assert "aten::addmm" in serialised  # the rows travel with the document
            aligns = {
                c["attributes"]["field"]: _value(c["attributes"]["formatter"].get("attributes", {}).get("text_align", "left"))
                for c in _find(_bundle_models(ex), "TableColumn")
            }
            assert aligns["name"] == "left" and aligns["calls"] == aligns["self_cpu_time_us"] == "right"
            assert LIVE_CLASS in ex.widget._dom_classes
        finally:
            ex.close()


def test_regrouping_and_filtering_send_a_new_document_not_patches(shell, ns):
    r = shell.run_line_magic("profile", "--display none --record-shapes --with-stack model(x).sum().backward()")
    with recording_comms() as rec:
        ex = ProfileExplorer(r, group="line")
        try:
            assert _column_fields(ex)[0] == "source"  # the first grouping is in the first document
            before = len(rec.messages)
            ex.group_by.value = "shape"
            sent = rec.messages[before:]
            patches = [d for k, d, _ in sent if k == "comm_msg" and d.get("method") == "custom"]
            assert patches == []  # jupyter_bokeh drops patches a view has not rendered yet
            assert any("render_bundle" in d.get("state", {}) for k, d, _ in sent if k == "comm_msg")
            assert "input_shapes" in _column_fields(ex)
            ex.group_by.value = "op"
            ex.filter.value = "ADDMM"
            names = ex.source.data["name"]
            assert names and all("addmm" in n.lower() for n in names)
            assert ex.count.value.startswith(f"{len(names)} rows")
        finally:
            ex.close()


def test_static_summary_hides_its_twin_next_to_a_live_explorer_only(shell, ns):
    r = shell.run_line_magic("profile", "--display none model(x)")
    page = html(r)
    # one rule: in a cell output holding the live explorer, the static table and charts are hidden
    assert f".jp-Cell-outputArea:has(.{LIVE_CLASS}) .{TWIN_CLASS}{{display:none}}" in page
    header, twin = page.split(f'<div class="{TWIN_CLASS}">', 1)
    assert "tm-badge" in header and "completed" in header  # the header line stays visible
    assert "<table>" in twin and "aten::addmm" in twin


def test_tensorboard_link_says_its_overview_needs_the_internet(shell, ns):
    r = shell.run_line_magic("profile", "--display none model(x)")
    r.tensorboard_url = "http://127.0.0.1:6006/#pytorch_profiler"
    page = html(r)
    assert "Google Charts from the internet" in page and "op table, timeline and memory views here" in page


def test_timeline_bars_are_labelled_where_wide_enough(shell, ns):
    # one Linear call: its aten::linear spans the whole profile however the machine's load stretches
    # its parts (a profile of several top-level ops can have them all narrow when it is preempted between them)
    ns["layer"] = torch.nn.Linear(256, 256)
    ns["big"] = torch.randn(128, 256)
    r = shell.run_line_magic("profile", "--display none layer(big)")
    svg = timeline_svg(r)
    labels = re.findall(r'<text [^>]*fill="#fff"[^>]*>([^<]+)</text>', svg)
    assert labels and any(lab.startswith("linear") or lab.startswith("addmm") for lab in labels), labels
    narrowest = int(np.argmin(r.timeline.dur_us))
    assert r.timeline.names[narrowest].removeprefix("aten::") not in labels or len(labels) == len(set(labels))
    ex = ProfileExplorer(r)
    try:
        from bokeh.models import LabelSet

        sets = [m for m in ex.timeline.center if isinstance(m, LabelSet)]
        assert sets and sets[0].source.data["text"]
    finally:
        ex.close()


def test_kineto_notes_never_reach_descriptor_2(tiny_setup, capfd):
    model, opt, x, _ = tiny_setup
    with ProfileSession() as s:
        model(x)
    with ProfileSession(steps=1, wait=1, warmup=1) as s:
        for _ in range(4):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert s.result.steps_profiled == 1
    err = capfd.readouterr().err
    assert "USDT:" not in err and "STAGE:" not in err and "profiler_start" not in err, err
    kept = without_kineto_notes(
        b"USDT:2026-12-02 10:33:05 13425:13425 SyncActivityProfilerHandler.cpp:52] profiler_start\n"
        b"STAGE:2026-12-02 10:33:19 13602:13602 SyncActivityProfilerHandler.cpp:51] Completed Stage: Warm Up\n"
        b"my own line\n"
    )
    assert kept == b"my own line\n"
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err  # descriptor 2 is back where it was


def test_finished_run_header_never_says_throughput_unknown():
    result = RunResult(status="completed", steps=2)
    result.columns.append_rows({"step": [1, 2], "loss": [1.0, 0.5], "lr": [0.1, 0.1], "samples_per_s": [None, None]}, 2)
    page = panels.snapshot_html(result)
    assert "throughput</b> ?" not in page and "<b>throughput</b>" not in page
    result.columns.set("samples_per_s", 1, 120.0)
    assert "<b>throughput</b> 120 samples/s" in panels.snapshot_html(result)
    live = panels.header(Snapshot(result, None, None, 250.0))
    assert "<b>throughput</b> 250 samples/s" in live


def test_layer_table_numbers_are_right_aligned():
    from torchmagic.core.result import LayerInfo

    result = RunResult()
    result.layers = [LayerInfo("fc", "Linear", "[2, 8]", "[2, 4]")]
    table = panels.layers(result)
    assert "<th class=num>act mean</th>" in table and "<td class=num>" in table
    assert "<td><code>fc</code></td>" in table  # text stays left
    assert "td.num" in panels.STYLE


def test_percentages_never_round_a_nonzero_count_to_zero():
    assert share(1, 10_000_000) == "<0.1%" and share(9_999_999, 10_000_000) == ">99.9%"
    assert share(5, 10) == "50.0%" and share(10, 10) == "100.0%"
    t = torch.zeros(1000, 1000)
    t[0, 0] = float("nan")
    r = inspect_tensor(t, "t")
    assert "(&lt;0.1%)" in inspect_html(r) and "0.0%" not in inspect_html(r)


def test_small_images_are_shown_at_least_64_px_and_nan_pixels_are_marked():
    assert thumbnail_scale(8, 8) * 8 >= 64 and thumbnail_scale(3, 2) * 3 >= 48
    assert thumbnail_scale(300, 300) == 1
    img = torch.rand(3, 8, 8)
    img[:, 2, 3] = float("nan")
    r = inspect_tensor(img, "img")
    (view,) = [v for v in r.views if v.kind == "image"]
    assert view.data.shape == (8, 8, 3) and tuple(view.data[2, 3]) == (255, 0, 255)
    assert "magenta: NaN or ±Inf" in view.note
    page = inspect_html(r)
    (width,) = re.findall(r'<img src="data:image/png;base64,[^"]+" width="(\d+)"', page)
    assert int(width) >= 64 and "magenta: NaN" in page
    clean = inspect_tensor(torch.rand(3, 8, 8), "img")
    assert all("magenta" not in v.note for v in clean.views)
