"""The steps finished since the last refresh, waiting to become history rows.

Every step is a row of eight values in one flat list: its number, time, duration, batch size,
optimizer and iteration, its loss (a float, or a tensor waiting on its device) and learning rates.
Most steps gather nothing else; for those the monitor reuses its :class:`StepValues` for the next
step, so a plain step leaves nothing the cyclic garbage collector tracks (numbers are not).
Keeping one object graph per step until the refresh (as a list of records would) made the cyclic
garbage collector promote thousands of objects a second, and its full passes, which visit every
object of the process, came round every few thousand steps: the cost grew with the size of the
user's kernel. A step that gathered more (statistics, logged values, checks) keeps its values as a
:class:`PendingStep` by its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchmagic.core.stepstate import StepValues
from torchmagic.core.transfer import PendingStep

_WIDTH = 8  # values per row: len(PendingSteps.FIELDS)


class PendingSteps:
    """Rows of finished steps, in step order; ``full`` holds the rows that carry more than a loss.

    The rows are one flat list, ``FIELDS`` values a step, appended with one ``extend`` call (the
    cheapest record a step can leave: eight ``array`` appends cost a step 4 000 instructions more);
    the columns are sliced out once, at the refresh."""

    __slots__ = ("rows", "full")
    FIELDS = ("step", "time", "dt", "samples", "optimizer", "iteration", "loss", "lrs")

    def __init__(self) -> None:
        # per step: its number, seconds since the run started at its end, its duration, samples,
        # the optimizer book's index (None: no optimizer ended it), iteration, loss (a float read
        # on the CPU, a 0-d device tensor, or None), learning rates per parameter group (one object
        # shared while they do not change)
        self.rows: list[Any] = []
        self.full: dict[int, PendingStep] = {}

    def __len__(self) -> int:
        return len(self.rows) // _WIDTH

    def add(self, step: int, time: float, dt: float, lrs: Sequence[Any], values: StepValues) -> None:
        """A finished step whose values hold more than its row: they stay with it, as a record."""
        self.full[len(self)] = PendingStep(step, time, dt, lrs, values)
        self.add_plain(step, time, dt, lrs, values)

    def add_plain(self, step: int, time: float, dt: float, lrs: Sequence[Any], values: StepValues) -> None:
        """A finished step whose row holds all of it (most steps)."""
        self.rows.extend((step, time, dt, values.samples, values.optimizer, values.iteration, values.loss, lrs))

    def column(self, name: str) -> list[Any]:
        """One field of every row (a new list)."""
        return self.rows[self.FIELDS.index(name) :: _WIDTH]

    @classmethod
    def of(cls, steps: Sequence[PendingStep]) -> PendingSteps:
        """Rows for steps given as records (tests, and callers that built them)."""
        pending = cls()
        for rec in steps:
            pending.add(rec.step, rec.time, rec.dt, rec.lrs, rec.values)
        return pending
