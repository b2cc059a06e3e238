"""Short endings: a stopped run ends the cell in one line, a shape error shows the user's frames and the
note; and a loop that prints never shares a line with the text display's progress line."""

from __future__ import annotations

import io
import re
import sys
import textwrap

import pytest

import torchmagic
from tests.conftest import global_hook_state
from torchmagic.core import TrainingStopped
from torchmagic.core.result import RunResult
from torchmagic.core.snapshot import Snapshot
from torchmagic.display.text import TextProgress

SETUP = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
criterion = nn.CrossEntropyLoss()
X, Y = torch.randn(64, 8), torch.randint(0, 2, (64,))
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 4)
    def forward(self, x):
        h = x.flatten(1)
        return self.fc1(h)
net = Net()
"""

STOPPING_LOOP = """
import os, signal
for epoch in range(50):
    for i in range(0, 64, 16):
        optimizer.zero_grad()
        loss = criterion(model(X[i:i + 16]), Y[i:i + 16])
        loss.backward()
        optimizer.step()
        if epoch == 0 and i == 16:
            STOP
"""

KILL = "os.kill(os.getpid(), signal.SIGINT)"
STOPS = {  # how the run is stopped after step 2, and the line the cell ends with
    "ctrl_c": (
        KILL,
        TrainingStopped,
        "TrainingStopped: training stopped after step 2 of ~200; the model holds that step's weights",
    ),
    "stop_request": (
        "torchmagic.core.monitor.active_monitor().stop_request.request()",
        TrainingStopped,
        "TrainingStopped: training stopped after step 2 of ~200; the model holds that step's weights",
    ),
    "ctrl_c_twice": (
        f"{KILL}; {KILL}",
        KeyboardInterrupt,
        "KeyboardInterrupt: training stopped at once after step 2 of ~200; a step in progress may be half done",
    ),
    "raised_by_the_loop": (
        "raise KeyboardInterrupt",
        KeyboardInterrupt,
        "KeyboardInterrupt: training stopped at once after step 2 of ~200; a step in progress may be half done",
    ),
}


def plain(text: str) -> str:
    """What a terminal shows, without the colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture
def setup_shell(shell):
    shell.run_cell(SETUP + "import torchmagic.core.monitor\n")
    return shell


@pytest.mark.parametrize("stop, kind, line", STOPS.values(), ids=STOPS)
def test_a_stopped_run_ends_the_cell_with_one_line(setup_shell, capsys, stop, kind, line):
    before = global_hook_state()
    result = setup_shell.run_cell("%%train --display none\n" + textwrap.dedent(STOPPING_LOOP).replace("STOP", stop))
    error = result.error_in_exec
    assert type(error) is kind and isinstance(error, KeyboardInterrupt)  # the cell ends in error: queued cells do not run
    assert torchmagic.last_run().status == "interrupted" and torchmagic.last_run().steps == 2
    assert plain(capsys.readouterr().out).splitlines() == [line]  # no traceback through torch's module calls
    assert global_hook_state() == before


def test_a_stop_in_the_last_step_ends_with_one_line_too(setup_shell, capsys):
    cell = "import torchmagic.core.monitor as m\nfor i in range(2):\n"
    cell += "    optimizer.zero_grad(); criterion(model(X), Y).backward(); optimizer.step()\n"
    cell += "    if i == 1: m.active_monitor().stop_request.request()\n"
    error = setup_shell.run_cell("%%train --display none\n" + cell).error_in_exec
    assert type(error) is TrainingStopped
    assert plain(capsys.readouterr().out).splitlines() == [
        "TrainingStopped: training stopped after step 2 of ~2; the model holds that step's weights"
    ]


def test_the_api_block_stopped_ends_with_one_line(setup_shell, capsys):
    cell = "import torchmagic\nwith torchmagic.train(model, optimizer, display='none'):\n"
    cell += textwrap.indent(textwrap.dedent(STOPPING_LOOP).replace("STOP", KILL), "    ")
    error = setup_shell.run_cell(cell).error_in_exec
    assert type(error) is TrainingStopped
    assert plain(capsys.readouterr().out).splitlines() == ["TrainingStopped: training stopped after step 2"]


def _published_html(shell, monkeypatch) -> list[str]:
    published: list[str] = []
    original = shell.display_pub.publish

    def publish(data, *args, **kwargs):
        published.append(data.get("text/html", ""))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(shell.display_pub, "publish", publish)
    return published


SHAPE_ERRORS = {
    "cell": "%%tensor_inspect\nx = torch.randn(2, 3)\ny = net(x)\n",
    "input": "%tensor_inspect net --input torch.randn(2, 3)",
}


@pytest.mark.parametrize("cell", SHAPE_ERRORS.values(), ids=SHAPE_ERRORS)
def test_a_shape_error_shows_the_users_frames_and_the_note(setup_shell, capsys, monkeypatch, cell):
    published = _published_html(setup_shell, monkeypatch)
    result = setup_shell.run_cell(cell, store_history=True)
    assert isinstance(result.error_in_exec, RuntimeError)
    out = plain(capsys.readouterr().out)
    traceback = out[out.index("RuntimeError") :]
    assert "return self.fc1(h)" in traceback and "in Net.forward" in traceback  # the user's own frames
    if cell.startswith("%%"):
        assert "----> 2 y = net(x)" in traceback
    note = result.error_in_exec.__notes__[0]
    assert note.startswith("Shape error in module `fc1`") and traceback.count(note) == 1
    assert "torchmagic/" not in traceback and "torch/nn/modules" not in traceback and "In[0]" not in traceback
    (html,) = [h for h in published if "tm-finding" in h]
    assert "Shape error in module" in html and "shape error</b>" not in html  # said once, not "shape error line 2: Shape error …"


