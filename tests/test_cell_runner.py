"""Every magic's cell runs as the same cell would without the magic: IPython syntax, and what the cell
changes (warnings filters, ``sys.stdout``) stays changed; framework-only cells train; a cell that
trains nothing says so; a syntax error is itself."""

from __future__ import annotations

import re
import sys
import textwrap
import warnings

import pytest
import torch

import torchmagic
from tests.conftest import global_hook_state

SETUP = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
criterion = nn.CrossEntropyLoss()
X, Y = torch.randn(64, 8), torch.randint(0, 2, (64,))
"""

LOOP = """
for i in range(0, 64, 16):
    optimizer.zero_grad()
    loss = criterion(model(X[i:i + 16]), Y[i:i + 16])
    loss.backward()
    optimizer.step()
"""

MAGICS = {  # each cell magic's first line, with options that keep its output small
    "train": "%%train --display none",
    "profile": "%%profile --display none",
    "tensor_inspect": "%%tensor_inspect",
    "memory": "%%memory",
}


@pytest.fixture
def setup_shell(shell):
    shell.run_cell(SETUP)
    return shell


def plain(text: str) -> str:
    """What a terminal shows, without the colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def run(shell, first_line: str, body: str):
    return shell.run_cell(first_line + "\n" + textwrap.dedent(body))


@pytest.mark.parametrize("magic", MAGICS.values(), ids=MAGICS)
def test_shell_commands_line_magics_and_help_run_inside_the_cell(setup_shell, magic, capfd):
    body = "!echo hi-from-the-shell\n%time timed = 1 + 1\nX?\n" + LOOP
    result = run(setup_shell, magic, body)
    assert result.error_in_exec is None, result.error_in_exec
    out = capfd.readouterr().out
    assert "hi-from-the-shell" in out  # !echo
    assert "Wall time" in out and setup_shell.user_ns["timed"] == 2  # %time ran the statement here
    assert "Type:" in out and "Tensor" in out  # X? showed the object's help
    assert "loss" in setup_shell.user_ns  # the loop ran in the notebook's namespace


@pytest.mark.parametrize("magic", MAGICS.values(), ids=MAGICS)
def test_warnings_filters_the_cell_adds_stay(setup_shell, magic):
    before = list(warnings.filters)
    body = "import warnings\nwarnings.filterwarnings('ignore', message='tm-cell-filter')\n" + LOOP
    try:
        assert run(setup_shell, magic, body).error_in_exec is None
        added = [f for f in warnings.filters if f[1] is not None and f[1].pattern == "tm-cell-filter"]
        assert len(added) == 1 and added[0][0] == "ignore"
        assert list(warnings.filters) == [added[0], *before]  # the run's own filters are gone, no other changed
    finally:
        warnings.filters[:] = before
        warnings._filters_mutated()  # type: ignore[attr-defined]


def test_a_filter_the_cell_removes_stays_removed(setup_shell):
    warnings.filterwarnings("default", message="tm-removed-by-the-cell")
    before = list(warnings.filters)
    body = "import warnings\nwarnings.filters[:] = [f for f in warnings.filters if 'tm-removed' not in str(f[1])]\n"
    try:
        assert run(setup_shell, "%%train --display none", body + LOOP).error_in_exec is None
        assert list(warnings.filters) == before[1:]
    finally:
        warnings.filters[:] = before[1:]
        warnings._filters_mutated()  # type: ignore[attr-defined]


def test_warnings_are_still_counted_and_shown_once(setup_shell, recwarn):
    body = "import warnings\n" + LOOP.replace("optimizer.step()", "optimizer.step()\n    warnings.warn('tm-counted')")
    assert run(setup_shell, "%%train --display none", body).error_in_exec is None
    alerts = [a for a in torchmagic.last_run().alerts if "tm-counted" in str(a)]
    assert len(alerts) == 1 and "(x4)" in str(alerts[0])  # four warnings, one alert that counts them
    assert [str(w.message) for w in recwarn if "tm-counted" in str(w.message)] == ["tm-counted"]  # shown once


@pytest.mark.parametrize("display", ["none", "text"])
def test_a_stdout_the_cell_installs_stays(setup_shell, display):
    original = sys.stdout
    body = "import io, sys\nreplaced = io.StringIO()\nsys.stdout = replaced\n" + LOOP + "print('into the new stdout')\n"
    try:
        assert run(setup_shell, f"%%train --display {display}", body).error_in_exec is None
        replaced = setup_shell.user_ns["replaced"]
        assert sys.stdout is replaced and "into the new stdout\n" in replaced.getvalue()
    finally:
        sys.stdout = original


@pytest.mark.parametrize("magic", ["%%profile --display none", "%%memory", "%%tensor_inspect"])
def test_a_stdout_the_cell_installs_stays_under_other_magics(setup_shell, magic):
    original = sys.stdout
    try:
        assert run(setup_shell, magic, "import io, sys\nreplaced = io.StringIO()\nsys.stdout = replaced\n").error_in_exec is None
        assert sys.stdout is setup_shell.user_ns["replaced"]
    finally:
        sys.stdout = original


