"""Where a training loop's steps show themselves: PyTorch's global optimizer hooks, and temporary
wrappers where no hook exists.

``torch.autograd.backward`` (which ``Tensor.backward`` calls) is wrapped for the run: the scalar
passed to it is the loss, and its return ends a micro-batch. ``GradScaler.scale`` is patched to
remember the unscaled loss behind the scaled one, and ``GradScaler.step`` to notice a step it
skipped for non-finite gradients: the optimizer's own hooks never run then.
``Optimizer.__init__`` is wrapped to hear of optimizers created during the run (in the cell, or
inside a framework's ``train()``/``fit()``) before their first step: PyTorch has no global hook
for construction, and the step that counts micro-batches must know from the first ``backward()``
on that an optimizer will end it. Everything goes through :class:`Attachments`, so the run's one
``detach`` puts it all back. Reached from code ``torch.compile`` traces (a compiled
``optimizer.step``, a compiled training step), each of them runs outside the graph
(:mod:`~torchmagic.core.compiled`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.optim import optimizer as optim_module

from torchmagic.core.attachments import Attachments
from torchmagic.core.compiled import eager_only, frame_callback, outside_graph, tracing

_TENSOR, _FLOAT32 = torch.Tensor, torch.float32


@dataclass(frozen=True)
class StepEvents:
    """What a monitor is told, in the order a step happens."""

    # the loss (see StepPoints.loss_of); None when backward() got no scalar
    before_backward: Callable[[torch.Tensor | float | None], None]
    after_backward: Callable[[], None]
    # the optimizer, and whether step() was given a closure (its backward() runs inside step())
    before_optimizer_step: Callable[[torch.optim.Optimizer, bool], None]
    after_optimizer_step: Callable[[torch.optim.Optimizer, bool], None]
    step_skipped: Callable[[], None]  # GradScaler skipped optimizer.step()
    backward_failed: Callable[[], None] = lambda: None  # backward() raised (after before_backward)
    optimizer_created: Callable[[torch.optim.Optimizer], None] = lambda optimizer: None


class _ScaledLoss(NamedTuple):
    scaled: torch.Tensor  # what GradScaler.scale returned, and backward() will get
    loss: torch.Tensor  # the loss before scaling, detached


def attach_step_events(attachments: Attachments, events: StepEvents) -> StepPoints:
    """Report every backward() and optimizer step of the process to ``events`` until detached."""
    points = StepPoints(events)
    points.attach(attachments)
    return points


class StepPoints:
    """The attached points; ``before_optimizer_step`` is reported only while :meth:`report_before_step`
    says so (it reads whole gradients: the monitor wants it on scheduled steps only)."""

    def __init__(self, events: StepEvents) -> None:
        self.events = events
        self.optimizer_steps = 0
        self.scaled: _ScaledLoss | None = None
        self._pre_hook: Any = None
        self.reporting_before_step = False

    def attach(self, attachments: Attachments) -> None:
        self.report_before_step(True)
        attachments.callback(lambda: self.report_before_step(False))
        attachments.hook(optim_module.register_optimizer_step_post_hook(self._after_optimizer_step))
        self._wrap_backward(attachments)
        self._patch_grad_scaler(attachments)
        self._note_construction(attachments)

    def report_before_step(self, on: bool) -> None:
        if on and self._pre_hook is None:
            self._pre_hook = optim_module.register_optimizer_step_pre_hook(eager_only(self._before_optimizer_step))
        elif not on and self._pre_hook is not None:
            self._pre_hook.remove()
            self._pre_hook = None
        self.reporting_before_step = self._pre_hook is not None  # read at every step boundary

    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.events.before_optimizer_step(optimizer, _has_closure(args, kwargs))

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if tracing() or frame_callback() is not None:  # inside torch.compile (core.compiled)
            outside_graph(self._after_optimizer_step, optimizer, args, kwargs)
            return
        self.optimizer_steps += 1
        self.events.after_optimizer_step(optimizer, (len(args) > 1 or bool(kwargs)) and _has_closure(args, kwargs))

    def _note_construction(self, attachments: Attachments) -> None:
        original = torch.optim.Optimizer.__init__
        created = self.events.optimizer_created

        @functools.wraps(original)
        def __init__(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
            original(optimizer, *args, **kwargs)
            created(optimizer)

        attachments.patch(torch.optim.Optimizer, "__init__", eager_only(__init__))

    def _wrap_backward(self, attachments: Attachments) -> None:
        original = torch.autograd.backward
        loss_of = self.loss_of
        before, after, failed = self.events.before_backward, self.events.after_backward, self.events.backward_failed

        points = self

        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if tracing() or frame_callback() is not None:  # inside torch.compile (core.compiled)
                return outside_graph(backward, tensors, *args, **kwargs)
            t = tensors
            if type(t) is _TENSOR and t.dtype is _FLOAT32 and t.is_cpu and points.scaled is None and t.numel() == 1:
                before(t.item())  # the usual loss: loss_of's first answer, read here
            else:
                before(loss_of(t))
            try:
                out = original(tensors, *args, **kwargs)
            except BaseException:
                failed()
                raise
            after()
            return out

        backward.__wrapped__ = original  # type: ignore[attr-defined]
        attachments.patch(torch.autograd, "backward", backward)

    def _patch_grad_scaler(self, attachments: Attachments) -> None:
        scaler_cls = torch.amp.GradScaler
        original_scale = scaler_cls.scale
        original_step = scaler_cls.step
        points = self

        def scale(scaler: Any, outputs: Any) -> Any:
            scaled = original_scale(scaler, outputs)
            if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
                points.scaled = _ScaledLoss(scaled, outputs.detach())
            return scaled

        def step(scaler: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            before = points.optimizer_steps
            out = original_step(scaler, optimizer, *args, **kwargs)
            if points.optimizer_steps == before and scaler.is_enabled():
                points.events.step_skipped()
            return out

        attachments.patch(scaler_cls, "scale", eager_only(scale))
        attachments.patch(scaler_cls, "step", eager_only(step))

    def loss_of(self, tensors: Any) -> torch.Tensor | float | None:
        """The scalar backward() was given, unscaled: a CPU loss in float32 or narrower as a Python
        float (read at once, free there: ``item()`` needs no detached copy), any other as a detached
        0-d float32/float64 tensor."""
        t = tensors
        if type(t) is not torch.Tensor and not isinstance(t, torch.Tensor):
            if isinstance(t, (tuple, list)) and len(t) == 1 and isinstance(t[0], torch.Tensor):
                t = t[0]
            else:
                return None
        if t.numel() != 1:
            return None
        scaled = self.scaled
        if scaled is not None:
            self.scaled = None
            if scaled.scaled is t:
                t = scaled.loss
        if t.is_cpu and t.dtype is not torch.float64 and t.is_floating_point():
            return t.item()
        value = t.detach()
        if value.dim() != 0:
            value = value.reshape(())
        if value.dtype is not torch.float32 and value.dtype is not torch.float64:
            value = value.float()
        return value


def _has_closure(args: Any, kwargs: Any) -> bool:
    """``step(closure)`` or ``step(closure=...)``; ``args`` starts with the optimizer itself."""
    return (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None
