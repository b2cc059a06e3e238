"""``--logdir`` writes what torch-tb-profiler reads; ``--tensorboard`` serves it on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import urllib.request

import pytest

pytest.importorskip("torch_tb_profiler")

from torch_tb_profiler import consts  # noqa: E402
from torch_tb_profiler.profiler.data import RunProfileData  # noqa: E402
from torch_tb_profiler.profiler.run_generator import RunGenerator  # noqa: E402

from torchmagic.core import tbexport  # noqa: E402

CELL = "for _ in range(3):\n    opt.zero_grad()\n    model(x).sum().backward()\n    opt.step()\n"


@pytest.fixture
def ns(shell, tiny_setup):
    model, opt, x, y = tiny_setup
    shell.user_ns.update(model=model, opt=opt, x=x, y=y)
    return shell.user_ns


def test_logdir_run_loads_in_the_plugin_with_overview_operators_and_stacks(shell, ns, tmp_path):
    logdir = tmp_path / "tb"
    r = shell.run_cell_magic("profile", f"--steps 2 --with-stack --logdir {logdir} --run cnn --display none", CELL)
    assert r.logdir == str(logdir) and r.run_dir == str(logdir / "cnn")
    files = os.listdir(logdir / "cnn")
    assert len(files) == 1 and r.trace_path == str(logdir / "cnn" / files[0])
    assert sorted(os.listdir(logdir)) == ["cnn"]  # the staging directory is gone
    match = consts.WORKER_PATTERN.match(files[0])
    assert match and match.group(1) == tbexport.worker_name()

    # the plugin's own parsing and view generation (what its RunLoader runs per worker)
    data = RunProfileData.parse(match.group(1), None, r.trace_path, str(tmp_path / "cache"))
    profile = RunGenerator(match.group(1), None, data).generate_run_profile()
    assert {"overall", "operator", "trace"} <= {v.name for v in profile.views}
    assert len(profile.overview["steps"]["rows"]) == 2  # two ProfilerStep ranges
    ops = {row["name"]: row for row in profile.operation_table_by_name["data"]}
    assert ops["aten::addmm"]["calls"] == r.table[r.table.name == "aten::addmm"].iloc[0].calls
    trace = json.loads(open(r.trace_path).read())
    assert any("Call stack" in e.get("args", {}) for e in trace["traceEvents"] if e.get("cat") == "cpu_op")


def test_write_run_moves_a_complete_file_into_place(tmp_path):
    seen_during_write = []

    def export(path: str) -> None:
        with open(path, "w") as f:
            f.write('{"traceEvents": []}')
        seen_during_write.append(sorted(os.listdir(tmp_path)))
        assert not consts.WORKER_PATTERN.match(os.path.basename(path))  # the plugin ignores it

    run_dir, final = tbexport.write_run(export, str(tmp_path), "r")
    assert seen_during_write[0][0].startswith(tbexport.STAGING_PREFIX) and "r" not in seen_during_write[0]
    assert os.listdir(tmp_path) == ["r"] and open(final).read() == '{"traceEvents": []}'


@pytest.mark.slow
def test_tensorboard_serves_the_plugin_on_localhost_and_stops(shell, ns, tmp_path):
    logdir = tmp_path / "tb"
    r = shell.run_cell_magic("profile", f"--steps 2 --logdir {logdir} --run r1 --tensorboard --display none", CELL)
    try:
        assert r.tensorboard_url.startswith("http://127.0.0.1:") and r.tensorboard_url.endswith("#pytorch_profiler")
        server = tbexport._servers[str(logdir)]
        base = server.url + "data/plugin/pytorch_profiler/"
        deadline, runs = time.monotonic() + 120, []
        while time.monotonic() < deadline and "r1" not in runs:
            with urllib.request.urlopen(base + "runs", timeout=10) as resp:
                runs = json.load(resp)["runs"]
            time.sleep(1)
        assert "r1" in runs
        worker = tbexport.worker_name()
        for view in ("overview", "operation/table"):
            url = f"{base}{view}?run=r1&worker={worker}&span=1&group_by=Operation"
            with urllib.request.urlopen(url, timeout=30) as resp:
                assert resp.status == 200 and json.load(resp)
    finally:
        process = tbexport._servers[str(logdir)].process
        tbexport.stop_all()
    assert process.poll() is not None


def test_tensorboard_that_exits_at_start_reports_its_last_stderr_line_at_once(tmp_path, monkeypatch):
    script = "import sys; sys.stderr.write('starting\\nE0101 cannot read the log directory\\n'); sys.exit(3)"
    monkeypatch.setattr(tbexport.TensorBoard, "command", lambda self: [sys.executable, "-c", script])
    t = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        tbexport.TensorBoard(str(tmp_path)).start()
    assert str(info.value) == "TensorBoard exited at start (code 3): E0101 cannot read the log directory"
    assert time.monotonic() - t < 15


def test_tensorboard_message_points_to_the_offline_views(shell, ns, tmp_path, monkeypatch, capsys):
    class Fake:
        profiler_url = "http://127.0.0.1:1/#pytorch_profiler"

    monkeypatch.setattr(tbexport, "serve", lambda logdir, port=None: Fake())
    r = shell.run_cell_magic("profile", f"--logdir {tmp_path} --tensorboard --display none", "model(x)\n")
    out = capsys.readouterr().out
    assert r.tensorboard_url == Fake.profiler_url and "Google Charts from the internet" in out
    assert "torchmagic.last_profile()" in out


def test_default_tensorboard_logdir_is_private(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    logdir = tbexport.default_logdir()
    assert logdir == str(tmp_path / f"torchmagic-{os.getuid()}" / "tensorboard")
    assert stat.S_IMODE(os.lstat(logdir).st_mode) == 0o700
