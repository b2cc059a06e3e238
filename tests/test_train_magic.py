"""%%train through a real IPython shell: options, name resolution, errors, exit paths, bitwise identity."""

from __future__ import annotations

import textwrap

import pytest
import torch
from IPython.core.error import UsageError

import torchmagic
from tests.conftest import global_hook_state

SETUP = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
X, Y = torch.randn(96, 8), torch.randint(0, 2, (96,))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=32, shuffle=True)
"""

LOOP = """
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
"""


def run(shell, source: str):
    result = shell.run_cell(textwrap.dedent(source))
    return result


def test_train_runs_the_cell_and_reads_the_loop_length(shell, capsys):
    run(shell, SETUP)
    result = run(shell, "%%train\n" + LOOP)
    assert result.error_in_exec is None
    r = torchmagic.last_run()
    assert r.status == "completed" and r.steps == 6 and r.total_steps == 6
    assert len(r.history) == 6
    assert "loss" in shell.user_ns  # the cell ran in the notebook's namespace
    out = capsys.readouterr().out
    assert "100%" in out and "completed: 6 steps" in out


def test_help_documents_the_options(shell):
    doc = shell.find_cell_magic("train").__doc__
    for option in ("--model", "--optimizer", "--every", "--histograms", "--total", "--display"):
        assert option in doc


@pytest.mark.parametrize(
    "line, message",
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("-m nothere", "name 'nothere' is not defined"),
        ("-m X", "'X' is a Tensor, not a torch.nn.Module"),
        ("-o model", "'model' is a Sequential, not a torch.optim.Optimizer"),
        ("--every -2", "--every must be 0 or more"),
        ("--total 0", "--total must be positive"),
        ("--display fancy", "invalid choice"),
    ],
)
def test_bad_options_give_one_line_usage_errors(shell, line, message):
    run(shell, SETUP)
    before = global_hook_state()
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        shell.run_cell_magic("train", line, LOOP)
    assert "\n" not in str(info.value)
    assert global_hook_state() == before


def test_an_empty_cell_is_a_usage_error_and_a_cell_without_a_model_runs(shell, capsys):
    run(shell, SETUP)
    with pytest.raises(UsageError, match="the cell is empty"):
        shell.run_cell_magic("train", "", "   \n")
    shell.run_cell_magic("train", "", "x = 1\n")  # what it trains could only show at run time
    assert shell.user_ns["x"] == 1 and "the cell trained nothing" in capsys.readouterr().out


def test_explicit_model_and_optimizer_names(shell):
    run(shell, SETUP)
    run(shell, "net = model\nopt = optimizer\n")
    assert (
        run(shell, "%%train -m net -o opt --every 2\n" + LOOP.replace("model", "net").replace("optimizer", "opt")).error_in_exec
        is None
    )
    r = torchmagic.last_run()
    assert r.steps == 6 and set(r.layer_stats["step"]) == {1, 2, 4, 6}


def test_the_cells_exception_propagates_unchanged(shell):
    run(shell, SETUP)
    before = global_hook_state()
    result = run(
        shell, "%%train\n" + LOOP.replace("optimizer.step()", "optimizer.step()\n        raise ValueError('from the cell')")
    )
    assert type(result.error_in_exec) is ValueError and str(result.error_in_exec) == "from the cell"
    assert torchmagic.last_run().status == "failed" and torchmagic.last_run().steps == 1
    assert global_hook_state() == before


def test_traceback_hides_torchmagic_frames(shell, capsys):
    run(shell, SETUP)
    run(shell, "%%train\n" + LOOP.replace("optimizer.step()", "optimizer.step()\n        1 / 0"))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "ZeroDivisionError" in text
    assert "torchmagic/ipython" not in text and "torchmagic/api.py" not in text


def test_unload_removes_the_magic(shell):
    shell.run_line_magic("unload_ext", "torchmagic")
    assert "train" not in shell.magics_manager.magics["cell"]
    shell.run_line_magic("load_ext", "torchmagic")
    assert "train" in shell.magics_manager.magics["cell"]


CNN_SETUP = """
import torch, torch.nn as nn
torch.manual_seed(1234)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1),
                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()
data = torch.utils.data.TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))
loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
"""

LSTM_SETUP = """
import torch, torch.nn as nn
torch.manual_seed(1234)
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True, dropout=0.2, num_layers=2)
        self.head = nn.Linear(32, 3)
    def forward(self, tokens):
        out, (h, c) = self.lstm(self.embed(tokens))
        return self.head(h[-1])
model = Classifier()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = nn.CrossEntropyLoss()
data = torch.utils.data.TensorDataset(torch.randint(0, 50, (48, 12)), torch.randint(0, 3, (48,)))
loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
"""

RECORDING_LOOP = """
losses = []
for epoch in range(2):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().clone())
"""


@pytest.mark.parametrize("setup", [CNN_SETUP, LSTM_SETUP], ids=["cnn", "lstm"])
def test_instrumentation_never_changes_the_numbers(shell, setup):
    def outcome(magic: str):
        run(shell, setup)
        assert run(shell, magic + RECORDING_LOOP).error_in_exec is None
        ns = shell.user_ns
        return (torch.stack(ns["losses"]), [p.detach().clone() for p in ns["model"].parameters()], torch.get_rng_state())

    bare_losses, bare_params, bare_rng = outcome("")
    losses, params, rng = outcome("%%train --every 1 --histograms\n")
    assert torch.equal(bare_losses, losses)
    assert all(torch.equal(a, b) for a, b in zip(bare_params, params))
    assert torch.equal(bare_rng, rng)
    assert torchmagic.last_run().steps == (8 if "Conv2d" in setup else 12)


def test_interrupt_stops_after_the_step_and_stops_queued_cells(shell):
    from torchmagic.core import TrainingStopped

    run(shell, SETUP)
    before = global_hook_state()
    cell = """%%train
import os, signal
step = 0
for epoch in range(50):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        step += 1
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what the kernel's stop button sends
"""
    result = run(shell, cell)
    assert isinstance(result.error_in_exec, TrainingStopped)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # so the queued cells do not run
    r = torchmagic.last_run()
    assert r.status == "interrupted" and r.steps == 4 and shell.user_ns["step"] == 4
    assert global_hook_state() == before
