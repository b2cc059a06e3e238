"""Several optimizers in one %%train cell: a GAN's D and G steps, one optimizer per layer.

Through a real IPython shell: the history names each step's optimizer and iteration, the live
dashboard streams a loss and a learning-rate curve per optimizer, the frozen snapshot draws them
with the optimizers' names, progress follows the loop's iterations, and the loop's numbers are
bitwise those of the same loop run without the monitor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from IPython.utils.capture import capture_output

import torchmagic
import torchmagic.display.dashboard  # noqa: F401 - bokeh's import adds warning filters: before the hook state is taken
from tests.conftest import global_hook_state
from torchmagic.display.series import ema
from torchmagic.display.testing import recording_comms

ITERATIONS = 24

GAN_SETUP = """
import torch, torch.nn as nn
torch.manual_seed(0)
G = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
D = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
opt_g = torch.optim.Adam(G.parameters(), lr=2e-3)
bce = nn.BCEWithLogitsLoss()
real = torch.randn(ITERATIONS * 16, 2) * 0.3 + torch.tensor([2.0, -1.0])
batches = list(real.split(16))
losses, fractions = [], []
"""

GAN_LOOP = """
for x in batches:
    z = torch.randn(16, 2)
    fake = G(z)
    opt_d.zero_grad()
    loss_d = bce(D(x), torch.ones(16, 1)) + bce(D(fake.detach()), torch.zeros(16, 1))
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad()
    loss_g = bce(D(fake), torch.ones(16, 1))
    loss_g.backward()
    opt_g.step()
    losses += [loss_d.item(), loss_g.item()]
    monitor = torchmagic.core.monitor.active_monitor()
    if monitor is not None:
        fractions.append(monitor.progress()[0])
"""

LAYERS_SETUP = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
layers = [model[0], model[2], model[4]]
opts = [torch.optim.SGD(layer.parameters(), lr=0.05 * (i + 1)) for i, layer in enumerate(layers)]
x, y = torch.randn(32, 4), torch.randn(32, 1)
losses = []
"""

LAYERS_LOOP = """
for i in range(ITERATIONS):
    for opt in opts:
        opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    for opt in opts:
        opt.step()
    losses.append(loss.item())
"""


def _params(sh, *names: str) -> list[torch.Tensor]:
    return [p.detach().clone() for name in names for p in sh.user_ns[name].parameters()]


def _bare_then_watched(sh, setup: str, loop: str, line: str, models: tuple[str, ...]) -> tuple[Any, list[Any]]:
    """The loop without the monitor, then the same loop (same seeds) under %%train: the bare run's
    weights and losses, the watched run's comm messages and outputs."""
    setup = f"import torchmagic\nITERATIONS = {ITERATIONS}\n" + setup
    assert sh.run_cell(setup + loop).success
    bare = _params(sh, *models), list(sh.user_ns["losses"])
    assert sh.run_cell(setup).success
    before = global_hook_state()
    with recording_comms() as rec, capture_output() as shown:
        out = sh.run_cell(f"%%train {line}\n" + loop)
    assert out.success, out.error_in_exec
    assert global_hook_state() == before
    assert all(torch.equal(a, b) for a, b in zip(_params(sh, *models), bare[0]))  # the monitor changed nothing
    assert sh.user_ns["losses"] == bare[1]
    return (rec, shown), bare[1]


def _streamed(rec, columns: set[str]) -> dict[str, list[float]]:
    """Every point sent to the source whose batches carry ``columns`` (its streams after its last replace)."""
    out: dict[str, list[float]] = {}
    for kind, data, buffers in rec.messages:
        if kind != "comm_msg" or data.get("method") != "custom" or data["content"].get("kind") != "torchmagic.refresh":
            continue
        content = data["content"]
        for batch in content["replace"]:
            if columns <= set(batch["columns"]):
                out = {}
        for batch in content["streams"] + content["replace"]:
            if columns <= set(batch["columns"]):
                for name, i in batch["columns"].items():
                    out.setdefault(name, []).extend(np.frombuffer(buffers[i], dtype="<f4").tolist())
    return out


def _frozen(shown) -> str:
    return [o.data["text/html"] for o in shown.outputs if "tm-dash" in o.data.get("text/html", "")][-1]


def _chart(html: str, title: str) -> str:
    [chart] = [c for c in html.split("<svg")[1:] if title in c.split("</text>")[0]]
    return chart


