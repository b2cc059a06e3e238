"""Several optimizers in one loop: a GAN's discriminator and generator, one optimizer per layer.

Each optimizer step stays a step (a history row); the book says which optimizer made it, under
the name the loop gave it, and which iteration of the loop it belongs to. An iteration begins
when an optimizer steps again that already stepped in the current one, so ``D, G, D, G`` counts
one iteration per pair, ``D, D, D, D, D, G`` (five critic steps per generator step) one per
critic step, and one backward() followed by a step of every layer's optimizer one per backward().
Progress and ETA follow the iterations, and the statistics schedule samples whole iterations
(every optimizer of a scheduled iteration), so that with two optimizers the period does not
always fall on the same one.
"""

from __future__ import annotations

import os
import sys
from types import FrameType
from typing import Any

import torch

from torchmagic.core.result import RunResult
from torchmagic.core.schedule import StepSchedule

# Frames of these packages are the machinery between the loop and an optimizer's step hook.
_MACHINERY = (os.path.dirname(torch.__file__ or "") + os.sep, os.path.dirname(os.path.dirname(__file__)) + os.sep)


class OptimizerBook:
    """The optimizers that stepped in a run, in order of their first step, and the loop's iterations."""

    def __init__(self, result: RunResult, schedule: StepSchedule) -> None:
        self.result = result
        self.schedule = schedule
        schedule.span = 1
        result.optimizer_names = []
        self._index: dict[int, int] = {}  # id(optimizer) -> its index in result.optimizer_names
        self._keep: list[torch.optim.Optimizer] = []  # keeps the ids valid for the run
        self._in_iteration: set[int] = set()
        self._in_list: list[str | None] = []  # each optimizer's place in a list of the loop (``opts[0]``)
        self._moving: set[str] = set()  # names that held one optimizer, then another: loop variables
        self.iteration = 0
        self.last: int | None = None  # the optimizer of the latest step
        self.sole: torch.optim.Optimizer | None = None  # the only optimizer, once it stepped and while no other has
        self.shared_loss: torch.Tensor | float | None = None  # the loss of the latest step that had a backward()

    @property
    def several(self) -> bool:
        return len(self._keep) > 1

    def iterations(self) -> int | None:
        """The loop's iterations so far, once several optimizers stepped (else progress follows backward() calls)."""
        return self.iteration if self.several else None

    def is_last(self, optimizer: torch.optim.Optimizer) -> bool:
        return self.last is not None and self._index.get(id(optimizer)) == self.last

    def stepped(self, optimizer: torch.optim.Optimizer) -> int:
        """An optimizer step ended a step: its optimizer's index (a new optimizer is named here)."""
        if optimizer is self.sole:  # the usual loop: its one optimizer again, each step an iteration
            self.iteration += 1
            return 0
        index = self._index.get(id(optimizer))
        if index is None:
            index = self._index[id(optimizer)] = len(self._keep)
            self._keep.append(optimizer)
            self._name(index, variable_names(optimizer))
        if index in self._in_iteration or not self.iteration:
            if self.iteration == 1 and self.several:
                # The first iteration's length: from now on the schedule samples whole iterations.
                self.schedule.span = len(self._in_iteration)
            self.iteration += 1
            self._in_iteration.clear()
        self._in_iteration.add(index)
        self.last = index
        self.sole = optimizer if len(self._keep) == 1 else None
        return index

    def _name(self, index: int, candidates: list[str]) -> None:
        """The first free name the loop holds the optimizer under. A plain name an earlier optimizer
        was given is a loop variable (``for opt in opts: opt.step()``): that one is renamed after its
        place in the list (``opts[0]``)."""
        names = self.result.optimizer_names
        for j, taken in enumerate(names):
            if taken in candidates:  # it held an earlier optimizer and holds this one now
                self._moving.add(taken)
                in_list = self._in_list[j]
                if in_list is not None:
                    names[j] = in_list
        self._in_list.append(next((c for c in candidates if "[" in c), None))
        free = [c for c in candidates if c not in names and c not in self._moving]
        names.append(free[0] if free else _unique(candidates[0] if candidates else f"optimizer {index}", names))


def variable_names(obj: Any) -> list[str]:
    """The names the loop's own code holds ``obj`` under, in the first frame outside torch and
    torchmagic: locals, then globals, then items of their lists and tuples (``opts[2]``)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_MACHINERY):
        frame = frame.f_back
    if frame is None:
        return []
    scopes = [[(k, v) for k, v in scope.items() if not k.startswith("_")] for scope in (frame.f_locals, frame.f_globals)]
    direct = [name for items in scopes for name, value in items if value is obj]
    in_list = [
        f"{name}[{i}]"
        for items in scopes
        for name, value in items
        if isinstance(value, (list, tuple)) and len(value) <= 4096
        for i, item in enumerate(value)
        if item is obj
    ]
    return list(dict.fromkeys(direct + in_list))


def _unique(name: str, names: list[str]) -> str:
    """Two optimizers under one name would share a curve: number the later ones."""
    taken = set(names)
    if name not in taken:
        return name
    return next(f"{name} ({i})" for i in range(2, len(taken) + 3) if f"{name} ({i})" not in taken)
