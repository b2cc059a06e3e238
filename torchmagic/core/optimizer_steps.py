"""What a training monitor does when an optimizer is created, steps, or has its step skipped.

Kept apart from :mod:`~torchmagic.core.monitor` as a base class of :class:`TrainingMonitor`: an
optimizer step is where steps end, where closures (see :mod:`~torchmagic.core.closures`) begin,
and where a framework's Trainer is first met (see :mod:`~torchmagic.core.frameworks`). With several
optimizers each one's step is a step of its own, told apart by :mod:`~torchmagic.core.optimizer_book`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchmagic.core.attachpoints import StepPoints
from torchmagic.core.closures import ClosureSteps, optimizer_gradients, updated_params
from torchmagic.core.frameworks import FrameworkLink
from torchmagic.core.interrupt import StopRequest
from torchmagic.core.naming import ParameterNames
from torchmagic.core.optimizer_book import OptimizerBook
from torchmagic.core.result import RunResult
from torchmagic.core.runplan import RunPlan
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.stepstate import StepValues


class OptimizerStepHandling:
    """The optimizer-step half of :class:`~torchmagic.core.monitor.TrainingMonitor`."""

    step: int
    backward_calls: int
    total: int | None
    result: RunResult
    schedule: StepSchedule
    histograms: bool
    stop_request: StopRequest
    _opt_mode: bool
    _last_event: str | None
    _last_lrs: Sequence[Any]
    _step_values: StepValues
    _param_names: ParameterNames
    _step_points: StepPoints | None
    _closure: ClosureSteps
    _frameworks: FrameworkLink
    _optimizer_book: OptimizerBook

    def _plan(self) -> RunPlan:
        return RunPlan(
            self.step, self.backward_calls, self.total, self._frameworks.planned_steps, self._optimizer_book.iterations()
        )

    def _finish_step(self, lrs: Sequence[Any] | None) -> None:
        raise NotImplementedError

    def _lrs(self, groups: list[dict[str, Any]]) -> Sequence[Any]:
        """The groups' learning rates; the previous step's object while they are the same objects
        (a constant rate), so most steps make none. A tuple of floats is not tracked by the collector."""
        last = self._last_lrs
        if len(groups) == 1:
            lr = groups[0].get("lr")
            return last if len(last) == 1 and last[0] is lr else (lr,)
        lrs = tuple(g.get("lr") for g in groups)
        return last if len(last) == len(lrs) and all(a is b for a, b in zip(last, lrs)) else lrs

    def _optimizer_created(self, optimizer: torch.optim.Optimizer) -> None:
        # From now on a backward() is a micro-batch of a step that an optimizer step ends, even before
        # the first step: the first step of a loop that accumulates gradients is not split.
        self._opt_mode = True
        self._frameworks.look()

    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, closure: bool) -> None:
        __tracebackhide__ = True
        self._opt_mode = True
        scheduled = self.schedule(self.step + 1)
        if closure:
            if self.stop_request.requested and not self._frameworks.stops_run:
                self.stop_request.raise_if_requested(self.step)  # the boundary of a closure's step
            self._closure.begin(optimizer, scheduled)
        # Everything below reads whole gradients or parameters: only on scheduled steps.
        if scheduled:
            if not closure:
                self._take_gradients(optimizer)
            dense = updated_params(optimizer, closure)
            self._step_values.keep_update_reference(self._param_names(dense), dense)

    def _take_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        self._step_values.take_gradients(optimizer_gradients(optimizer), replace=False, histograms=self.histograms)

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, closure: bool) -> None:
        values = self._step_values
        book = self._optimizer_book
        if optimizer is book.sole and values.micro_batches and not closure and not values.update_samples:
            # The usual loop's step, most steps: its one optimizer (which stepped before, so this is
            # not the run's first step, and _opt_mode is on) after this step's backward() calls.
            book.shared_loss = values.loss
            values.optimizer = book.stepped(optimizer)
            values.iteration = book.iteration
            self._finish_step(self._lrs(optimizer.param_groups))
            self._last_event = "optimizer"
            return
        self._opt_mode = True  # also here: before_optimizer_step is reported on scheduled steps only
        if self._closure.optimizer is not None:
            if self._closure.wants_gradients:  # a closure that ran no backward(): the gradients as they are
                self._take_gradients(optimizer)
            values.evaluations = self._closure.end()
        elif closure and self._step_points is not None:  # met with the pre-step hook off: hear the next ones from their start
            self._closure.seen = True
            self._step_points.report_before_step(True)
        if values.update_samples:
            values.take_update_ratios(updated_params(optimizer, closure))
        if self.step == 0:
            self._frameworks.look()  # a framework stepping an optimizer made before train()/fit()
        lrs = self._lrs(optimizer.param_groups)
        if values.micro_batches == 0 and self._last_event == "optimizer":
            if book.is_last(optimizer):
                return  # the same optimizer stepping again on the same gradients: same step
            # another optimizer on the same gradients (one per layer): a step of its own, with their loss
            values.loss, values.loss_reported = book.shared_loss, True
        else:
            book.shared_loss = values.loss
        values.optimizer = book.stepped(optimizer)
        values.iteration = book.iteration
        self._finish_step(lrs)
        self._last_event = "optimizer"

    def _skip_step(self) -> None:
        """GradScaler found inf/NaN gradients and skipped optimizer.step()."""
        self.result.skipped_steps += 1
        self._step_values = self._step_values.after_skipped_step()