def test_a_gan_gets_a_loss_and_lr_series_per_optimizer_live_and_frozen(shell):
    (rec, shown), losses = _bare_then_watched(shell, GAN_SETUP, GAN_LOOP, "--display widgets --every 5", ("G", "D"))
    result = torchmagic.last_run()
    assert result.status == "completed" and result.steps == 2 * ITERATIONS
    assert result.optimizer_names == ["opt_d", "opt_g"]
    history = result.history
    assert history["optimizer"].tolist() == ["opt_d", "opt_g"] * ITERATIONS
    assert history["iteration"].tolist() == [i for i in range(1, ITERATIONS + 1) for _ in range(2)]
    # each step's loss is its own optimizer's loss, as the loop computed it (float32, exactly)
    assert history["loss"].tolist() == [float(np.float32(v)) for v in losses]
    assert history["lr"].tolist() == [1e-3, 2e-3] * ITERATIONS
    series = result.optimizer_series("loss")
    assert list(series.columns) == ["opt_d", "opt_g"] and series.index.tolist() == list(range(1, ITERATIONS + 1))
    assert series["opt_g"].tolist() == history["loss"].tolist()[1::2]
    # statistics steps sample whole iterations, and each step's grad norm is of its own optimizer's parameters
    norms = history["grad_norm"]
    assert norms.notna().tolist()[8:12] == [True, True, False, False]  # iteration 5: both steps, then none
    assert set(history.loc[norms.notna(), "optimizer"]) == {"opt_d", "opt_g"}
    # progress followed the iterations, not the optimizer steps (twice as many)
    assert shell.user_ns["fractions"] == pytest.approx([i / ITERATIONS for i in range(1, ITERATIONS + 1)])
    assert result.total_steps == 2 * ITERATIONS
    # the dashboard streamed a smoothed loss and an lr curve per optimizer, over iterations
    curves = _streamed(rec, {"s0", "s1", "r0", "r1"})
    assert curves["x"] == list(range(1, ITERATIONS + 1))
    for i, name in enumerate(["opt_d", "opt_g"]):
        assert curves[f"s{i}"] == pytest.approx(ema(series[name].tolist()).values, rel=1e-5)
        assert curves[f"r{i}"] == pytest.approx([[1e-3, 2e-3][i]] * ITERATIONS)
    # the frozen snapshot draws the same curves, named after the optimizers
    html = _frozen(shown)
    for title in ("loss by optimizer", "learning rate by optimizer"):
        chart = _chart(html, title)
        assert "<title>opt_d</title>" in chart and "<title>opt_g</title>" in chart and "no data" not in chart
    assert ">0</text>" in _chart(html, "learning rate by optimizer")  # from zero, as the live chart
    assert "opt_d" in html.split("</div>")[0] and "<script" not in html  # the header's loss per optimizer


def test_the_text_line_shows_each_optimizers_loss(shell):
    setup = f"import torchmagic\nITERATIONS = {ITERATIONS}\n" + GAN_SETUP
    assert shell.run_cell(setup).success
    with capture_output() as shown:
        assert shell.run_cell("%%train --display text\n" + GAN_LOOP).success
    result = torchmagic.last_run()
    last_d, last_g = result.optimizer_series("loss").iloc[-1]
    assert f"loss opt_d {torchmagic.core.formatting.number(last_d)} · opt_g" in shown.stdout
    assert "100%" in shown.stdout and f"step {2 * ITERATIONS}/~{2 * ITERATIONS}" in shown.stdout


def test_one_optimizer_per_layer_gets_a_step_each_with_its_lr_and_its_layers_grad_norm(shell):
    (rec, shown), losses = _bare_then_watched(shell, LAYERS_SETUP, LAYERS_LOOP, "--display widgets --every 1", ("model",))
    result = torchmagic.last_run()
    names = ["opts[0]", "opts[1]", "opts[2]"]  # the loop variable `opt` names none of them
    assert result.optimizer_names == names and result.steps == 3 * ITERATIONS
    history = result.history
    assert history["optimizer"].tolist() == names * ITERATIONS
    assert history["iteration"].tolist() == [i for i in range(1, ITERATIONS + 1) for _ in range(3)]
    # one backward() per iteration: the three steps share its loss
    assert history["loss"].tolist() == [float(np.float32(v)) for v in losses for _ in range(3)]
    assert result.optimizer_series("lr").iloc[0].tolist() == pytest.approx([0.05, 0.1, 0.15])
    # every step's grad norm is of the layer its optimizer steps
    layer_norms = result.layer_stats.query("stat == 'grad_norm'")
    by_step = layer_norms.groupby("step")["name"].apply(list)
    assert by_step.loc[1:3].tolist() == [["0"], ["2"], ["4"]]
    assert result.total_steps == 3 * ITERATIONS
    curves = _streamed(rec, {"r0", "r1", "r2"})
    assert curves["x"] == list(range(1, ITERATIONS + 1))
    assert [curves[f"r{i}"][0] for i in range(3)] == pytest.approx([0.05, 0.1, 0.15])
    chart = _chart(_frozen(shown), "learning rate by optimizer")
    assert all(f"<title>{name}</title>" in chart for name in names)


def test_a_single_optimizer_keeps_todays_columns(shell):
    cell = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(8, 3), torch.randn(8, 1)
"""
    assert shell.run_cell(cell).success
    out = shell.run_cell(
        "%%train --display none\nfor i in range(6):\n"
        "    opt.zero_grad(); nn.functional.mse_loss(model(x), y).backward(); opt.step()\n"
    )
    assert out.success
    result = torchmagic.last_run()
    assert result.steps == 6 and result.optimizer_names == ["opt"]
    assert "optimizer" not in result.columns and "iteration" not in result.columns
    assert list(result.optimizer_series("loss").columns) == ["loss"]
