"""Keeping the monitor's callbacks out of the code ``torch.compile`` runs.

Inside a compiled call dynamo traces whatever is called, hooks included, and after a graph break
it compiles every Python frame entered from there on. The monitor's callbacks read thread ids and
clocks, keep Python state and run numpy at a refresh: traced, each would break the user's graph
with a warning, or fail to compile outright. So they run as plain Python, with dynamo off for
them and everything they call.

Per-step callbacks test ``tracing() or frame_callback() is not None`` first, written out where
they run (two C calls, 30 ns: a function of ours around them would cost a frame more), and go
through :func:`outside_graph` only then; the others are wrapped once with :func:`eager_only`
(about 0.25 us a call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch

__all__ = ["eager_only", "frame_callback", "outside_graph", "tracing"]

F = TypeVar("F", bound=Callable[..., Any])

tracing = torch.compiler.is_dynamo_compiling  # False, and True where dynamo traces the call
try:  # set while a compiled function runs, graph breaks included; None in eager mode
    from torch._C._dynamo.eval_frame import get_eval_frame_callback as frame_callback
except ImportError:  # a torch without it: every callback leaves the graph

    def frame_callback() -> bool:  # type: ignore[misc]
        return True


def eager_only(fn: F) -> F:
    """``fn``, always run as plain Python, never traced nor compiled."""
    return cast("F", torch.compiler.disable(fn))  # type: ignore[no-untyped-call]


_disabled_call = torch.compiler.disable(lambda fn, args, kwargs: fn(*args, **kwargs))  # type: ignore[no-untyped-call]


def outside_graph(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` as plain Python, from code being traced or compiled: one clean
    graph break."""
    return _disabled_call(fn, args, kwargs)
