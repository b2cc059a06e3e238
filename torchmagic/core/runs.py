"""The last run's result, kept for ``torchmagic.last_run()``."""

from __future__ import annotations

from torchmagic.core.result import RunResult

_last: RunResult | None = None


def set_last_run(result: RunResult) -> None:
    global _last
    _last = result


def last_run() -> RunResult | None:
    """The result of the most recent ``%%train`` or ``torchmagic.train`` run (None before any)."""
    return _last
