"""``%profile``: the engine's tables against torch's own, the magic's paths, and its errors."""

from __future__ import annotations

import gc
import json
import os

import pytest
import torch
from IPython.core.error import UsageError

from tests.conftest import global_hook_state
from torchmagic.core.op_origin import module_of, source_of
from torchmagic.core.profile_result import ProfileResult, last_profile
from torchmagic.core.profile_trace import CPU_OP, DEVICE_OP, MEMORY, TraceRecord, analyse
from torchmagic.core.profiling import ProfileSession


def _loop(model, opt, x, steps):
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _profiler_off() -> bool:
    return not torch.autograd.profiler._is_profiler_enabled


# ---------------------------------------------------------------------- engine
def test_op_table_matches_key_averages(tiny_setup, tmp_path):
    model, opt, x, _ = tiny_setup
    with ProfileSession(record_shapes=True, profile_memory=True, trace_path=str(tmp_path / "t.json")) as s:
        _loop(model, opt, x, 2)
    table = s.result.table
    ka = {k.key: k for k in s._prof.key_averages()}
    for name in ("aten::addmm", "aten::linear", "aten::mm"):
        row = table[table.name == name].iloc[0]
        assert row.calls == ka[name].count
        assert row.self_cpu_time_us == pytest.approx(ka[name].self_cpu_time_total, abs=0.01)
        assert row.cpu_time_total_us == pytest.approx(ka[name].cpu_time_total, abs=0.01)
        assert row.cpu_memory_bytes == ka[name].cpu_memory_usage
    assert list(table.columns[:4]) == ["name", "calls", "self_cpu_time_us", "cpu_time_total_us"]
    assert "[64, 8], [8, 16]" in table[table.name == "aten::addmm"].iloc[0].input_shapes  # input, weight.T
    assert table.self_cpu_time_us.is_monotonic_decreasing
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


def test_steps_follow_the_schedule_on_optimizer_steps(tiny_setup):
    model, opt, x, _ = tiny_setup
    before = global_hook_state()
    with ProfileSession(steps=2, wait=1, warmup=1) as s:
        _loop(model, opt, x, 6)
    r = s.result
    assert (r.steps_seen, r.steps_profiled) == (6, 2)
    assert sorted(n for n in r.op_events["name"] if n.startswith("ProfilerStep")) == ["ProfilerStep#2", "ProfilerStep#3"]
    assert r.table[r.table.name == "Optimizer.step#SGD.step"].iloc[0].calls == 2
    assert global_hook_state() == before and _profiler_off()


def _record(
    kind: int,
    name: str,
    thread: int | str,
    start_ns: int,
    dur_ns: int,
    *,
    correlation: int = 0,
    linked_correlation: int = 0,
    device: str = "CPU",
    nbytes: int = 0,
) -> TraceRecord:
    return TraceRecord(kind, name, thread, start_ns, dur_ns, correlation, linked_correlation, device, "", (), nbytes)


def test_device_time_goes_to_the_launching_op_and_rolls_up():
    # a synthetic trace: parent op (corr 1) > child op (corr 2) which launched two kernels
    records = [
        _record(CPU_OP, "aten::linear", 7, 1_000, 10_000, correlation=1),
        _record(CPU_OP, "aten::addmm", 7, 2_000, 5_000, correlation=2),
        _record(DEVICE_OP, "gemm_kernel", "cuda:0 stream 7", 3_000, 4_000, correlation=90, linked_correlation=2, device="cuda:0"),
        _record(DEVICE_OP, "bias_kernel", "cuda:0 stream 7", 8_000, 1_000, correlation=91, linked_correlation=2, device="cuda:0"),
        _record(MEMORY, "[memory]", 7, 2_500, 0, nbytes=4096),
    ]
    r = ProfileResult()
    analyse(records, r)
    rows = {row["name"]: row for row in r.rows()}
    assert rows["aten::addmm"]["self_device_time_us"] == pytest.approx(5.0)
    assert rows["aten::linear"]["self_device_time_us"] == 0
    assert rows["aten::linear"]["device_time_total_us"] == pytest.approx(5.0)
    assert rows["aten::linear"]["self_cpu_time_us"] == pytest.approx(5.0)  # 10 us minus its child's 5
    assert rows["gemm_kernel"]["self_device_time_us"] == pytest.approx(4.0)
    assert r.timeline.lanes == ["thread 7", "cuda:0 stream 7"]
    assert [c.device for c in r.memory] == ["CPU"] and r.memory[0].peak == 4096


