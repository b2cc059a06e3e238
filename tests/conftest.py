from __future__ import annotations

import signal
import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module


def global_hook_state() -> dict[str, object]:
    """Everything a run may touch globally, as comparable values."""
    return {
        "forward_pre": dict(nn_module._global_forward_pre_hooks),
        "forward": dict(nn_module._global_forward_hooks),
        "forward_always": dict(nn_module._global_forward_hooks_always_called),
        "opt_pre": dict(optim_module._global_optimizer_pre_hooks),
        "opt_post": dict(optim_module._global_optimizer_post_hooks),
        "backward": torch.autograd.backward,
        "scale": torch.amp.GradScaler.__dict__["scale"],
        "scaler_step": torch.amp.GradScaler.__dict__["step"],
        "optimizer_init": torch.optim.Optimizer.__dict__["__init__"],
        "sigint": signal.getsignal(signal.SIGINT),
        "filters": list(warnings.filters),
        "showwarning": warnings.showwarning,
    }


def module_hook_state(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    state = []
    for name, m in model.named_modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            state.append((f"{name}.{attr}", tuple(getattr(m, attr).keys())))
    for name, p in model.named_parameters():
        state.append((f"{name}.post_acc", tuple(getattr(p, "_post_accumulate_grad_hooks", None) or {})))
    return state


def optimizer_hook_state(opt: torch.optim.Optimizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(opt._optimizer_step_pre_hooks), tuple(opt._optimizer_step_post_hooks)


def new_shell():
    """A real IPython shell without a history file or thread (see :func:`close_shell`)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    return InteractiveShell.instance(config=config)


def close_shell(sh) -> None:
    """Forget the shell, and its exit handler: each handler runs a full ``gc.collect()`` at exit, and
    hundreds of them over a heap of tensors keep the test process alive for minutes after the last test."""
    import atexit

    from IPython.core.interactiveshell import InteractiveShell

    atexit.unregister(sh.atexit_operations)
    InteractiveShell.clear_instance()


@pytest.fixture
def shell():
    """A real IPython shell with torchmagic loaded; text display (no kernel here)."""
    sh = new_shell()
    sh.run_line_magic("load_ext", "torchmagic")
    yield sh
    sh.run_line_magic("unload_ext", "torchmagic")
    close_shell(sh)


@pytest.fixture
def tiny_setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(64, 8)
    y = torch.randint(0, 2, (64,))
    return model, opt, x, y


class TwoLayerNet(nn.Module):
    """A model class of the tests' own (its ``forward`` is the class's, replaced for a run): 8 -> 16 -> 2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))
