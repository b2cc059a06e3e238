"""How the monitor meets a root model's every forward without a hook of the root's own: through
the class's ``forward``, replaced for the run (see ``torchmagic.core.forwards.RootForwards``), or a
forward pre-hook where the class cannot serve. Checked by behaviour: what is counted, what the
loop computes, and what is left on the classes and instances once the run is over."""

from __future__ import annotations

import copy
import inspect
import types

import pytest
import torch
import torch.nn as nn

from tests.conftest import TwoLayerNet as _Net
from tests.conftest import global_hook_state, module_hook_state
from torchmagic.core import TrainingMonitor


class _Inherits(_Net):
    """A model class with no ``forward`` of its own."""


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 8, generator=gen), torch.randint(0, 2, (16,), generator=gen)


def _run(model: nn.Module, steps: int = 12) -> TrainingMonitor:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch()
    with TrainingMonitor([model], [opt], every=5) as mon:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return mon


def _samples(mon: TrainingMonitor) -> list[float]:
    h = mon.result.history
    return (h["samples_per_s"] * h["step_time"]).round().tolist()


@pytest.mark.parametrize("cls", [_Net, _Inherits, nn.Sequential])
def test_the_class_forward_serves_the_run_and_is_put_back(cls):
    _run(_Net(), steps=2)  # torch's lazy imports (sympy adds warnings filters) come before the state is taken
    torch.manual_seed(0)
    model = cls() if cls is not nn.Sequential else nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    owned_before = cls.__dict__.get("forward")
    signature = inspect.signature(model.forward)
    hooks, state = module_hook_state(model), global_hook_state()
    seen = {}

    def probe(module, args):  # inside the run: what a user's code would see of the class
        seen["replaced"] = cls.__dict__.get("forward") is not owned_before
        seen["signature"] = inspect.signature(module.forward)

    handle = model.register_forward_pre_hook(probe)
    try:
        mon = _run(model)
    finally:
        handle.remove()
    assert seen["replaced"] and seen["signature"] == signature  # functools.wraps: inspect (Trainer) sees the loop's forward
    assert not model._forward_pre_hooks  # no pre-hook of its own: the root's calls take _call_impl's fast path
    assert _samples(mon) == [16.0] * 12  # every step's batch counted, watched or not
    assert cls.__dict__.get("forward") is owned_before  # an inherited forward is inherited again (no attribute left)
    assert module_hook_state(model) == hooks and global_hook_state() == state


def test_the_class_forward_is_put_back_when_the_loop_raises():
    torch.manual_seed(0)
    model = _Net()
    original = _Net.__dict__["forward"]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch()
    with pytest.raises(RuntimeError, match="mat1 and mat2"), TrainingMonitor([model], [opt]):
        for step in range(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x if step < 6 else x[:, :4]), y).backward()  # step 7: a bad shape
            opt.step()
    assert _Net.__dict__["forward"] is original


def test_a_copy_made_during_the_run_computes_with_its_own_weights():
    """An EMA twin made by deepcopy mid-run shares the class, not the root's entry: its forward is
    its own (a forward patched on the instance would have been copied, bound to the original)."""
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch()
    with TrainingMonitor([model], [opt], every=5):
        for step in range(12):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if step == 2:
                twin = copy.deepcopy(model)
                frozen = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            during = twin(x)
    fresh = _Net()
    fresh.load_state_dict(frozen)
    with torch.no_grad():
        assert torch.equal(during, fresh(x)) and torch.equal(twin(x), fresh(x))
        assert not torch.equal(model(x), fresh(x))  # the model trained on
    assert "forward" not in twin.__dict__ and "forward" not in model.__dict__


def test_a_root_whose_class_a_submodule_shares_gets_a_pre_hook():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 2))
    hooked = {}

    def probe(module, args):
        hooked["pre_hooks"] = len(model._forward_pre_hooks)
        hooked["class_forward"] = nn.Sequential.__dict__["forward"]

    handle = model[1].register_forward_pre_hook(probe)
    original = nn.Sequential.__dict__["forward"]
    try:
        mon = _run(model)
    finally:
        handle.remove()
    assert hooked == {"pre_hooks": 1, "class_forward": original}  # the inner Sequential's calls stay on the fast path
    assert _samples(mon) == [16.0] * 12 and not model._forward_pre_hooks


def test_an_instance_with_a_forward_of_its_own_gets_a_pre_hook():
    """As ``accelerate`` wraps a prepared model's forward on the instance."""
    torch.manual_seed(0)
    model = _Net()
    calls = []
    inner = model.forward

    def forward(self, x):
        calls.append(1)
        return inner(x)

    model.forward = types.MethodType(forward, model)
    mon = _run(model)
    assert len(calls) == 12 and _samples(mon) == [16.0] * 12
    assert _Net.__dict__["forward"] is _Net.forward and not model._forward_pre_hooks
