"""The catalogue's own harness: a clean case passes, and a leaked hook is caught."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from tests.catalogue.conftest import LOOP, kernel_state


def test_a_usage_error_leaves_nothing_behind(shell, leaves_no_trace):
    with pytest.raises(UsageError, match="unrecognized arguments"):
        shell.run_cell_magic("train", "--bogus", LOOP)


def test_the_harness_sees_a_leaked_global_hook(shell):
    import torch.nn.modules.module as nn_module

    before = kernel_state(shell)
    handle = nn_module.register_module_forward_hook(lambda *a: None)
    try:
        assert kernel_state(shell) != before
    finally:
        handle.remove()
    assert kernel_state(shell) == before
