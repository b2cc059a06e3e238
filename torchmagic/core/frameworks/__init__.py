"""transformers' and Lightning's ``Trainer`` report to a run through their own public callback APIs.

How the callback gets in: the monitor already hears every optimizer created during the run and
every optimizer step (see :mod:`~torchmagic.core.attachpoints`). A framework creates its optimizer
inside ``Trainer.train()`` / ``Trainer.fit()``, and steps it there in any case, so at the first of
those moments the Trainer is on the Python stack, as ``self`` of its ``train``/``fit`` frame. The
monitor looks there once and adds its callback with the framework's public API
(``transformers.Trainer.add_callback``; Lightning's public ``Trainer.callbacks`` list, read anew
at every hook), and takes it out when the run ends. Nothing of the frameworks is patched, a
Trainer made in an earlier cell or inside the cell is found alike, and neither framework is
imported here unless the user's code already did (``sys.modules``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from torchmagic.core.attachments import Attachments
from torchmagic.core.recording import is_builtin_column

# (module, class) of the Trainers looked for, and the frames their entry points run in
_TRAINERS = (
    ("transformers.trainer", "Trainer"),
    ("lightning.pytorch.trainer.trainer", "Trainer"),
    ("pytorch_lightning.trainer.trainer", "Trainer"),
)
_ENTRY_POINTS = frozenset({"train", "fit"})


class FrameworkLink:
    """What the frameworks driving a run tell it: planned steps, logged values, epochs.

    Args:
        log: takes a step's logged values (``TrainingMonitor.log``).
        stop_requested: whether the user asked the run to stop; a framework then stops itself
            after the current step (its own ``should_stop`` flags) instead of seeing a
            ``KeyboardInterrupt`` raised through its loop (Lightning turns one into ``sys.exit``).
    """

    def __init__(self, log: Callable[[dict[str, Any]], None], stop_requested: Callable[[], bool]) -> None:
        self.log = log
        self.stop_requested = stop_requested
        self.planned_steps: int | None = None
        self.attached: list[Any] = []  # the Trainers our callback is in
        self._attachments: Attachments | None = None

    @property
    def stops_run(self) -> bool:
        return bool(self.attached)

    def bind(self, attachments: Attachments) -> None:
        self._attachments = attachments

    def look(self) -> None:
        """Attach to the Trainers on the calling stack that have not been seen yet."""
        if self._attachments is None:
            return
        for trainer in _running_trainers():
            if any(t is trainer for t in self.attached):
                continue
            undo = _attach(trainer, self)
            if undo is not None:
                self.attached.append(trainer)
                self._attachments.callback(undo)

    def plan(self, steps: float | int | None) -> None:
        """The framework's planned number of optimizer steps (progress and ETA), when finite."""
        if steps is not None and math.isfinite(steps) and steps > 0:
            self.planned_steps = int(steps)

    def logged(self, values: dict[str, Any]) -> None:
        """A framework's logged numbers; names the monitor measures itself get ``_logged`` (``loss``,
        measured from ``backward()``, is the same value and is left out)."""
        kept: dict[str, Any] = {}
        for name, value in values.items():
            if name == "loss" or not _is_number(value):
                continue
            kept[f"{name}_logged" if is_builtin_column(name) else name] = value
        if kept:
            self.log(kept)


def _running_trainers() -> Iterator[Any]:
    classes = tuple(
        cls for cls in (getattr(sys.modules.get(module), name, None) for module, name in _TRAINERS) if isinstance(cls, type)
    )
    if not classes:
        return
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name in _ENTRY_POINTS and code.co_argcount and code.co_varnames[0] == "self":
            owner = frame.f_locals.get("self")
            if isinstance(owner, classes):
                yield owner
        frame = frame.f_back  # type: ignore[assignment]


def _attach(trainer: Any, link: FrameworkLink) -> Callable[[], None] | None:
    module = type(trainer).__module__
    if module.startswith("transformers"):
        from torchmagic.core.frameworks.transformers_cb import attach_transformers

        return attach_transformers(trainer, link)
    from torchmagic.core.frameworks.lightning_cb import attach_lightning

    return attach_lightning(trainer, link)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    numel = getattr(value, "numel", None)  # tensors (torch's and numpy's one-element values)
    return callable(numel) and numel() == 1 and not getattr(value, "is_complex", lambda: False)()
