"""The catalogue for ``%profile``, ``%%profile`` and ``ProfileSession``, each case under ``leaves_no_trace``:
bad options and hostile paths refused in one line before the cell runs, nothing overwritten, faults
inside the cell (exception, Ctrl-C, a nested profiler) leave the profiler off, user names escaped."""

from __future__ import annotations

import os
import socket
import stat
import time
from typing import Any

import pytest
import torch
from IPython.core.error import UsageError

import torchmagic
import torchmagic.display.profile_summary  # noqa: F401 - imported once before the state is compared
from torchmagic.core.profiling import ProfileSession

pytestmark = pytest.mark.usefixtures("leaves_no_trace")

RAN = "ran = 1\nmodel(X)\n"  # a cell whose side effect shows whether it ran


def one_line(kind: type[BaseException], call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def refused(shell, line: str, cell: str = RAN) -> str:
    """The UsageError of ``%%profile line``; the cell did not run and no profiler is left on."""
    shell.user_ns.pop("ran", None)
    message = one_line(UsageError, shell.run_cell_magic, "profile", line, cell)
    assert "ran" not in shell.user_ns, "the cell ran although its options were refused"
    assert not torch._C._autograd._profiler_enabled()
    return message


def profiled(shell, line: str, cell: str = RAN):
    return shell.run_cell_magic("profile", f"--display none {line}", cell)


OPTIONS = {
    "steps_zero": ("--steps 0", "%%profile: --steps must be positive, got 0"),
    "steps_negative": ("--steps -3", "--steps must be positive, got -3"),
    "steps_not_a_number": ("--steps abc", "argument --steps: invalid int value: 'abc'"),
    "steps_a_float": ("--steps 1.5", "invalid int value: '1.5'"),
    "wait_negative": ("--steps 2 --wait -1", "--wait and --warmup must be 0 or more"),
    "warmup_without_steps": ("--warmup 1", "--wait and --warmup need --steps N"),
    "timeline_events_zero": ("--timeline-events 0", "--timeline-events must be positive, got 0"),
    "timeline_events_not_a_number": ("--timeline-events many", "invalid int value: 'many'"),
    "unknown_option": ("--bogus", "unrecognized arguments: --bogus"),
    "group_not_a_choice": ("--group nope", "invalid choice: 'nope'"),
    "display_not_a_choice": ("--display loud", "invalid choice: 'loud'"),
    "run_without_logdir": ("--run r1", "--run needs --logdir DIR"),
    "port_without_tensorboard": ("--port 6006", "--port needs --tensorboard"),
    "port_out_of_range": ("--tensorboard --port 70000", "--port must be between 1 and 65535, got 70000"),
}


@pytest.mark.parametrize("case", OPTIONS)
def test_bad_option_is_a_one_line_usage_error_before_the_cell_runs(shell, case):
    line, message = OPTIONS[case]
    assert message in refused(shell, line)


def test_empty_cell_is_nothing_to_profile(shell):
    assert "nothing to profile; put code below %%profile" in one_line(UsageError, shell.run_cell_magic, "profile", "", "\n\n")


def test_syntax_error_cell_raises_before_profiling(shell):
    before = torchmagic.last_profile()
    one_line(SyntaxError, shell.run_cell_magic, "profile", "--display none", "ran = (\n")
    assert torchmagic.last_profile() is before and not torch._C._autograd._profiler_enabled()


# ---------------------------------------------------------------------- hostile paths
def test_trace_below_a_file(shell, tmp_path):
    (tmp_path / "f").write_text("x")
    assert "--trace" in refused(shell, f"--trace {tmp_path}/f/t.json") and "below a file" in refused(
        shell, f"--trace {tmp_path}/f/t.json"
    )


def test_trace_that_exists_is_refused_not_overwritten(shell, tmp_path):
    existing = tmp_path / "t.json"
    existing.write_text("keep me")
    assert "already exists" in refused(shell, f"--trace {existing}")
    assert existing.read_text() == "keep me"


def test_trace_naming_an_empty_directory_writes_inside_it(shell, tmp_path):
    folder = tmp_path / "traces"
    folder.mkdir()
    r = profiled(shell, f"--trace {folder}")
    assert folder.is_dir() and os.path.dirname(r.trace_path) == str(folder)
    assert os.listdir(folder) == [os.path.basename(r.trace_path)] and r.trace_path.endswith(".pt.trace.json")


def test_trace_naming_a_full_directory_adds_a_file_and_keeps_the_rest(shell, tmp_path):
    (tmp_path / "old.json").write_text("old")
    r = profiled(shell, f"--trace {tmp_path}")
    assert (tmp_path / "old.json").read_text() == "old" and os.path.exists(r.trace_path)
    assert sorted(os.listdir(tmp_path)) == sorted(["old.json", os.path.basename(r.trace_path)])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_trace_in_an_unwritable_directory(shell, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert "not writable" in refused(shell, f"--trace {locked}/t.json")
    finally:
        locked.chmod(0o700)


def test_logdir_below_a_file(shell, tmp_path):
    (tmp_path / "f").write_text("x")
    assert "--logdir" in refused(shell, f"--logdir {tmp_path}/f/runs")


def test_logdir_that_is_a_file(shell, tmp_path):
    (tmp_path / "f").write_text("x")
    assert "is a file, not a directory" in refused(shell, f"--logdir {tmp_path}/f")


def test_run_named_as_an_existing_file(shell, tmp_path):
    (tmp_path / "r1").write_text("x")
    assert "--run 'r1'" in refused(shell, f"--logdir {tmp_path} --run r1")
    assert (tmp_path / "r1").read_text() == "x"


def test_run_that_already_holds_files(shell, tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "old.pt.trace.json").write_text("{}")
    assert "already holds files" in refused(shell, f"--logdir {tmp_path} --run r1")


def test_run_that_is_a_path(shell, tmp_path):
    assert "plain directory name" in refused(shell, f"--logdir {tmp_path} --run ../escape")


def test_trace_path_given_with_logdir_is_written_as_a_copy(shell, tmp_path):
    r = profiled(shell, f"--logdir {tmp_path}/tb --run r1 --trace {tmp_path}/copy.json")
    assert r.trace_path == str(tmp_path / "copy.json") and os.path.getsize(r.trace_path) > 0
    assert len(os.listdir(tmp_path / "tb" / "r1")) == 1


def test_api_refuses_an_existing_trace_naming_the_argument(tmp_path):
    (tmp_path / "t.json").write_text("x")
    assert one_line(ValueError, ProfileSession, trace_path=str(tmp_path / "t.json")).startswith("trace_path ")


def test_api_refuses_a_logdir_below_a_file_naming_the_argument(tmp_path):
    (tmp_path / "f").write_text("x")
    assert one_line(ValueError, ProfileSession, logdir=str(tmp_path / "f" / "tb")).startswith("logdir ")


def test_api_refuses_a_run_name_without_logdir():
    assert one_line(ValueError, ProfileSession, run_name="r1") == "run_name needs logdir"


def test_planted_symlink_at_the_default_trace_folder_is_not_followed(shell, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    elsewhere = tmp_path / "someone-elses"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / f"torchmagic-{os.getuid()}")
    assert "not a real directory" in refused(shell, "")
    assert os.listdir(elsewhere) == []


def test_default_trace_folder_is_private_and_its_mode_is_fixed(shell, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    top = tmp_path / f"torchmagic-{os.getuid()}"
    top.mkdir()
    top.chmod(0o777)  # ours but too open: tightened, not refused
    r = profiled(shell, "")
    assert os.path.dirname(r.trace_path) == str(top / "profiles") and os.path.exists(r.trace_path)
    for folder in (top, top / "profiles"):
        st = os.lstat(folder)
        assert stat.S_IMODE(st.st_mode) == 0o700 and not stat.S_ISLNK(st.st_mode)


# ---------------------------------------------------------------------- faults inside the cell
def test_cell_that_raises_stops_the_profiler_and_propagates(shell):
    res = shell.run_cell("%%profile --display none\nmodel(X)\nraise ValueError('boom')\n")
    assert isinstance(res.error_in_exec, ValueError) and not torch._C._autograd._profiler_enabled()
    r = torchmagic.last_profile()
    assert r.status == "failed" and r.error == "ValueError: boom" and r.op_count > 0 and os.path.exists(r.trace_path)


def test_ctrl_c_inside_the_cell(shell):
    shell.user_ns.pop("after", None)
    res = shell.run_cell(
        "%%profile --display none\nimport os, signal\nmodel(X)\nos.kill(os.getpid(), signal.SIGINT)\n"
        "for _ in range(10000):\n    pass\nafter = 1\n"
    )
    assert isinstance(res.error_in_exec, KeyboardInterrupt) and "after" not in shell.user_ns
    assert torchmagic.last_profile().status == "interrupted" and not torch._C._autograd._profiler_enabled()


def test_nested_profile_is_a_clear_error(shell):
    cell = "get_ipython().run_line_magic('profile', '--display none model(X)')\n"
    message = one_line(UsageError, shell.run_cell_magic, "profile", "--display none", cell)
    assert message.startswith("%profile: another torch profiler is already running")
    assert torchmagic.last_profile().status == "failed" and not torch._C._autograd._profiler_enabled()


def test_occupied_port_is_refused_fast_naming_it(shell, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        t = time.monotonic()
        message = refused(shell, f"--tensorboard --logdir {tmp_path} --port {port}")
    assert f"--port {port} is in use on 127.0.0.1" in message and time.monotonic() - t < 15


# ---------------------------------------------------------------------- user names are shown escaped
def test_module_class_name_with_html_is_escaped(shell):
    cell = (
        "Evil = type('<img src=x onerror=alert(1)>', (nn.Module,), {'forward': lambda self, x: x * 2})\n"
        "nn.Sequential(Evil(), nn.Linear(8, 2))(X)\n"
    )
    r = profiled(shell, "--with-modules", cell)
    assert any("<img src=x" in m for m in r.op_events["module"] if m)
    page = shell.display_formatter.format(r)[0]["text/html"]
    assert "<img src=x" not in page


def test_record_function_name_with_script_is_escaped(shell):
    cell = "with torch.profiler.record_function('<script>x</script>'):\n    model(X)\n"
    r = profiled(shell, "", cell)
    assert "<script>x</script>" in r.op_events["name"]
    page = shell.display_formatter.format(r)[0]["text/html"]
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script" not in page