def test_any_error_in_an_inspected_cell_shows_no_torchmagic_frame(setup_shell, capsys):
    result = setup_shell.run_cell("%%tensor_inspect\nimport torch.nn.functional as F\nF.softmax(torch.randn(3), dim=5)\n")
    assert isinstance(result.error_in_exec, IndexError)
    out = plain(capsys.readouterr().out)
    assert "F.softmax(torch.randn(3), dim=5)" in out and "torchmagic/" not in out


PRINTING_LOOP = """
for step in range(6):
    optimizer.zero_grad()
    loss = criterion(model(X), Y)
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item():.4f}")
    if step == 3:
        print("to stderr", file=sys.stderr)
        print("no newline, then", end=" ")
        print("the rest")
"""


def test_a_printing_loop_keeps_its_lines_beside_the_text_display(setup_shell, capsys):
    stdout, stderr = sys.stdout, sys.stderr
    result = setup_shell.run_cell("%%train --display text\nimport sys\n" + textwrap.dedent(PRINTING_LOOP))
    assert result.error_in_exec is None and torchmagic.last_run().steps == 6
    assert sys.stdout is stdout and sys.stderr is stderr  # the display's wrappers are gone
    captured = capsys.readouterr()
    lines = captured.out.split("\n")
    for step, loss in enumerate(torchmagic.last_run().history["loss"].tolist()):
        assert f"step {step} loss {loss:.4f}" in lines  # each of the loop's lines is a line of its own
    assert "no newline, then the rest" in lines and "to stderr" in captured.err.split("\n")
    assert "100%" in captured.out and "torchmagic: completed: 6 steps" in captured.out


def _snap(steps: int, final: bool = False) -> Snapshot:
    result = RunResult(total_steps=None)
    result.steps = steps
    return Snapshot(result, None, None, None, final)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True], ids=["headless", "terminal"])
def test_text_progress_ends_its_line_before_other_text(terminal, monkeypatch):
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(sys, "stderr", stream)
    progress = TextProgress(interval=0)
    progress(_snap(1))
    print("step 1 loss 0.7498")  # the loop's own progress
    progress(_snap(2))
    sys.stdout.write("partial ")  # a line the loop has not ended yet
    progress(_snap(3))
    print("done", file=sys.stderr)
    progress(_snap(3, final=True))
    assert sys.stdout is stream and sys.stderr is stream and progress.frozen
    text = stream.getvalue()
    if terminal:  # cleared, the loop's line, drawn again below it
        assert text.startswith("step 1\r      \rstep 1 loss 0.7498\nstep 1")
    else:
        assert text.startswith("step 1\nstep 1 loss 0.7498\nstep 2\npartial \nstep 3\ndone\n")
    shown = [part.split("\r")[-1] for part in text.split("\n")]  # what each line shows at the end
    assert "step 1 loss 0.7498" in shown and "done" in shown and shown[-2].startswith("torchmagic: ")


def test_text_progress_writes_through_a_kept_reference_after_the_run():
    stream = io.StringIO()
    saved = sys.stdout
    sys.stdout = stream
    try:
        progress = TextProgress(interval=0)
        progress(_snap(1))
        kept = sys.stdout  # what a loop keeps, e.g. contextlib.redirect_stdout's saved stream
        progress.freeze()
        assert sys.stdout is stream
        kept.write("later\n")
        sys.stdout = kept  # put back by the loop after the run: the next run still ends its line first
        again = TextProgress(interval=0)
        again(_snap(1))
        print("next run")
        again.freeze()
        assert sys.stdout is kept
    finally:
        sys.stdout = saved
    assert stream.getvalue() == "step 1\nlater\nstep 1\nnext run\n"


def test_a_printing_loop_keeps_its_lines_beside_the_dashboard(setup_shell, capsys, monkeypatch):
    from torchmagic.display.testing import recording_comms

    stdout = sys.stdout
    published = _published_html(setup_shell, monkeypatch)
    with recording_comms() as rec:
        result = setup_shell.run_cell("%%train --display widgets\nimport sys\n" + textwrap.dedent(PRINTING_LOOP))
    assert result.error_in_exec is None and sys.stdout is stdout
    lines = capsys.readouterr().out.split("\n")
    for step, loss in enumerate(torchmagic.last_run().history["loss"].tolist()):
        assert f"step {step} loss {loss:.4f}" in lines  # the cell's own output, not inside the dashboard
    assert rec.messages and not any("no newline, then the rest" in str(data) for _, data, _ in rec.messages)
    assert any(published)  # the frozen snapshot, in the dashboard's place


def test_a_logging_handler_on_stderr_ends_the_progress_line_too(monkeypatch):
    import logging

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logging.StreamHandler()  # made with sys.stderr as it is now, as a framework's at import
    logger = logging.getLogger("tm-test-framework")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        progress = TextProgress(interval=0)
        progress(_snap(0))
        logger.info("GPU available: False")
        progress(_snap(1, final=True))
        assert handler.stream is stream
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().startswith("step 0\nGPU available: False\nstep 1\n")
