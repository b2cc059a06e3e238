"""A ``transformers.TrainerCallback`` reporting a ``Trainer``'s plan, logs and stops to a run.

transformers is taken from ``sys.modules``: this module is only imported once a
``transformers.Trainer`` was found running, so the user's code has imported it already.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchmagic.core.frameworks import FrameworkLink

# The end-of-training summary log (train_runtime, train_loss, …) is about the whole run, not a step.
_SUMMARY_KEY = "train_runtime"


def attach_transformers(trainer: Any, link: FrameworkLink) -> Callable[[], None] | None:
    base = getattr(sys.modules.get("transformers"), "TrainerCallback", None)
    if base is None:
        return None
    callback = _callback_class(base)(link)
    trainer.add_callback(callback)
    state = getattr(trainer, "state", None)
    link.plan(getattr(state, "max_steps", None))  # attached after on_train_begin when the optimizer came ready-made
    return lambda: trainer.remove_callback(callback)


def _callback_class(base: type) -> type:
    class TorchmagicCallback(base):  # type: ignore[misc]
        """Planned steps at ``on_train_begin``, logged values at ``on_log``, a requested stop at ``on_step_end``."""

        def __init__(self, link: FrameworkLink) -> None:
            self.link = link

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.link.plan(state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.link.stop_requested():
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs and _SUMMARY_KEY not in logs:
                self.link.logged(dict(logs))

    return TorchmagicCallback
