"""The catalogue of bad inputs, faults and attacks: what each case leaves behind is checked the same way.

Every case runs through a real IPython shell with torchmagic loaded. Afterwards nothing that a
magic installs may remain (global module and optimizer hooks, patches, signal handlers, warnings
filters, threads, a running profiler, IPython event callbacks, ``sys.stdout``), and a following
ordinary ``%%train`` must work.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

import torchmagic
from tests.conftest import close_shell, global_hook_state, new_shell

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


def _profiler_running() -> bool:
    return bool(torch._C._autograd._profiler_enabled())


def kernel_state(shell: InteractiveShell) -> dict[str, object]:
    """What a magic could leave behind, as comparable values (threads by name, not identity)."""
    state = global_hook_state()
    state.update(
        {
            "sigterm": signal.getsignal(signal.SIGTERM),
            "stdout": sys.stdout,
            "stderr": sys.stderr,
            "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("torchmagic")),
            "profiler": _profiler_running(),
            "grad_enabled": torch.is_grad_enabled(),
            "events": {name: list(cbs) for name, cbs in shell.events.callbacks.items()},
            "warning_filters": len(warnings.filters),
        }
    )
    return state


def run(shell: InteractiveShell, source: str) -> object:
    return shell.run_cell(textwrap.dedent(source))


def assert_train_still_works(shell: InteractiveShell) -> None:
    run(shell, SETUP)
    result = shell.run_cell("%%train --display none\n" + textwrap.dedent(LOOP))
    assert result.error_in_exec is None, result.error_in_exec
    r = torchmagic.last_run()
    assert r.status == "completed" and r.steps == 4, (r.status, r.steps)


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """A real IPython shell with torchmagic loaded and the usual tensors defined."""
    sh = new_shell()
    sh.run_line_magic("load_ext", "torchmagic")
    run(sh, SETUP)
    yield sh
    sh.run_line_magic("unload_ext", "torchmagic")
    close_shell(sh)


@pytest.fixture
def leaves_no_trace(shell: InteractiveShell) -> Iterator[None]:
    """Wrap a case: the kernel state after it equals the state before, and %%train works after it."""
    before = kernel_state(shell)
    yield
    after = kernel_state(shell)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after.get(k)}
    assert_train_still_works(shell)
