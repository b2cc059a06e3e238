"""What one training step gathers while it runs, on the tensors' own device.

The monitor keeps one :class:`StepValues` for the step in progress and swaps in a fresh one at
each step boundary; the finished one travels to the recorder as it is, so a new per-step value
is one field here (and where the recorder reads it).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from torchmagic.core import deferred, devicestats

_FLOAT32 = struct.Struct("f")


class NamedTensors(NamedTuple):
    """Tensors with the names they are reported under, in the same order."""

    names: list[str]
    tensors: list[torch.Tensor]


class NamedRows(NamedTuple):
    """One device tensor holding a row of statistics per name (a scalar per name for update ratios)."""

    names: list[str]
    rows: torch.Tensor


@dataclass(slots=True)
class StepValues:
    """The values of one step; device tensors wait here until a refresh moves them to the host."""

    micro_batches: int = 0  # backward() calls so far
    evaluations: int = 0  # backward() calls inside step(closure) (LBFGS re-evaluates); 0 without a closure
    samples: int = 0
    loss: torch.Tensor | float | None = None  # summed over micro-batches; a float when it was on the CPU
    metrics: dict[str, Any] = field(default_factory=dict)  # torchmagic.log() values
    # per-parameter gradient norms as returned by one fused call (0-d device tensors), with the
    # parameters they belong to; the global norm is computed from them on the host
    grad_params: list[torch.Tensor] = field(default_factory=list)
    grad_norms: list[torch.Tensor] = field(default_factory=list)
    histograms: torch.Tensor | None = None  # [parameters, HIST_BINS]
    # samples whose reductions wait for the refresh (see deferred), then their rows
    update_samples: list[deferred.UpdateSamples] = field(default_factory=list)
    update_ratios: NamedRows | None = None
    activation_samples: list[deferred.ActivationSamples] = field(default_factory=list)
    activations: list[NamedRows] = field(default_factory=list)  # rows of ActivationStats
    # per micro-batch: norms of the root input and leaf outputs (non-finite exactly where a tensor
    # held NaN/Inf), named for an alert
    finite_checks: list[NamedTensors] = field(default_factory=list)
    watched: bool = False  # every module's forward was seen in one of its micro-batches
    optimizer: int | None = None  # the index of the optimizer whose step ended the step (see optimizer_book)
    iteration: int = 0  # the loop iteration the step belongs to, counted by the optimizer book
    loss_reported: bool = False  # a non-finite loss of this step was already alerted on the host

    def add_loss(self, loss: torch.Tensor | float, *, float32: bool = False) -> None:
        """A micro-batch's loss: a CPU loss is read at once (free there), so no tensor of it is kept.
        A float32 loss is summed in float32, as the loop's own ``total += loss`` (and a framework's
        logged loss) would be."""
        if self.loss is None:
            self.loss = loss
        elif float32 and isinstance(self.loss, float) and isinstance(loss, float):
            self.loss = _FLOAT32.unpack(_FLOAT32.pack(self.loss + loss))[0]  # exact sum, rounded once to float32
        else:
            self.loss = self.loss + loss

    def plain(self) -> bool:
        """Nothing but what a row of :class:`~torchmagic.core.pending.PendingSteps` holds."""
        return not (
            self.grad_params
            or self.metrics
            or self.histograms is not None
            or self.update_ratios is not None
            or self.update_samples
            or self.activation_samples
            or self.activations
            or self.finite_checks
            or self.watched
            or self.loss_reported
            or self.evaluations
        )

    def reset(self) -> None:
        """Ready for the next step, after :meth:`plain` said the row holds everything of this one."""
        self.micro_batches = self.samples = self.iteration = 0
        self.loss = self.optimizer = None

    def only_loss(self) -> bool:
        """Nothing but the loss (and numbers) waits on the device: the refresh's fast path."""
        return not (
            self.grad_norms
            or self.histograms is not None
            or self.update_ratios is not None
            or self.update_samples
            or self.activation_samples
            or self.activations
            or self.finite_checks
            or (self.metrics and any(isinstance(v, torch.Tensor) for v in self.metrics.values()))
        )

    def take_gradients(self, params: Sequence[torch.Tensor], *, replace: bool, histograms: bool) -> None:
        """Norms (and histograms) of the parameters' dense gradients. ``replace``: the latest
        gradients stand for the step (backward-only steps); otherwise a second optimizer's
        parameters join the step."""
        dense: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        for p in params:
            if p.grad is not None and not p.grad.is_sparse:
                dense.append(p)
                grads.append(p.grad)
        if not dense:
            return
        norms = devicestats.grad_norms(grads)
        if replace:
            self.grad_params, self.grad_norms = dense, norms
        else:
            self.grad_params += dense
            self.grad_norms += norms
        if histograms:
            device = norms[0].device
            self.histograms = torch.stack([devicestats.log_magnitude_histogram(g).to(device) for g in grads])

    def keep_update_reference(self, names: list[str], params: list[torch.Tensor]) -> None:
        """Before optimizer.step(): a strided sample of each parameter, for the update/weight ratio."""
        self.update_samples = deferred.sample_update(names, params)

    def take_update_ratios(self, params: list[torch.Tensor]) -> None:
        """After optimizer.step(): the same samples again; the ratios are reduced at the refresh."""
        if not self.update_samples or self.update_samples[0].after is not None:
            return
        if sum(len(u.sizes) for u in self.update_samples) != len(params):
            self.update_samples = []
            return
        self.update_samples = deferred.resample_update(self.update_samples, params)
        if sum(u.before.numel() for u in self.update_samples) > deferred.REDUCE_AT_ONCE:
            self.reduce_samples()

    def take_activations(self, names: list[str], tensors: list[torch.Tensor]) -> None:
        self.activation_samples = deferred.sample_activations(names, tensors)
        if sum(s.stack.numel() for s in self.activation_samples) > deferred.REDUCE_AT_ONCE:
            self.reduce_samples()

    def reduce_samples(self) -> None:
        """Turn this step's waiting samples into rows now (the refresh does it for many steps at once)."""
        if self.activation_samples:
            names, values = deferred.in_order(
                deferred.activation_rows(self.activation_samples), [s.names for s in self.activation_samples]
            )
            self.activations.append(NamedRows(names, values.reshape(-1, 4)))
            self.activation_samples = []
        if self.update_samples and self.update_samples[0].after is not None:
            names, values = deferred.in_order(
                deferred.update_ratio_rows(self.update_samples), [u.names for u in self.update_samples]
            )
            self.update_ratios = NamedRows(names, values)
            self.update_samples = []

    def after_skipped_step(self) -> StepValues:
        """Values for the step that follows one GradScaler skipped: its loss and gradients are
        dropped, but what it observed (logged metrics, activations, non-finite checks) is reported
        with the next step, which keeps its number."""
        return StepValues(
            metrics=self.metrics,
            update_ratios=self.update_ratios,
            activation_samples=self.activation_samples,
            activations=self.activations,
            finite_checks=self.finite_checks,
            watched=self.watched,
        )
