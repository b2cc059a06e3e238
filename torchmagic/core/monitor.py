"""The training monitor: attaches to an unmodified loop through PyTorch's extension points.

A *step* is one optimizer step; several ``backward()`` calls before it (gradient accumulation)
are its micro-batches. Without any optimizer, each ``backward()`` is a step. Everything attached
is kept in one :class:`Attachments` and removed on every exit path.

Hot-path rules: statistics stay on the tensors' device in a small buffer; the monitor moves them
to the host once per refresh (wall clock, about 4 Hz). Costly statistics (per-parameter norms,
histograms, activation statistics, update ratios) follow a :class:`StepSchedule`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module

from torchmagic.core import devicestats, shapes
from torchmagic.core.alerts import AlertBook
from torchmagic.core.attachments import Attachments
from torchmagic.core.interrupt import StopRequest, TrainingStopped
from torchmagic.core.naming import ModuleNames
from torchmagic.core.recording import INPUT_PREFIX, PendingStep, StepRecorder, recent_rate
from torchmagic.core.result import LayerInfo, RunResult
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.warnings_capture import capture_warnings

OUTPUTS_KEPT = 4096  # leaf outputs kept per root forward, for locating a non-finite value
ROOTS_KEPT = 4  # root forwards (model, loss, ...) whose outputs are kept until backward()


@dataclass
class Snapshot:
    """What a display gets at each refresh; ``result`` is live and grows between refreshes."""

    result: RunResult
    fraction: float | None  # progress 0..1 when the loop's length is known
    eta: float | None  # seconds
    samples_per_s: float | None
    final: bool = False


_ACTIVE: list[TrainingMonitor] = []


def active_monitor() -> TrainingMonitor | None:
    return _ACTIVE[-1] if _ACTIVE else None


class TrainingMonitor:
    """Watches a training loop run inside ``with TrainingMonitor(...):``.

    Args:
        models: models to name modules after (the first is named without a prefix); models the
            loop creates itself are found by the global module hooks.
        optimizers: optimizers whose steps are the steps; others are found when they step.
        model_names: variable names for ``models``, used as prefixes for all but the first.
        every: the :class:`StepSchedule` period for costly statistics (0: never).
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
        every: int = 10,
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
        self.schedule = StepSchedule(every)
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
        self._reset_counters()

    # ----------------------------------------------------------------- lifecycle
    def _reset_counters(self) -> None:
        self.step = 0
        self.backward_calls = 0
        self._micro = 0
        self._opt_mode = bool(self.optimizers)
        self._last_event: str | None = None
        self._loss_acc: torch.Tensor | None = None
        self._scaled: tuple[torch.Tensor, torch.Tensor] | None = None
        self._samples = 0
        self._batch_counted = False
        self._depth = 0
        self._metrics: dict[str, Any] = {}
        self._grad_params: list[torch.Tensor] = []
        self._grad_norms: list[torch.Tensor] = []
        self._hist: torch.Tensor | None = None
        self._update_ref: tuple[list[str], list[torch.Tensor]] | None = None
        self._update_ratios: tuple[list[str], torch.Tensor] | None = None
        self._activations: list[tuple[list[str], torch.Tensor]] = []  # (leaf names, [n, 4] statistics)
        self._finite_checks: list[tuple[list[str], list[torch.Tensor]]] = []
        # Leaf outputs of the current micro-batch (references only; autograd keeps most alive
        # anyway). On CPU they are checked only when the loss is non-finite. On other devices that
        # check would synchronise, so one fused norm over them yields a "finite" vector that waits
        # on the device and is read at the refresh, next to the loss it explains.
        # Bounded to the last few root forwards, so a loop that runs forwards without backward()
        # under autograd (validation without no_grad) does not keep activations alive.
        self._outputs: deque[list[tuple[torch.nn.Module, torch.Tensor]]] = deque(maxlen=ROOTS_KEPT)
        self._root_inputs: deque[tuple[torch.nn.Module, tuple[Any, ...]]] = deque(maxlen=ROOTS_KEPT)
        self._root_sigs: dict[int, Any] = {}
        self._tracing = False
        self._grad_forward = False
        self._stats_step = False
        self._pending: list[PendingStep] = []
        self._late: list[tuple[int, str, Any]] = []  # metrics logged just after their step ended
        self._layers: dict[int, LayerInfo] = {}
        self._layer_sigs: dict[int, tuple[Any, Any]] = {}
        self._param_names: dict[int, str] = {}
        self._opt_steps_seen = 0
        self._last_lrs: list[Any] = []
        self._recorder = StepRecorder(self.result, self.alerts, self.schedule, self._names_of, lambda: self._layers.values())
        self._t0 = time.perf_counter()
        self._last_step_t = self._t0
        self._last_refresh = 0.0
        self._running = False

    def __enter__(self) -> TrainingMonitor:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self.stop(exc)
        return False

    def start(self) -> None:
        self._reset_counters()
        for i, model in enumerate(self.models):
            prefix = "" if i == 0 else (self._model_names[i] if i < len(self._model_names) else None)
            self.names.add_root(model, prefix)
        a = self._attachments
        try:
            a.hook(nn_module.register_module_forward_pre_hook(self._before_forward))
            a.hook(nn_module.register_module_forward_hook(self._after_forward, always_call=True))
            a.hook(optim_module.register_optimizer_step_pre_hook(self._before_optimizer_step))
            a.hook(optim_module.register_optimizer_step_post_hook(self._after_optimizer_step))
            self._patch_backward()
            self._patch_grad_scaler()
            if self.catch_sigint:
                self.stop_request.install(a)
            if self.capture_python_warnings:
                capture_warnings(a, self._on_warning)
            _ACTIVE.append(self)
            a.callback(lambda: _ACTIVE.remove(self) if self in _ACTIVE else None)
        except BaseException:
            a.detach()
            raise
        self._running = True
        self._t0 = self._last_step_t = time.perf_counter()
        self._refresh(time.perf_counter())

    def stop(self, exc: BaseException | None = None) -> RunResult:
        """Detach everything, take the last values, and settle the status. Idempotent."""
        if not self._running:
            return self.result
        self._running = False
        try:
            if self._micro > 0 and not self._opt_mode:
                self._finish_step(None)
        finally:
            errors = self._attachments.detach()
        r = self.result
        r.elapsed = time.perf_counter() - self._t0
        if exc is None:
            r.status = "interrupted" if self.stop_request.requested else "completed"
        elif isinstance(exc, KeyboardInterrupt):
            r.status = "interrupted"
        else:
            r.status = "failed"
            r.error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, torch.OutOfMemoryError):
                self.alerts.add("oom", self.step + 1, str(exc).splitlines()[0] if str(exc) else "out of memory")
        if errors:
            r.error = (r.error + "; " if r.error else "") + f"cleanup: {errors[0]!r}"
        try:
            self._refresh(time.perf_counter(), final=True)
        except Exception as refresh_error:  # noqa: BLE001 - e.g. a device in an error state after OOM
            r.error = (r.error + "; " if r.error else "") + f"final refresh: {refresh_error!r}"
        return r

    # ----------------------------------------------------------------- attach points
    def _patch_backward(self) -> None:
        original = torch.autograd.backward
        monitor = self

        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            monitor._before_backward(tensors)
            out = original(tensors, *args, **kwargs)
            monitor._after_backward()
            return out

        backward.__wrapped__ = original  # type: ignore[attr-defined]
        self._attachments.patch(torch.autograd, "backward", backward)

    def _patch_grad_scaler(self) -> None:
        scaler_cls = torch.amp.GradScaler
        original_scale = scaler_cls.scale
        original_step = scaler_cls.step
        monitor = self

        def scale(scaler: Any, outputs: Any) -> Any:
            scaled = original_scale(scaler, outputs)
            if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
                monitor._scaled = (scaled, outputs.detach())
            return scaled

        def step(scaler: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            before = monitor._opt_steps_seen
            out = original_step(scaler, optimizer, *args, **kwargs)
            if monitor._opt_steps_seen == before and scaler.is_enabled():
                monitor._skip_step()
            return out

        self._attachments.patch(scaler_cls, "scale", scale)
        self._attachments.patch(scaler_cls, "step", step)

    # ----------------------------------------------------------------- backward / steps
    def _before_backward(self, tensors: Any) -> None:
        if not self._opt_mode and self._micro > 0:
            self._finish_step(None)
        t = tensors if isinstance(tensors, torch.Tensor) else None
        if t is None and isinstance(tensors, (tuple, list)) and len(tensors) == 1 and isinstance(tensors[0], torch.Tensor):
            t = tensors[0]
        if t is None or t.numel() != 1:
            self._outputs.clear()
            self._root_inputs.clear()
            return
        value = t.detach()
        if self._scaled is not None and self._scaled[0] is t:
            value = self._scaled[1]
        self._scaled = None
        if value.dim() != 0:
            value = value.reshape(())
        if value.dtype not in (torch.float32, torch.float64):
            value = value.float()
        if self._stats_step and not self._activations:
            self._summarise_activations()
        if value.device.type == "cpu":
            if not math.isfinite(float(value)) and not self.alerts.has("nonfinite"):
                self._locate_nonfinite(self.step + 1)
        elif not self.alerts.has("nonfinite"):
            self._queue_finite_check()
        self._outputs.clear()
        self._root_inputs.clear()
        self._loss_acc = value if self._loss_acc is None else self._loss_acc + value

    def _after_backward(self) -> None:
        self._micro += 1
        self.backward_calls += 1
        self._batch_counted = False
        self._last_event = "backward"
        if not self._opt_mode and self.schedule(self.step + 1):
            self._take_gradients([p for root in self.names.roots for p in root.parameters()])

    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._opt_mode = True
        # Everything below reads whole gradients or parameters: only on scheduled steps.
        if self.schedule(self.step + 1):
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self._take_gradients(params)
            # The update/weight ratio from the same strided sample of each parameter before and
            # after the step: a copy of a few thousand elements instead of the whole model.
            dense = [p for p in params if not p.is_sparse]
            with torch.no_grad():
                before = [devicestats.strided_sample(p, devicestats.SAMPLE).clone() for p in dense]
                self._update_ref = (self._names_of(dense), before)

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._opt_steps_seen += 1
        if self._update_ref is not None:
            names, before = self._update_ref
            after = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None and not p.is_sparse]
            if len(after) == len(before):
                with torch.no_grad():
                    samples = [devicestats.strided_sample(p, devicestats.SAMPLE) for p in after]
                    delta = devicestats.grad_norms(list(torch._foreach_sub(samples, before)))
                    weight = devicestats.grad_norms(samples)
                    if delta:
                        ratios = torch.stack([d.float() for d in delta]) / (torch.stack([w.float() for w in weight]) + 1e-12)
                        self._update_ratios = (names, ratios)
            self._update_ref = None
        lrs = [g.get("lr") for g in optimizer.param_groups]
        if self._micro == 0 and self._last_event == "optimizer":
            return  # a second optimizer stepping on the same gradients: same step
        self._finish_step(lrs)
        self._last_event = "optimizer"

    def _skip_step(self) -> None:
        """GradScaler found inf/NaN gradients and skipped optimizer.step()."""
        self.result.skipped_steps += 1
        self._loss_acc = None
        self._micro = 0
        self._samples = 0
        self._grad_params = []
        self._grad_norms = []
        self._hist = None
        self._update_ref = None

    def _take_gradients(self, params: list[torch.Tensor]) -> None:
        """Scheduled steps only: gradient norms read every gradient once, a pass over memory
        comparable to a share of the optimizer's own."""
        dense = [p for p in params if p.grad is not None and not p.grad.is_sparse]
        if not dense:
            return
        norms = devicestats.grad_norms([p.grad for p in dense])  # type: ignore[misc]
        if not self._opt_mode:
            self._grad_params, self._grad_norms = dense, norms  # backward-only steps: the latest gradients
        else:
            self._grad_params += dense  # a second optimizer's parameters join the step
            self._grad_norms += norms
        if self.histograms:
            device = norms[0].device
            self._hist = torch.stack([devicestats.log_magnitude_histogram(p.grad).to(device) for p in dense])  # type: ignore[arg-type]

    def _names_of(self, params: list[torch.Tensor]) -> list[str]:
        missing = [p for p in params if id(p) not in self._param_names]
        if missing:
            self._param_names = self.names.parameter_names()
        return [self._param_names.get(id(p), f"param{i}") for i, p in enumerate(params)]

    def _finish_step(self, lrs: list[Any] | None) -> None:
        self.step += 1
        now = time.perf_counter()
        if lrs is not None:
            self._last_lrs = lrs
        rec = PendingStep(
            step=self.step,
            time=now - self._t0,
            dt=now - self._last_step_t,
            samples=self._samples,
            lrs=list(self._last_lrs),
            loss=self._loss_acc,
            metrics=self._metrics,
            grad_params=self._grad_params,
            grad_norms=self._grad_norms,
            update_ratios=self._update_ratios,
            histograms=self._hist,
            activations=self._activations,
            finite_checks=self._finite_checks,
        )
        self._pending.append(rec)
        self._last_step_t = now
        self._micro = 0
        self._samples = 0
        self._loss_acc = None
        self._grad_params = []
        self._grad_norms = []
        self._metrics = {}
        self._update_ratios = None
        self._hist = None
        self._activations = []
        self._finite_checks = []
        if now - self._last_refresh >= self.refresh_interval:
            self._refresh(now)

    # ----------------------------------------------------------------- forward hooks
    def _before_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True
        if self._depth == 0:
            self._begin_root(module, args)
        self._depth += 1

    def _begin_root(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True
        if self.stop_request.requested and self._micro == 0:
            raise TrainingStopped(f"training stopped after step {self.step}")
        if not self.names.known(module):
            self.names.add_root(module)
        grad = torch.is_grad_enabled()
        self._grad_forward = grad
        self._stats_step = grad and self.schedule(self.step + 1)
        # Shapes are traced for every module only when the root's input signature changes (a
        # short last batch, a new sequence length) or on a scheduled step: per-module signatures
        # on every forward would cost more than the rest of the monitor together.
        sig = tuple((a.shape, a.dtype) if isinstance(a, torch.Tensor) else shapes.signature(a) for a in args)
        key = id(module)
        self._tracing = self._stats_step or self._root_sigs.get(key) != sig
        self._root_sigs[key] = sig
        if grad:
            if not self._batch_counted:
                bs = shapes.batch_size(args, module)
                if bs:
                    self._samples += bs
                    self._batch_counted = True
            self._root_inputs.append((module, args))
            self._outputs.append([])
        now = time.perf_counter()
        if now - self._last_refresh >= 4 * self.refresh_interval:
            self._refresh(now)  # a long step: keep the display (memory, elapsed) alive

    def _after_forward(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._tracing:
            self._trace_shapes(module, args, output)
        if not self._grad_forward or not self.names.is_leaf(module):
            return
        out = output if isinstance(output, torch.Tensor) else shapes.first_tensor(output)
        if out is None or not (out.is_floating_point() or out.is_complex()):
            return
        if self._outputs and len(self._outputs[-1]) < OUTPUTS_KEPT:
            self._outputs[-1].append((module, out))

    def _layer_name(self, module: torch.nn.Module) -> str:
        name = self.names.name(module)
        return type(module).__name__ if name is None else name

    def _trace_shapes(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        key = id(module)
        sig = (shapes.signature(args), shapes.signature(output))
        info = self._layers.get(key)
        if info is None:
            info = self._layers[key] = LayerInfo(self._layer_name(module), type(module).__name__)
        elif self._layer_sigs.get(key) != sig:
            info.shape_changes += 1
            info.last_change_step = self.step + 1
        if self._layer_sigs.get(key) != sig:
            self._layer_sigs[key] = sig
            info.input, info.output = shapes.format_signature(sig[0]), shapes.format_signature(sig[1])

    def _summarise_activations(self) -> None:
        """Scheduled step: statistics of every leaf's output of this micro-batch, in a few fused ops."""
        seen: set[int] = set()
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        for module, t in (item for outputs in self._outputs for item in outputs):
            if id(module) not in seen:  # a module called many times (an RNN cell): its first call
                seen.add(id(module))
                names.append(self._layer_name(module))
                tensors.append(t)
        for idx, stats in devicestats.activation_summaries(tensors) if tensors else []:
            self._activations.append(([names[i] for i in idx], stats))

    def _kept_tensors(self) -> tuple[list[str], list[torch.Tensor]]:
        """The micro-batch's input and leaf outputs in forward order, named for an alert."""
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        for root, args in list(self._root_inputs)[:1]:
            for t in shapes.tensors_in(args):
                if t.is_floating_point() or t.is_complex():
                    names.append(f"{INPUT_PREFIX}{self._layer_name(root)}>")
                    tensors.append(t)
        for module, t in (item for outputs in self._outputs for item in outputs):
            names.append(self._layer_name(module))
            tensors.append(t)
        return names, tensors

    def _finite_norms(self) -> tuple[list[str], list[torch.Tensor]]:
        """One fused norm over the kept tensors: non-finite exactly where a tensor holds NaN/Inf."""
        names, tensors = self._kept_tensors()
        if not tensors:
            return names, []
        with torch.no_grad():
            return names, list(torch._foreach_norm(tensors))

    def _queue_finite_check(self) -> None:
        """Accelerators: the norms wait on the device and are read at the refresh."""
        names, norms = self._finite_norms()
        if norms:
            self._finite_checks.append((names, norms))

    def _locate_nonfinite(self, step: int) -> None:
        """On CPU: the loss of this micro-batch is non-finite; name the first module that went so."""
        names, norms = self._finite_norms()
        self._outputs.clear()
        self._root_inputs.clear()
        if not self._recorder.name_first_nonfinite(names, [float(n) for n in norms], step):
            self._alert_nonfinite("loss", None, step)

    def _alert_nonfinite(self, what: str, module: str | None, step: int, note: str | None = None) -> None:
        self._recorder.alert_nonfinite(what, module, step, note)

    # ----------------------------------------------------------------- user-facing hooks
    def log(self, values: dict[str, Any]) -> None:
        """Values logged after a step's optimizer.step() and before the next backward() belong to that step."""
        after_step = self._micro == 0 and self.step > 0 and self._last_event == "optimizer"
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
                if value.numel() != 1:
                    raise ValueError(f"torchmagic.log: {name!r} has {value.numel()} elements; log scalars")
            elif not isinstance(value, (int, float, bool)):
                raise TypeError(f"torchmagic.log: {name!r} is a {type(value).__name__}; log numbers or 1-element tensors")
            if after_step:
                self._late.append((self.step, str(name), value))
            else:
                self._metrics[str(name)] = value

    def _on_warning(self, category: str, message: str) -> None:
        first_line = message.strip().splitlines()[0] if message.strip() else category
        self.alerts.add("warning", self.step + 1, f"{category}: {first_line}", key=f"{category}:{message}")

    # ----------------------------------------------------------------- refresh
    def progress(self) -> tuple[float | None, float | None]:
        if not self.total or self.backward_calls == 0:
            return None, None
        fraction = min(1.0, self.backward_calls / self.total)
        elapsed = time.perf_counter() - self._t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        return fraction, eta

    def _refresh(self, now: float, final: bool = False) -> None:
        self._last_refresh = now
        pending, self._pending = self._pending, []
        if pending:
            self._recorder.absorb(pending)
        if self._late:
            late, self._late = self._late, []
            self._recorder.absorb_late(late)
        self.result.layers = list(self._layers.values())
        self._recorder.sample_memory(now - self._t0, self.step, final or not self._running)
        self.result.steps = self.step
        self.result.alerts = self.alerts.alerts
        if self.total and self.backward_calls:
            self.result.total_steps = max(self.step, round(self.step * self.total / self.backward_calls))
        fraction, eta = self.progress()
        rate = recent_rate(self.result.columns)
        snapshot = Snapshot(self.result, fraction, eta, rate, final)
        for callback in self.on_refresh:
            callback(snapshot)
