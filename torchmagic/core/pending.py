"""The steps finished since the last refresh, waiting to become history rows.

Every step is a row of typed arrays here: its number, time, duration, batch size, optimizer and
iteration, with its loss (a float, or a tensor waiting on its device) and learning rates beside.
Most steps gather nothing else; for those the monitor reuses its :class:`StepValues` for the next
step, so a plain step leaves no Python object behind it. Keeping one object graph per step until
the refresh (as a list of records would) made the cyclic garbage collector promote thousands of
objects a second, and its full passes, which visit every object of the process, came round every
few thousand steps: the cost grew with the size of the user's kernel. A step that gathered more
(statistics, logged values, checks) keeps its values as a :class:`PendingStep` by its row.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from torchmagic.core.stepstate import StepValues
from torchmagic.core.transfer import PendingStep

NO_OPTIMIZER = -1  # the optimizer column of a step no optimizer ended (backward-only loops)


class PendingSteps:
    """Rows of finished steps, in step order; ``full`` holds the rows that carry more than a loss."""

    __slots__ = ("step", "time", "dt", "samples", "optimizer", "iteration", "loss", "lrs", "full")

    def __init__(self) -> None:
        self.step: array[int] = array("q")
        self.time: array[float] = array("d")  # seconds since the run started, at the step's end
        self.dt: array[float] = array("d")  # the step's duration
        self.samples: array[int] = array("q")
        self.optimizer: array[int] = array("q")  # the optimizer book's index, or NO_OPTIMIZER
        self.iteration: array[int] = array("q")
        self.loss: list[Any] = []  # a float (read on the CPU), a 0-d device tensor, or None
        self.lrs: list[Sequence[Any]] = []  # per parameter group; one object shared while they do not change
        self.full: dict[int, PendingStep] = {}

    def __len__(self) -> int:
        return len(self.step)

    def add(self, step: int, time: float, dt: float, lrs: Sequence[Any], values: StepValues, *, keep: bool) -> None:
        """A finished step; ``keep``: its values hold more than the row, and stay with it."""
        if keep:
            self.full[len(self.step)] = PendingStep(step, time, dt, lrs, values)
        self.step.append(step)
        self.time.append(time)
        self.dt.append(dt)
        self.samples.append(values.samples)
        optimizer = values.optimizer
        self.optimizer.append(NO_OPTIMIZER if optimizer is None else optimizer)
        self.iteration.append(values.iteration)
        self.loss.append(values.loss)
        self.lrs.append(lrs)

    @classmethod
    def of(cls, steps: Sequence[PendingStep]) -> PendingSteps:
        """Rows for steps given as records (tests, and callers that built them)."""
        pending = cls()
        for rec in steps:
            pending.add(rec.step, rec.time, rec.dt, rec.lrs, rec.values, keep=True)
        return pending
