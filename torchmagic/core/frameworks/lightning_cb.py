"""A Lightning ``Callback`` reporting a ``Trainer``'s plan, ``self.log`` values, epoch and stops to a run.

Lightning is taken from ``sys.modules`` (the package of the running Trainer, ``lightning`` or
``pytorch_lightning``): this module is only imported once such a Trainer was found running.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchmagic.core.frameworks import FrameworkLink


def attach_lightning(trainer: Any, link: FrameworkLink) -> Callable[[], None] | None:
    package = type(trainer).__module__.partition(".trainer")[0]  # "lightning.pytorch" or "pytorch_lightning"
    base = getattr(sys.modules.get(package), "Callback", None)
    if base is None:
        return None
    callback = _callback_class(base)(link)
    trainer.callbacks.append(callback)  # public, and read anew at every hook call

    def detach() -> None:
        if callback in trainer.callbacks:
            trainer.callbacks.remove(callback)

    return detach


def _callback_class(base: type) -> type:
    class TorchmagicCallback(base):  # type: ignore[misc]
        """``trainer.callback_metrics`` holds the latest value of every name logged so far; a value is
        this step's when it is a new object (Lightning makes one each time ``self.log`` runs)."""

        def __init__(self, link: FrameworkLink) -> None:
            self.link = link
            self._seen: dict[str, Any] = {}  # the objects themselves: an id could be reused

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.link.plan(trainer.estimated_stepping_batches)
            self._fresh(trainer)  # values logged before training (the sanity check) are not a step's

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            values = self._fresh(trainer)
            values["epoch"] = trainer.current_epoch
            self.link.logged(values)
            if self.link.stop_requested():
                trainer.should_stop = True

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self.link.logged(self._fresh(trainer))

        def _fresh(self, trainer: Any) -> dict[str, Any]:
            fresh = {}
            for name, value in trainer.callback_metrics.items():
                if self._seen.get(name) is not value:
                    self._seen[name] = value
                    fresh[name] = value
            return fresh

    return TorchmagicCallback
