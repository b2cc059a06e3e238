"""Ctrl-C during training: the first asks to stop at the next step boundary, the second stops now.

The request is honoured at the first point of the next step where the monitor runs anyway: a
root module's forward, else the ``backward()`` call (loops on raw tensors that call no module).
It is raised only on the thread that runs the monitored loop: a thread the user started (a data
pipeline calling a model, say) never sees it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from torchmagic.core.attachments import Attachments


class TrainingStopped(KeyboardInterrupt):
    """Raised at a step boundary after a stop was requested (Ctrl-C or the Stop button).

    IPython shows it as one line (``_render_traceback_``), not a traceback through the module
    calls it left; as a ``KeyboardInterrupt`` it still ends the cell in error, so queued cells
    do not run.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.installed = False
        self._thread = threading.get_ident()

    def begin(self) -> None:
        """A run starts on this thread, with no stop requested."""
        self.requested = False
        self._thread = threading.get_ident()

    def install(self, attachments: Attachments) -> None:
        self.installed = attachments.signal_handler(signal.SIGINT, self._on_sigint)

    def request(self) -> None:
        """Stop after the current step (safe from any thread)."""
        self.requested = True

    def raise_if_requested(self, step: int) -> None:
        """At a step boundary: raise :class:`TrainingStopped` if a stop was requested, on the run's thread."""
        __tracebackhide__ = True
        if self.requested and threading.get_ident() == self._thread:
            raise TrainingStopped(f"training stopped after step {step}")

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second Ctrl-C: stop at once
        self.requested = True
