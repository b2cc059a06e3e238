"""The training monitor: attaches to an unmodified loop through PyTorch's extension points.

A *step* is one optimizer step; several ``backward()`` calls before it (gradient accumulation)
are its micro-batches. Without any optimizer, each ``backward()`` is a step. Everything attached
is kept in one :class:`Attachments` and removed on every exit path.

Hot-path rules: statistics stay on the tensors' device in a small buffer; the monitor moves them
to the host once per refresh (wall clock, about 4 Hz). Costly statistics (per-parameter norms,
histograms, activation statistics, update ratios) follow a :class:`StepSchedule`, and so does
watching every module's forward: other steps cost a few hook calls whatever the model's size.

The parts: :mod:`~torchmagic.core.attachpoints` reports backward() and optimizer steps,
:mod:`~torchmagic.core.forwards` sees module forwards, :mod:`~torchmagic.core.backward_steps` and
:mod:`~torchmagic.core.optimizer_steps` handle the two halves of a step, :class:`StepValues` holds
what the step in progress gathered, :class:`~torchmagic.core.pending.PendingSteps` the finished
steps until the refresh, and :class:`StepRecorder` turns them into the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from torchmagic.core.alerts import AlertBook
from torchmagic.core.attachments import Attachments
from torchmagic.core.attachpoints import StepEvents, StepPoints, attach_step_events
from torchmagic.core.backward_steps import BackwardHandling
from torchmagic.core.closures import ClosureSteps
from torchmagic.core.forwards import ROOTS_KEPT as ROOTS_KEPT  # re-exported: the bound tests check
from torchmagic.core.forwards import ForwardHooks
from torchmagic.core.frameworks import FrameworkLink
from torchmagic.core.interrupt import StopRequest
from torchmagic.core.logged import checked_values
from torchmagic.core.naming import ModuleNames, ParameterNames
from torchmagic.core.optimizer_book import OptimizerBook
from torchmagic.core.optimizer_steps import OptimizerStepHandling
from torchmagic.core.pending import PendingSteps
from torchmagic.core.recording import LateMetric, StepRecorder, recent_rate
from torchmagic.core.result import RunResult
from torchmagic.core.runplan import settle_status
from torchmagic.core.schedule import DEFAULT_EVERY, StepSchedule
from torchmagic.core.snapshot import RunClock
from torchmagic.core.snapshot import Snapshot as Snapshot  # re-exported: displays import it from here
from torchmagic.core.stepstate import NamedTensors, StepValues
from torchmagic.core.warnings_capture import capture_warnings, hide_own_warnings

_ACTIVE: list[TrainingMonitor] = []
ADAPT_WINDOW_S = 0.2  # the shortest span the step rate of the default schedule is measured over
# ... but for its first look, with the first refresh this soon: a fast loop's statistics steps
# otherwise come every 10 steps for the first quarter second, thousands of them.
FIRST_LOOK_S = 0.05


def active_monitor() -> TrainingMonitor | None:
    return _ACTIVE[-1] if _ACTIVE else None


class TrainingMonitor(BackwardHandling, OptimizerStepHandling):
    """Watches a training loop run inside ``with TrainingMonitor(...):``.

    Args:
        models: models to name modules after (the first is named without a prefix); models the
            loop creates itself are found by the global module hooks.
        optimizers: optimizers whose steps are the steps; others are found when they step.
        model_names: variable names for ``models``, used as prefixes for all but the first.
        every: the :class:`StepSchedule` period for costly statistics (0: never); None: every
            10 steps, the period doubled while statistics steps would come more than 20 times a second.
        histograms: also record per-parameter gradient histograms on scheduled steps.
        total: the number of ``backward()`` calls the loop will make, when known (progress, ETA).
        refresh_interval: seconds between refreshes (host transfers and display updates).
        on_refresh: callbacks taking a :class:`Snapshot`.
        catch_sigint: turn the first Ctrl-C into a stop at the next step boundary.
    """

    def __init__(
        self,
        models: Iterable[torch.nn.Module] = (),
        optimizers: Iterable[torch.optim.Optimizer] = (),
        *,
        model_names: Iterable[str] | None = None,
        every: int | None = None,
        histograms: bool = False,
        total: int | None = None,
        refresh_interval: float = 0.25,
        on_refresh: Iterable[Callable[[Snapshot], None]] = (),
        catch_sigint: bool = True,
        capture_python_warnings: bool = True,
    ) -> None:
        self.models = list(models)
        self.optimizers = list(optimizers)
        self._model_names = list(model_names or [])
        self.schedule = StepSchedule(DEFAULT_EVERY if every is None else every, auto=every is None)
        self.histograms = histograms
        self.total = total
        self.refresh_interval = refresh_interval
        self.on_refresh = list(on_refresh)
        self.catch_sigint = catch_sigint
        self.capture_python_warnings = capture_python_warnings

        self.result = RunResult(total_steps=None)
        self.alerts = AlertBook()
        self.stop_request = StopRequest()
        self.names = ModuleNames()
        self._attachments = Attachments()
        self._reset()

    # ----------------------------------------------------------------- lifecycle
    def _reset(self) -> None:
        self.step = 0
        self.schedule.period = self.schedule.every
        self.backward_calls = 0
        self._opt_mode = bool(self.optimizers)
        self._last_event: str | None = None  # "backward" or "optimizer"
        self._stats_step = False  # the latest root forward ran under autograd on a scheduled step
        self._step_values = StepValues()
        self._pending = PendingSteps()
        self._late: list[LateMetric] = []
        self._last_lrs: Sequence[Any] = ()
        self._lrs_on_host = True  # no learning rate is a tensor (those wait for the refresh's transfer)
        self._param_names = ParameterNames(self.names)
        self._forwards = ForwardHooks(self.names, self._begin_root, self._current_step, self.stop_request)
        self._forwards.on_long_step = self._long_step
        self._recorder = StepRecorder(
            self.result, self.alerts, self.schedule, self._param_names, self._forwards.shapes.layers.values
        )
        self._nonfinite = self._recorder.nonfinite
        self._step_points: StepPoints | None = None
        self._closure = ClosureSteps()
        self._optimizer_book = OptimizerBook(self.result, self.schedule)
        self._frameworks = FrameworkLink(self.log, lambda: self.stop_request.requested)
        now = time.perf_counter()
        self._clock = RunClock(start=now, last_step=now)
        self._rate_mark = (now, 0)  # (time, step) the step rate for the schedule is measured from
        self._running = False

    def __enter__(self) -> TrainingMonitor:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.stop(exc)

    def start(self) -> None:
        self._reset()
        self.stop_request.begin()
        for i, model in enumerate(self.models):
            prefix = "" if i == 0 else (self._model_names[i] if i < len(self._model_names) else None)
            self.names.add_root(model, prefix)
        a = self._attachments
        self._frameworks.bind(a)
        try:
            self._forwards.install(a)  # watching: the first step's forwards are all seen
            events = StepEvents(
                self._before_backward,
                self._after_backward,
                self._before_optimizer_step,
                self._after_optimizer_step,
                self._skip_step,
                self._backward_failed,
                self._optimizer_created,
            )
            self._step_points = attach_step_events(a, events)
            if self.catch_sigint:
                self.stop_request.install(a)
            hide_own_warnings(a)
            if self.capture_python_warnings:
                capture_warnings(a, self._on_warning)
            _ACTIVE.append(self)
            a.callback(lambda: _ACTIVE.remove(self) if self in _ACTIVE else None)
        except BaseException:
            a.detach()
            raise
        self._running = True
        self._clock.start = self._clock.last_step = time.perf_counter()
        self._rate_mark = (self._clock.start, 0)
        self._refresh(time.perf_counter())
        if self.schedule.auto:
            self._clock.last_refresh -= max(0.0, self.refresh_interval - FIRST_LOOK_S)

    def stop(self, exc: BaseException | None = None) -> RunResult:
        """Detach everything, take the last values, and settle the status. Idempotent."""
        if not self._running:
            return self.result
        self._running = False
        try:
            if self._step_values.micro_batches > 0 and not self._opt_mode:
                self._finish_step(None)
        finally:
            errors = self._attachments.detach()
        r = self.result
        r.elapsed = time.perf_counter() - self._clock.start
        r.steps = self.step  # before the final refresh: what it records cannot disagree with it
        settle_status(r, self.alerts, exc, self.stop_request.requested, errors)
        try:
            self._refresh(time.perf_counter(), final=True)
        except Exception as refresh_error:  # noqa: BLE001 - e.g. a device in an error state after OOM
            r.error = (r.error + "; " if r.error else "") + f"final refresh: {refresh_error!r}"
            self.alerts.add("error", self.step, f"the final refresh failed: {refresh_error!r}")
            r.alerts = self.alerts.alerts
        return r

    @property
    def _outputs(self) -> list[list[torch.Tensor]]:
        """The kept leaf outputs, per root forward (tests check they stay bounded)."""
        return [root.outputs for root in self._forwards.kept.roots]

    def _current_step(self) -> int:
        """The step the loop is in, or begins next at a boundary (a backward-only step ends at the
        next backward() call, so after its backward() the next forward belongs to the next step)."""
        return self.step + 1 + (not self._opt_mode and self._step_values.micro_batches > 0)

    def _at_step_boundary(self) -> bool:
        """Where a requested stop may raise: not inside step() (a closure), nor through a framework's loop
        (its callback stops it after the step instead)."""
        if self._closure.optimizer is not None or self._frameworks.stops_run:
            return False
        return not self._forwards.in_backward and (self._step_values.micro_batches == 0 or not self._opt_mode)

    def _plan_forwards(self) -> None:
        """At a step boundary: watch every module's forward in the coming step only if it needs it."""
        scheduled = self.schedule(self._current_step())
        want = scheduled or self._locating()
        if want != self._forwards.watching:
            self._forwards.watch() if want else self._forwards.unwatch()
        if self._opt_mode and self._step_points is not None:  # until an optimizer shows itself, keep hearing it
            self._step_points.report_before_step(scheduled or self._closure.seen)  # a closure's step: on every step

    def _finish_step(self, lrs: Sequence[Any] | None) -> None:
        step = self.step = self.step + 1
        now = time.perf_counter()
        if lrs is not self._last_lrs and lrs is not None:
            self._last_lrs = lrs
            self._lrs_on_host = not any(isinstance(lr, torch.Tensor) for lr in lrs)
        clock = self._clock
        values = self._step_values
        if self._lrs_on_host and values.plain():
            self._pending.add_plain(step, now - clock.start, now - clock.last_step, self._last_lrs, values)
            values.reset()  # the row holds all of it: no object per step is left for the garbage collector
        else:
            self._pending.add(step, now - clock.start, now - clock.last_step, self._last_lrs, values)
            self._step_values = StepValues()
        clock.last_step = now
        if now - clock.last_refresh >= self.refresh_interval:
            self._refresh(now)
            self._adapt_schedule(now)
        if self._opt_mode and self._running:
            points = self._step_points
            if (
                self.schedule(step + 1)
                or self._forwards.watching
                or self._nonfinite.unlocated is not None
                or (points is not None and points.reporting_before_step)
            ):
                self._plan_forwards()  # something changes at this boundary; most steps skip the call

    def _adapt_schedule(self, now: float) -> None:
        """At a boundary, after a refresh recorded the steps so far under the period in force: the
        default schedule's period for the step rate since the last look."""
        since, step = self._rate_mark
        if now - since >= (ADAPT_WINDOW_S if step else FIRST_LOOK_S) and self.step - step >= 10:
            self.schedule.adapt((self.step - step) / (now - since))
            self._rate_mark = (now, self.step)

    # ----------------------------------------------------------------- forwards
    def _begin_root(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        __tracebackhide__ = True
        if self._forwards.in_backward:
            return  # a forward run again inside backward() (activation checkpointing)
        if self.stop_request.requested and self._at_step_boundary():
            self.stop_request.raise_if_requested(self._current_step() - 1)
        forwards = self._forwards
        grad = torch.is_grad_enabled()
        self._stats_step = False
        if forwards.watching:
            if not self.names.known(module):
                self.names.add_root(module)
            forwards.hook_root(module)
            pending = self._nonfinite.unlocated
            if pending is not None and pending.at is None:
                pending.at = self._current_step()  # the forward watched to name where the non-finite loss began
            self._stats_step = grad and self.schedule(self._current_step())
        forwards.begin_root(module, args, kwargs, grad=grad, trace_all=self._stats_step)
        if time.perf_counter() >= forwards.long_step_at:
            self._long_step()

    def _long_step(self) -> None:
        self._refresh(time.perf_counter())  # a long step: keep the display (memory, elapsed) alive

    def _finite_check(self) -> NamedTensors:
        return self._forwards.finite_check(self._param_names, after_alert=self._nonfinite.unlocated is not None)

    def _locate_nonfinite(self, values: StepValues) -> None:
        """On CPU: the loss of this micro-batch is non-finite; name where it began, or watch the next step."""
        step = self._current_step()
        check = self._finite_check()
        values.loss_reported = True  # named here or alerted as unlocated: the refresh does not alert it again
        if self._nonfinite.name_first(check.names, [float(n) for n in check.tensors], step):
            return
        self._nonfinite.nonfinite_loss(step, self._forwards.watching)
        if self._locating():
            self._forwards.watch()  # from the next forward on, even one of this same step

    def _locating(self) -> bool:
        """A non-finite loss waits for its module, and no watched forward has run for it yet."""
        pending = self._nonfinite.unlocated
        return pending is not None and pending.at is None

    # ----------------------------------------------------------------- user-facing hooks
    def log(self, values: dict[str, Any]) -> None:
        """Values logged after a step's optimizer.step() and before the next backward() belong to that step."""
        checked = checked_values(values)  # all or nothing: a bad value keeps none of the call
        after_step = self._step_values.micro_batches == 0 and self.step > 0 and self._last_event == "optimizer"
        for name, value in checked.items():
            if after_step:
                self._late.append(LateMetric(self.step, name, value))
            else:
                self._step_values.metrics[name] = value

    def _on_warning(self, category: str, message: str) -> None:
        first_line = message.strip().splitlines()[0] if message.strip() else category
        self.alerts.add("warning", self.step + 1, f"{category}: {first_line}", key=f"{category}:{message}")

    # ----------------------------------------------------------------- refresh
    def progress(self) -> tuple[float | None, float | None]:
        return self._plan().progress(time.perf_counter() - self._clock.start)

    def _refresh(self, now: float, final: bool = False) -> None:
        self._clock.last_refresh = now
        self._forwards.long_step_at = now + 4 * self.refresh_interval
        r = self.result
        r.steps = self.step
        r.alerts = self.alerts.alerts
        pending, self._pending = self._pending, PendingSteps()
        if pending:
            self._recorder.absorb(pending)
        if self._late:
            late, self._late = self._late, []
            self._recorder.absorb_late(late)
        layers = self._forwards.shapes.layers
        if len(r.layers) != len(layers):  # LayerInfo rows change in place; only new ones need a new list
            r.layers = list(layers.values())
        self._recorder.sample_memory(now - self._clock.start, self.step, final or not self._running)
        plan = self._plan()
        r.total_steps = plan.total_steps() or r.total_steps
        fraction, eta = plan.progress(now - self._clock.start)
        snapshot = Snapshot(r, fraction, eta, recent_rate(r.columns), final)
        for callback in self.on_refresh:
            callback(snapshot)
