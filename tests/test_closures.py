"""Steps whose backward() runs inside optimizer.step(closure), and steps counted from step 1 when the
optimizer is created inside the cell: through a real IPython shell, numbers unchanged by the monitor."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import close_shell, global_hook_state, new_shell

SETUP = """
import torch, torchmagic
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
g = torch.Generator().manual_seed(1)
x, y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
"""

LBFGS_LOOP = """
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
returned, calls, first_grad_norms = [], [], []
def closure():
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    calls[-1] += 1
    if calls[-1] == 1:
        first_grad_norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())
    return loss
for _ in range(6):
    calls.append(0)
    returned.append(optimizer.step(closure).item())
"""

SGD_CLOSURE_LOOP = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
grad_norms = []
def closure():
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    grad_norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())
    return loss
for _ in range(5):
    optimizer.step(closure)
"""

ACCUMULATING_LOOP = """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
step_losses = []
for step in range(8):
    optimizer.zero_grad()
    total = 0.0
    for xb, yb in ((x[:16], y[:16]), (x[16:], y[16:])):
        loss = torch.nn.functional.mse_loss(model(xb), yb) / 2
        loss.backward()
        total += loss.item()
    optimizer.step()
    step_losses.append(total)
"""


@pytest.fixture
def sh():
    shell = new_shell()
    shell.run_line_magic("load_ext", "torchmagic")
    yield shell
    shell.run_line_magic("unload_ext", "torchmagic")
    close_shell(shell)


def _run(sh, cell: str, magic: str | None = "--every 1 --display none") -> None:
    result = sh.run_cell(f"%%train {magic}\n{cell}" if magic is not None else cell)
    result.raise_error()


def _weights(sh) -> list[torch.Tensor]:
    return [p.detach().clone() for p in sh.user_ns["model"].parameters()]


def _bare(sh, loop: str) -> list[torch.Tensor]:
    sh.run_cell(SETUP).raise_error()
    _run(sh, loop, magic=None)
    return _weights(sh)


def test_lbfgs_step_has_its_first_evaluation_loss_its_own_gradients_and_its_evaluation_count(sh):
    bare = _bare(sh, LBFGS_LOOP)
    bare_returned = list(sh.user_ns["returned"])
    sh.run_cell(SETUP).raise_error()
    before = global_hook_state()
    _run(sh, LBFGS_LOOP)
    run = sh.user_ns["torchmagic"].last_run()
    ns = sh.user_ns
    assert run.status == "completed" and run.steps == 6
    cols = run.columns
    assert list(cols["loss"]) == ns["returned"] == bare_returned  # not the sum of the re-evaluations
    assert list(cols["evaluations"]) == ns["calls"] and max(ns["calls"]) > 1
    assert list(cols["grad_norm"]) == pytest.approx(ns["first_grad_norms"], rel=1e-5)  # step 1 has one too
    assert all(torch.equal(a, b) for a, b in zip(_weights(sh), bare))
    assert global_hook_state() == before
    assert torch.optim.Optimizer.__init__.__qualname__ == "Optimizer.__init__"


def test_a_closure_steps_statistics_are_of_that_steps_gradients(sh):
    bare = _bare(sh, SGD_CLOSURE_LOOP)
    sh.run_cell(SETUP).raise_error()
    _run(sh, SGD_CLOSURE_LOOP)
    run = sh.user_ns["torchmagic"].last_run()
    assert run.steps == 5 and list(run.columns["evaluations"]) == [1] * 5
    assert list(run.columns["grad_norm"]) == pytest.approx(sh.user_ns["grad_norms"], rel=1e-5)
    assert not [a for a in run.alerts if a.kind in ("exploding_grad", "vanishing_grad")]
    assert all(torch.equal(a, b) for a, b in zip(_weights(sh), bare))


def test_an_optimizer_created_in_the_cell_does_not_split_the_first_accumulated_step(sh):
    bare = _bare(sh, ACCUMULATING_LOOP)
    sh.run_cell(SETUP).raise_error()
    _run(sh, ACCUMULATING_LOOP)
    run = sh.user_ns["torchmagic"].last_run()
    assert run.steps == 8 and list(run.columns["step"]) == list(range(1, 9))
    assert list(run.columns["loss"]) == pytest.approx(sh.user_ns["step_losses"], rel=1e-6)
    assert "evaluations" not in run.columns
    assert all(torch.equal(a, b) for a, b in zip(_weights(sh), bare))


def test_without_any_optimizer_each_backward_is_still_a_step(sh):
    sh.run_cell(SETUP).raise_error()
    _run(sh, "for _ in range(4):\n    torch.nn.functional.mse_loss(model(x), y).backward()\n")
    assert sh.user_ns["torchmagic"].last_run().steps == 4


def test_a_stop_requested_in_a_closure_loop_stops_before_the_next_step(sh):
    sh.run_cell(SETUP).raise_error()
    cell = SGD_CLOSURE_LOOP.replace(
        "    return loss",
        "    if len(grad_norms) == 3:\n        torchmagic.core.active_monitor().stop_request.request()\n    return loss",
    )
    result = sh.run_cell(f"%%train --display none\n{cell}")
    run = sh.user_ns["torchmagic"].last_run()
    assert run.status == "interrupted" and run.steps == 3
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