MAIN = """
def train_one_epoch():
    seen = []
    for i in range(0, 64, 16):
        optimizer.zero_grad()
        loss = criterion(model(X[i:i + 16]), Y[i:i + 16])
        loss.backward()
        optimizer.step()
        seen.append(loss.item())
    return seen

def main():
    global losses
    losses = train_one_epoch() + train_one_epoch()
"""


def test_a_cell_that_only_calls_main_is_monitored(setup_shell, capsys):
    setup_shell.run_cell(MAIN)
    before = global_hook_state()
    result = setup_shell.run_cell("%%train --display none\nmain()\n")
    assert result.error_in_exec is None, result.error_in_exec
    r = torchmagic.last_run()
    assert r.status == "completed" and r.steps == 8
    assert r.history["loss"].tolist() == setup_shell.user_ns["losses"]  # the same floats, step by step
    assert r.history["step"].tolist() == list(range(1, 9))
    assert "trained nothing" not in capsys.readouterr().out
    assert global_hook_state() == before


def test_a_framework_style_cell_with_a_model_made_inside_is_monitored(setup_shell):
    cell = """
    class Trainer:
        def __init__(self, steps):
            self.steps = steps
        def train(self):
            net = nn.Linear(8, 2)
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            for _ in range(self.steps):
                opt.zero_grad(); criterion(net(X), Y).backward(); opt.step()
    trainer = Trainer(3)
    """
    setup_shell.run_cell(textwrap.dedent(cell))
    assert setup_shell.run_cell("%%train --display none\ntrainer.train()\n").error_in_exec is None
    assert torchmagic.last_run().status == "completed" and torchmagic.last_run().steps == 3


def test_a_cell_that_trains_nothing_says_so_in_one_line(setup_shell, capsys):
    result = setup_shell.run_cell("%%train --display none\nanswer = 6 * 7\n")
    assert result.error_in_exec is None and setup_shell.user_ns["answer"] == 42
    said = [line for line in capsys.readouterr().out.splitlines() if "trained nothing" in line]
    assert said == ["%%train: the cell trained nothing (no backward() call and no optimizer step ran)"]
    assert torchmagic.last_run().status == "completed" and torchmagic.last_run().steps == 0


def test_a_syntax_error_is_a_syntax_error_not_a_missing_model(setup_shell, capsys):
    result = setup_shell.run_cell("%%train\nfor i in range(3)\n    answer = i\n")
    assert type(result.error_in_exec) is SyntaxError and result.error_in_exec.lineno == 1
    out = plain(capsys.readouterr().out)
    assert "SyntaxError" in out and "no model" not in out


def test_tracebacks_name_the_running_cell(setup_shell, capsys):
    setup_shell.run_cell("%%train --display none\n" + textwrap.dedent(LOOP) + "1 / 0\n", store_history=True)
    out = plain(capsys.readouterr().out)
    count = setup_shell.execution_count - 1
    assert f"In[{count}]" in out and "In[0]" not in out
    assert "ZeroDivisionError" in out and "torchmagic" not in out.replace("torchmagic:", "")


def test_a_users_autograd_error_shows_no_torchmagic_frame(setup_shell, capsys):
    body = "out = model(X).sum().detach()\nout.backward()\n"
    result = run(setup_shell, "%%train --display none", body)
    assert isinstance(result.error_in_exec, RuntimeError) and "does not require grad" in str(result.error_in_exec)
    out = plain(capsys.readouterr().out)
    assert "out.backward()" in out and "does not require grad" in out
    assert "torchmagic/" not in out and "get_ipython()" not in out
    assert torch.is_grad_enabled()


def test_an_exception_that_renders_itself_keeps_its_own_rendering(setup_shell, capsys):
    cell = "class Remote(Exception):\n    def _render_traceback_(self):\n        return ['remote: it failed there']\n"
    setup_shell.run_cell(cell)
    result = run(setup_shell, "%%train --display none", "raise Remote()\n")
    assert type(result.error_in_exec).__name__ == "Remote"
    assert plain(capsys.readouterr().out).splitlines() == ["remote: it failed there"]


@pytest.mark.parametrize("magic", ["train", "profile", "memory"])
def test_a_final_expression_is_shown_as_without_the_magic_and_a_semicolon_hides_it(setup_shell, magic, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(setup_shell.display_pub, "publish", lambda data, *a, **k: shown.append(data.get("text/plain", "")))
    result = run(setup_shell, MAGICS[magic], LOOP + "'final value ' + str(len(X))\n")
    assert result.error_in_exec is None, result.error_in_exec
    assert "'final value 64'" in shown
    shown.clear()
    result = run(setup_shell, MAGICS[magic], LOOP + "'hidden ' + str(len(X));\n")
    assert result.error_in_exec is None and not any("hidden" in text for text in shown), shown