def test_source_is_the_profiled_code_frame_else_the_first_frame_outside_libraries():
    stack = ("torch/nn/modules/linear.py(120): forward", "nn.Module: Linear_0", "<cell-1>(4): step", "<cell-1>(1): <module>")
    assert source_of(stack, {"<cell-1>": "cell"}) == "cell:4 step()"
    assert source_of(stack[3:], {"<cell-1>": "cell"}) == "cell (top level)"
    assert source_of(stack, {}) == "<cell-1>(4): step"
    assert module_of(stack) == "Linear_0" and module_of(stack[:1]) == "" and source_of((), {}) == ""


@pytest.mark.parametrize("enabled", [True, False])
def test_reading_the_trace_leaves_the_garbage_collector_as_it_was(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with ProfileSession() as s:
            torch.ones(8).sum()
        assert s.result.op_count > 0 and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_memory_timeline_sees_a_large_allocation():
    with ProfileSession(profile_memory=True) as s:
        a = torch.ones(1 << 20)  # 4 MiB
        b = a * 2
        del a, b
    curve = s.result.memory[0]
    assert curve.device == "CPU"
    assert curve.peak >= 8 << 20
    assert curve.allocated[-1] <= curve.peak - (4 << 20)  # the frees are there too


def test_timeline_keeps_the_longest_events(tiny_setup):
    model, opt, x, _ = tiny_setup
    with ProfileSession(timeline_events=10) as s:
        _loop(model, opt, x, 2)
    tl = s.result.timeline
    assert tl.shown == 10 and tl.total == s.result.op_count > 10
    all_durs = sorted((s.result.op_events["total_us"]), reverse=True)
    assert min(tl.dur_us) >= all_durs[9] - 1e-6
    assert (tl.start_us >= 0).all() and tl.span_us >= max(tl.start_us + tl.dur_us) - 1e-6


# ---------------------------------------------------------------------- magic
@pytest.fixture
def ns(shell, tiny_setup):
    model, opt, x, y = tiny_setup
    shell.user_ns.update(model=model, opt=opt, x=x, y=y)
    return shell.user_ns


def test_line_magic_returns_the_result_and_keeps_it(shell, ns):
    r = shell.run_line_magic("profile", "--record-shapes --display none model(x).sum()")
    assert isinstance(r, ProfileResult) and r is last_profile()
    import torchmagic

    assert torchmagic.core.profile_result.last_profile() is r
    assert r.status == "completed" and "aten::addmm" in set(r.table.name)
    assert os.path.exists(r.trace_path) and r.logdir is None
    text = shell.display_formatter.format(r)[0]["text/plain"]
    assert "aten::addmm" in text and "self CPU" in text


def test_cell_magic_steps_and_source_line_grouping(shell, ns):
    cell = (
        "def forward():\n    return model(x).pow(2).mean()\n\n"
        "for _ in range(5):\n    opt.zero_grad()\n    forward().backward()\n    opt.step()\n"
    )
    r = shell.run_cell_magic("profile", "--steps 2 --wait 1 --with-modules --display none", cell)
    assert (r.steps_seen, r.steps_profiled) == (5, 2)
    lines = r.group("line")
    # torch's Python tracer gives each frame's first line: functions by their def line
    assert lines[lines.source == "cell:1 forward()"].name.str.contains("addmm").any()
    assert lines[lines.source == "cell (top level)"].name.str.contains("zero_grad").any()
    modules = r.group("module")
    assert {"Linear_0", "Linear_1"} <= set(modules.module)


def test_exception_stops_the_profiler_shows_what_was_collected_and_propagates(shell, ns, capsys):
    before = global_hook_state()
    res = shell.run_cell(
        "%%profile --steps 3 --display static\nfor i in range(4):\n    opt.zero_grad()\n"
        "    model(x).sum().backward()\n    opt.step()\n    if i == 1:\n        raise ValueError('boom at 1')\n"
    )
    assert isinstance(res.error_in_exec, ValueError) and str(res.error_in_exec) == "boom at 1"
    r = last_profile()
    assert r.status == "failed" and r.error == "ValueError: boom at 1" and r.steps_seen == 2
    assert "aten::addmm" in set(r.table.name)  # what was collected is there
    assert "stopped by ValueError" in capsys.readouterr().out
    assert _profiler_off() and global_hook_state() == before
    again = shell.run_line_magic("profile", "--display none model(x)")
    assert again.status == "completed" and again.op_count > 0


def test_ctrl_c_stops_cleanly_and_propagates(shell, ns):
    res = shell.run_cell("%%profile --display none\nmodel(x)\nraise KeyboardInterrupt\n")
    assert isinstance(res.error_in_exec, KeyboardInterrupt)
    assert last_profile().status == "interrupted" and last_profile().op_count > 0
    assert _profiler_off()
    assert shell.run_line_magic("profile", "--display none model(x)").status == "completed"


def test_steps_without_an_optimizer_step_is_a_usage_error_after_the_run(shell, ns):
    with pytest.raises(UsageError, match="made no optimizer step"):
        shell.run_cell_magic("profile", "--steps 2 --display none", "ran = model(x)\n")
    assert "ran" in ns and _profiler_off()  # the cell did run


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus model(x)", "unrecognized arguments"),
        ("--steps 0 model(x)", "--steps must be positive"),
        ("--steps -2 model(x)", "--steps must be positive"),
        ("--warmup 2 model(x)", "need --steps"),
        ("--record-shapes", "nothing to profile"),
        ("--logdir /proc/torchmagic-nope model(x)", "--logdir '/proc/torchmagic-nope' cannot be created"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(shell, ns, line, message):
    with pytest.raises(UsageError, match=message) as info:
        shell.run_line_magic("profile", line)
    assert "\n" not in str(info.value)
    assert _profiler_off()


def test_logdir_that_is_a_file_is_a_usage_error(shell, ns, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is below a file"):
        shell.run_cell_magic("profile", f"--logdir {blocker}/sub", "ran = 1\n")
    assert "ran" not in ns


def test_static_summary_escapes_names_and_has_no_script(shell, ns):
    ns["torch"] = torch
    r = shell.run_cell_magic(
        "profile", "--display none --profile-memory", "with torch.profiler.record_function('<b>mine</b>'):\n    model(x)\n"
    )
    page = shell.display_formatter.format(r)[0]["text/html"]
    assert "&lt;b&gt;mine&lt;/b&gt;" in page and "<b>mine</b>" not in page
    assert "<script" not in page and "<svg" in page and "timeline" in page and "memory" in page


def test_explorer_groups_and_filters_the_bokeh_table(shell, ns):
    from torchmagic.display.profile_view import ProfileExplorer

    r = shell.run_cell_magic("profile", "--display none --record-shapes --with-stack", "model(x).sum().backward()\n")
    ex = ProfileExplorer(r)
    try:
        assert list(ex.group_by.options) == ["op", "shape", "module", "line"]
        assert set(ex.source.data["name"]) == set(r.table.name)
        ex.filter.value = "addmm"
        assert ex.source.data["name"] and all("addmm" in n.lower() for n in ex.source.data["name"])
        ex.filter.value = ""
        ex.group_by.value = "line"
        assert "cell (top level)" in ex.source.data["source"]
        assert ex.timeline is not None and len(ex.timeline.renderers[0].data_source.data["name"]) == r.timeline.shown
    finally:
        ex.close()


def test_a_trace_that_could_not_be_written_is_not_reported(tiny_setup, tmp_path):
    model, _, x, _ = tiny_setup
    folder = tmp_path / "d"
    with ProfileSession(trace_path=str(folder / "t.json")) as s:
        model(x)
        folder.rmdir()  # made by the up-front check, gone before the trace is written
        (tmp_path / "d").write_text("now a file")
    r = s.result
    assert r.trace_path is None and r.trace_error.startswith("the trace was not written")
    assert r.status == "completed" and r.op_count > 0  # the result itself is kept
