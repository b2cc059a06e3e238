"""Non-finite values through ``%%train`` in a real IPython shell: the alert names the step a value
appeared at (or the steps it appeared between, where gradients were not read) and the module whose
code made it, a functional op in a model's own ``forward`` included; one alert per cause; the
loop's numbers bitwise those of the same loop run bare."""

from __future__ import annotations

import textwrap

import torch

import torchmagic
from torchmagic.core.naming import MODEL_LABEL
from torchmagic.display import panels

SETUP = """
import torch, torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 1)
        self.mode = None  # set by the loop: what goes wrong in this forward
        self.gate = nn.Parameter(torch.tensor([-1.0]))  # used only through a branch torch.where never takes

    def forward(self, x):
        h = self.fc1(x)
        if self.mode == "nan_gradient":  # a finite value, a NaN gradient: sqrt of negatives in the branch not taken
            h = torch.where(h.abs() < 1e9, h, torch.sqrt(-h.abs() - 1))
        if self.mode == "log":
            h = torch.log(h)  # NaN where h < 0
        if self.mode == "masked_gate":  # NaN gradient of gate alone; the loss never depends on it
            h = h + torch.where(torch.zeros_like(self.gate, dtype=torch.bool), self.gate.sqrt(), 0.0)
        return self.fc2(h)

def fresh():
    global net, optimizer
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

x, y = torch.randn(16, 6), torch.randn(16, 1)
"""


def loop(mode: str, when: str, steps: int = 12, guard: bool = False, bias_nan_at: int | None = None) -> str:
    """The loop of a cell: ``net.mode = mode`` on the steps where ``when`` holds (``i`` counts from 1)."""
    inject = ""
    if bias_nan_at is not None:
        inject = f"    if i == {bias_nan_at}:\n        with torch.no_grad():\n            net.fc2.bias.fill_(float('nan'))\n"
    step = "    if torch.isfinite(loss):\n        optimizer.step()\n" if guard else "    optimizer.step()\n"
    return (
        f"losses = []\nfor i in range(1, {steps + 1}):\n    net.mode = {mode!r} if {when} else None\n{inject}"
        "    optimizer.zero_grad()\n    loss = nn.functional.mse_loss(net(x), y)\n    loss.backward()\n"
        f"{step}    losses.append(loss.detach().clone())\n"
    )


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.int32)


def train(shell, options: str, body: str):
    """Run ``body`` under ``%%train options`` and the same loop bare; their numbers must be bitwise equal."""
    shell.run_cell(textwrap.dedent(SETUP)).raise_error()
    shell.run_cell("fresh()").raise_error()
    shell.run_cell(f"%%train --display none {options}\n{body}").raise_error()
    result = torchmagic.last_run()
    ns = shell.user_ns
    monitored = [*ns["losses"], *(p.detach().clone() for p in ns["net"].parameters())]
    shell.run_cell("fresh()").raise_error()
    shell.run_cell(body).raise_error()
    bare = [*ns["losses"], *(p.detach().clone() for p in ns["net"].parameters())]
    assert len(monitored) == len(bare)
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(monitored, bare))
    return result


def _nonfinite(result):
    alerts = [a for a in result.alerts if a.kind == "nonfinite"]
    assert len(alerts) == 1, alerts  # one cause, one alert: what follows from it counts on it
    assert len(result.alerts) == 1, result.alerts
    return alerts[0]


def test_a_nan_gradient_at_step_3_is_reported_between_steps_3_and_4_under_the_default_schedule(shell):
    result = train(shell, "", loop("nan_gradient", "i == 3"))
    losses = result.history["loss"].tolist()
    assert all(v == v for v in losses[:3]) and all(v != v for v in losses[3:])  # the loss turns NaN at step 4
    alert = _nonfinite(result)
    lo, hi = alert.details["between"]
    assert lo <= 3 <= hi and (lo, hi) == (3, 4)
    assert alert.step == 4 and alert.module == "fc1"
    assert "parameter fc1.weight is non-finite at step 4, and step 3's loss was finite" in alert.message
    assert "in that step's update (a non-finite gradient)" in alert.message
    assert alert.count == 9  # steps 4 to 12, each counted once (the gradient read at step 10 included)


