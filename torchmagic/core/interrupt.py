"""Ctrl-C during training: the first asks to stop at the next step boundary, the second stops now."""

from __future__ import annotations

import signal
from typing import Any

from torchmagic.core.attachments import Attachments


class TrainingStopped(KeyboardInterrupt):
    """Raised at a step boundary after a stop was requested (Ctrl-C or the Stop button)."""


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.installed = False

    def install(self, attachments: Attachments) -> None:
        self.installed = attachments.signal_handler(signal.SIGINT, self._on_sigint)

    def request(self) -> None:
        self.requested = True

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second Ctrl-C: stop at once
        self.requested = True
