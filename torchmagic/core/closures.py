"""Steps whose ``backward()`` runs inside ``optimizer.step(closure)``: LBFGS, Lightning's automatic
optimization, any closure.

An optimizer's pre-step hooks run before the closure, when the gradients are still the previous
step's: the step's own gradients are read once the closure's first ``backward()`` returned. LBFGS
evaluates its closure up to ``max_iter`` times per step and ``step()`` returns the first
evaluation's loss, so the first evaluation is the step's loss and micro-batch (progress counts it
once); the others are only counted, as the step's ``evaluations``.
"""

from __future__ import annotations

import torch


class ClosureSteps:
    """Where the run stands with respect to ``optimizer.step(closure)``."""

    __slots__ = ("seen", "optimizer", "evaluations", "wants_gradients")

    def __init__(self) -> None:
        self.seen = False  # a step took a closure: the pre-step hook stays on for every step
        self.optimizer: torch.optim.Optimizer | None = None  # inside its step(), the closure running
        self.evaluations = 0  # backward() calls inside the current step()
        self.wants_gradients = False  # a scheduled step: read the gradients after the first evaluation

    def begin(self, optimizer: torch.optim.Optimizer, scheduled: bool) -> None:
        self.seen = True
        self.optimizer = optimizer
        self.evaluations = 0
        self.wants_gradients = scheduled

    def reevaluation(self) -> bool:
        """The coming backward() is a second or later evaluation of the same step's closure."""
        return self.optimizer is not None and self.evaluations > 0

    def end(self) -> int:
        """The step() returned: how many evaluations it made."""
        evaluations, self.optimizer, self.evaluations = self.evaluations, None, 0
        return evaluations


def optimizer_gradients(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters that have a gradient."""
    return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def updated_params(optimizer: torch.optim.Optimizer, closure: bool) -> list[torch.Tensor]:
    """The parameters whose update/weight ratio is read; before a closure's step() no gradient says which."""
    groups = optimizer.param_groups
    return [p for g in groups for p in g["params"] if not p.is_sparse and (p.requires_grad if closure else p.grad is not None)]
