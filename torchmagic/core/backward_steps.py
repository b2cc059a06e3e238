"""What a training monitor does when ``backward()`` begins, returns or fails.

Kept apart from :mod:`~torchmagic.core.monitor` as a base class of :class:`TrainingMonitor`, as
:mod:`~torchmagic.core.optimizer_steps` is: a ``backward()`` takes the micro-batch's loss and
samples, ends a step in loops without an optimizer, and is where a non-finite loss on the CPU is
met. Most calls take the first branch of :meth:`BackwardHandling._before_backward`: a CPU loss
already read, an unwatched step, no closure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchmagic.core.closures import ClosureSteps
from torchmagic.core.forwards import ForwardHooks
from torchmagic.core.interrupt import StopRequest
from torchmagic.core.naming import ModuleNames
from torchmagic.core.nonfinite import NonfiniteAlerts
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.stepstate import NamedTensors, StepValues


class BackwardHandling:
    """The ``backward()`` half of :class:`~torchmagic.core.monitor.TrainingMonitor`."""

    step: int
    backward_calls: int
    histograms: bool
    schedule: StepSchedule
    names: ModuleNames
    stop_request: StopRequest
    _opt_mode: bool
    _last_event: str | None
    _stats_step: bool
    _step_values: StepValues
    _forwards: ForwardHooks
    _closure: ClosureSteps
    _nonfinite: NonfiniteAlerts
    # defined by the monitor and by OptimizerStepHandling
    _at_step_boundary: Callable[[], bool]
    _current_step: Callable[[], int]
    _finish_step: Callable[[Sequence[Any] | None], None]
    _plan_forwards: Callable[[], None]
    _take_gradients: Callable[[torch.optim.Optimizer], None]
    _locate_nonfinite: Callable[[StepValues], None]
    _finite_check: Callable[[], NamedTensors]

    def _before_backward(self, loss: torch.Tensor | float | None) -> None:
        __tracebackhide__ = True
        if self.stop_request.requested and self._at_step_boundary():
            self.stop_request.raise_if_requested(self._current_step() - 1)  # loops that call no module stop here
        forwards = self._forwards
        if type(loss) is float and self._opt_mode and not forwards.watching and self._closure.optimizer is None:
            # Most steps: a CPU loss, read already; the micro-batch's kept input is no longer needed.
            values = self._step_values
            forwards.in_backward = True
            values.samples += forwards.samples
            forwards.samples = 0
            if self._nonfinite.locating and not math.isfinite(loss):
                self._locate_nonfinite(values)
            if values.loss is None:
                values.loss = loss
            else:
                values.add_loss(loss, float32=True)
            kept = forwards.kept
            if kept.roots:
                kept.clear()
            else:
                kept.first_input = None  # all an unwatched forward kept
            return
        if self._closure.reevaluation():  # LBFGS again on the same batch: counted, not a micro-batch
            forwards.in_backward = True
            forwards.samples = 0
            forwards.kept.clear()
            return
        if not self._opt_mode and self._step_values.micro_batches > 0:
            self._finish_step(None)
        forwards.in_backward = True
        values, kept, watching = self._step_values, forwards.kept, forwards.watching
        values.samples += forwards.samples
        forwards.samples = 0
        if loss is None:
            kept.clear()
            return
        if watching:
            values.watched = True
            if self._stats_step and not values.activation_samples and not values.activations:
                values.take_activations(*kept.leaf_outputs())
        if isinstance(loss, float) or loss.is_cpu:  # no synchronisation on the CPU; no tensor kept lets the allocator reuse it
            value = loss if isinstance(loss, float) else float(loss)
            if self._nonfinite.locating and not math.isfinite(value):
                self._locate_nonfinite(values)
            values.add_loss(value, float32=isinstance(loss, float) or loss.dtype is torch.float32)
        else:
            if watching and self._nonfinite.locating:
                check = self._finite_check()  # accelerators: the norms wait on the device, read at the refresh
                if check.tensors:
                    values.finite_checks.append(check)
            values.add_loss(loss)
        kept.clear()

    def _after_backward(self) -> None:
        forwards = self._forwards
        forwards.in_backward = forwards.batch_counted = False
        closure = self._closure
        if closure.optimizer is not None:
            closure.evaluations += 1
            if closure.evaluations > 1:
                return
            if closure.wants_gradients:  # the step's own gradients, from its first evaluation
                closure.wants_gradients = False
                self._take_gradients(closure.optimizer)
        self._step_values.micro_batches += 1
        self.backward_calls += 1
        self._last_event = "backward"
        if not self._opt_mode:
            if self.schedule(self.step + 1):
                params = [p for root in self.names.roots for p in root.parameters()]
                self._step_values.take_gradients(params, replace=True, histograms=self.histograms)
            self._plan_forwards()

    def _backward_failed(self) -> None:
        self._forwards.in_backward = False
