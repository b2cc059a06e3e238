"""How far a run is (progress, ETA, planned steps) and how it ended (status, error)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from torchmagic.core.alerts import AlertBook
from torchmagic.core.result import RunResult


class RunPlan(NamedTuple):
    """What is known of the run's length: a framework's planned steps first, else ``--total``
    iterations of the loop: backward() calls, or with several optimizers the iterations the
    optimizer book counts (a GAN's D and G steps are one iteration, not two)."""

    step: int
    backward_calls: int
    total: int | None  # iterations the loop will make
    planned_steps: int | None  # optimizer steps a framework (Trainer) plans
    iterations: int | None = None  # with several optimizers: the loop's iterations so far

    @property
    def done(self) -> int:
        return self.backward_calls if self.iterations is None else self.iterations

    def fraction(self) -> float | None:
        if self.planned_steps:
            return min(1.0, self.step / self.planned_steps)
        if not self.total or self.done == 0:
            return None
        return min(1.0, self.done / self.total)

    def progress(self, elapsed: float) -> tuple[float | None, float | None]:
        """The fraction done and the seconds left, when the length is known."""
        fraction = self.fraction()
        if fraction is None:
            return None, None
        return fraction, (elapsed * (1 - fraction) / fraction if fraction > 0 else None)

    def total_steps(self) -> int | None:
        if self.planned_steps:
            return max(self.step, self.planned_steps)
        if self.total and self.done:
            return max(self.step, round(self.step * self.total / self.done))
        return None


def settle_status(
    result: RunResult, alerts: AlertBook, exc: BaseException | None, stop_requested: bool, errors: list[BaseException]
) -> None:
    """The run's status and error from how it ended (``exc``) and what its cleanup met (``errors``)."""
    if exc is None:
        result.status = "interrupted" if stop_requested else "completed"
    elif isinstance(exc, KeyboardInterrupt):
        result.status = "interrupted"
    else:
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, torch.OutOfMemoryError):
            alerts.add("oom", result.steps + 1, str(exc).splitlines()[0] if str(exc) else "out of memory")
    if errors:
        result.error = (result.error + "; " if result.error else "") + f"cleanup: {errors[0]!r}"