def test_a_nan_gradient_that_never_reaches_the_loss_says_between_which_reads_it_appeared(shell):
    result = train(shell, "", loop("masked_gate", "i >= 3"))
    assert all(v == v for v in result.history["loss"])  # every loss finite: nothing shows before a read
    alert = _nonfinite(result)
    assert (alert.step, alert.module, alert.details["between"]) == (10, MODEL_LABEL, (2, 10))
    assert alert.message.startswith("non-finite gradient of gate read at step 10")
    assert "those of step 1 were finite, so it appeared between steps 2 and 10" in alert.message

    exact = train(shell, "--every 1", loop("masked_gate", "i >= 3"))
    alert = _nonfinite(exact)
    assert (alert.step, alert.details["between"], alert.message) == (3, (3, 3), "non-finite gradient of gate")


def test_torch_log_in_the_models_forward_is_blamed_on_the_model_not_the_next_module(shell):
    result = train(shell, "--every 1", loop("log", "i == 3"))
    alert = _nonfinite(result)
    assert (alert.step, alert.module) == (3, MODEL_LABEL)  # as the dashboard names the model itself
    assert alert.message == "non-finite value first made in Net.forward itself, not in a submodule"
    assert f"step 3 in <code>{MODEL_LABEL}</code>: non-finite value first made in Net.forward" in panels.alerts(result)
    assert MODEL_LABEL in panels.layers(result)  # the same name as the model's row in the layer table


def test_torch_log_on_an_unwatched_step_is_located_on_the_next_watched_forward(shell):
    result = train(shell, "", loop("log", "i >= 3", guard=True))  # the loop skips updates whose loss is not finite
    alert = _nonfinite(result)
    assert (alert.step, alert.module, alert.details["located_at"]) == (3, MODEL_LABEL, 3)
    assert alert.message == (
        "non-finite loss first seen at step 3, an unwatched step; located in a later forward of that step, watched: "
        "non-finite value first made in Net.forward itself, not in a submodule"
    )


def test_a_nan_in_a_leaf_linear_is_still_blamed_on_that_linear(shell):
    watched = _nonfinite(train(shell, "--every 1", loop("none", "False", bias_nan_at=3)))
    assert (watched.step, watched.module, watched.message) == (3, "fc2", "non-finite activation first seen in fc2")
    unwatched = _nonfinite(train(shell, "", loop("none", "False", bias_nan_at=3)))
    assert (unwatched.step, unwatched.module, unwatched.details["between"]) == (3, "fc2", (2, 3))
    assert unwatched.message.startswith("parameter fc2.bias is non-finite at step 3, and step 2's loss was finite")


BLOCKS = """
import torch, torch.nn as nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return torch.log(self.fc(x))  # NaN where fc's output is negative

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 6), Block(), nn.Linear(6, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(16, 6), torch.randn(16, 1)
"""


def test_a_functional_op_in_a_submodule_is_blamed_on_that_submodule(shell):
    shell.run_cell(textwrap.dedent(BLOCKS)).raise_error()
    body = "optimizer.zero_grad()\nnn.functional.mse_loss(model(x), y).backward()\noptimizer.step()\n"
    shell.run_cell(f"%%train --display none\n{body}").raise_error()
    alert = _nonfinite(torchmagic.last_run())
    assert (alert.step, alert.module) == (1, "1")
    assert alert.message == "non-finite value first made in Block.forward of 1 itself, not in a submodule"


HUGE = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Linear(4, 1)
with torch.no_grad():
    model.weight.fill_(1e25)  # finite; its L2 norm in float32 would overflow
y = torch.zeros(8, 1)
batches = [torch.full((8, 4), 1e-30), torch.full((8, 4), 1e20), torch.full((8, 4), 1e20)]
"""


def test_a_finite_parameter_near_1e25_is_not_called_non_finite(shell):
    shell.run_cell(textwrap.dedent(HUGE)).raise_error()
    body = "for x in batches:\n    model.zero_grad()\n    nn.functional.mse_loss(model(x), y).backward()\n"
    shell.run_cell(f"%%train --display none --every 0\n{body}").raise_error()
    result = torchmagic.last_run()
    losses = result.history["loss"].tolist()
    assert losses[0] < float("inf") and losses[1:] == [float("inf")] * 2  # 4e45 overflows float32 from step 2
    alert = _nonfinite(result)  # step 2 is not watched: its parameters are checked, and are finite
    assert (alert.step, alert.module, alert.details["located_at"]) == (2, MODEL_LABEL, 3)
    assert alert.message.endswith("non-finite activation first seen in (model)") and "parameter" not in alert.message
