"""One place that records everything a monitor attaches, so one call removes all of it.

Hooks come back as ``RemovableHandle``; patches are (owner, attribute, original) triples put
back in reverse order. ``detach`` is idempotent and never raises half-way: every exit path of a
run (completion, exception, Ctrl-C, out-of-memory) ends here.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

_MISSING = object()


class Attachments:
    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def hook(self, handle: Any) -> None:
        """Keep a ``RemovableHandle`` (or anything with ``remove()``) for removal."""
        self._undo.append(handle.remove)

    def patch(self, owner: Any, name: str, replacement: Any) -> Any:
        """Replace ``owner.name`` until :meth:`detach`; returns the original."""
        original = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(owner, name, _MISSING)
        current = getattr(owner, name)
        setattr(owner, name, replacement)

        def undo() -> None:
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

        self._undo.append(undo)
        return current

    def signal_handler(self, signum: int, handler: Callable[..., Any]) -> bool:
        """Install a signal handler for the run; False where Python allows none (not main thread)."""
        try:
            previous = signal.signal(signum, handler)
        except ValueError:
            return False

        def undo() -> None:
            signal.signal(signum, previous)

        self._undo.append(undo)
        return True

    def callback(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def detach(self) -> list[BaseException]:
        """Undo everything, newest first; returns the errors met instead of stopping at one."""
        errors: list[BaseException] = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except BaseException as exc:  # noqa: BLE001 - cleanup must finish
                errors.append(exc)
        return errors

    def __len__(self) -> int:
        return len(self._undo)
