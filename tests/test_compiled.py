"""Watching loops that use ``torch.compile``: a compiled model (``torch.compile(model)`` and
``model.compile()``), a compiled ``optimizer.step`` and a whole compiled training step. The
monitor's callbacks run outside the user's graphs (``torchmagic.core.compiled``): the loop
computes the same numbers, dynamo compiles about the same graphs and warns of nothing, and the
run counts every step. The backend is dynamo's own tracing with the graph run as traced (no C++
compiler needed), so what is checked is what dynamo does with the monitor's code."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

from tests.conftest import TwoLayerNet as _Net
from tests.conftest import global_hook_state
from torchmagic.core import TrainingMonitor

STEPS = 24


class _CountingBackend:
    """Dynamo's graphs, counted, run as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., object]:
        self.graphs += 1
        return gm.forward


def _run(how: str, watch: bool) -> tuple[list[float], list[torch.Tensor], int, list[str], TrainingMonitor | None]:
    torch._dynamo.reset()
    backend = _CountingBackend()
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 8, generator=gen) for _ in range(STEPS)]
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    opt_step: Callable[[], object] = opt.step
    if how == "torch.compile(model)":
        forward = torch.compile(model, backend=backend)
    elif how == "model.compile()":
        model.compile(backend=backend)
    elif how == "compiled optimizer.step":
        opt_step = torch.compile(opt.step, backend=backend)

    def step(x: torch.Tensor) -> torch.Tensor:
        opt.zero_grad()
        loss = forward(x).pow(2).mean()
        loss.backward()
        opt_step()
        return loss.detach()

    if how == "compiled training step":
        step = torch.compile(step, backend=backend)
    mon = TrainingMonitor([model], [opt], every=5, refresh_interval=0.0) if watch else None
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if mon is None:
            losses = [step(x).item() for x in xs]
        else:
            with mon:
                losses = [step(x).item() for x in xs]
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if "torch.jit.script_method" not in str(w.message)]
    return losses, [p.detach().clone() for p in model.parameters()], backend.graphs, shown, mon


@pytest.mark.parametrize("how", ["torch.compile(model)", "model.compile()", "compiled optimizer.step", "compiled training step"])
def test_compiled_loops_are_watched_without_changing_them(how):
    before = global_hook_state()
    bare_losses, bare_params, bare_graphs, bare_shown, _ = _run(how, watch=False)
    losses, params, graphs, shown, mon = _run(how, watch=True)
    assert global_hook_state() == before
    assert losses == bare_losses
    assert all(torch.equal(a, b) for a, b in zip(params, bare_params))
    assert shown == bare_shown == []  # no graph break warned of, no warning about the monitor's hooks
    assert bare_graphs >= 1
    # Steps with and without the watching hooks are two variants of the graphs, no more.
    assert graphs <= 2 * bare_graphs, (graphs, bare_graphs)
    r = mon.result
    assert r.status == "completed" and r.steps == STEPS
    assert r.history["loss"].tolist() == pytest.approx(losses, rel=1e-6)
    assert [a.kind for a in r.alerts] == []
    if how != "compiled training step":  # the model's own forward runs outside dynamo there only in part
        assert {"fc1", "fc2"} <= {layer.name.removeprefix("_orig_mod.") for layer in r.layers}
