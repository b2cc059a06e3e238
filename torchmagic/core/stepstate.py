"""What one training step gathers while it runs, on the tensors' own device.

The monitor keeps one :class:`StepValues` for the step in progress and swaps in a fresh one at
each step boundary; the finished one travels to the recorder as it is, so a new per-step value
is one field here (and where the recorder reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from torchmagic.core import devicestats


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
    samples: int = 0
    loss: torch.Tensor | None = None  # summed over micro-batches
    metrics: dict[str, Any] = field(default_factory=dict)  # torchmagic.log() values
    # per-parameter gradient norms as returned by one fused call (0-d device tensors), with the
    # parameters they belong to; the global norm is computed from them on the host
    grad_params: list[torch.Tensor] = field(default_factory=list)
    grad_norms: list[torch.Tensor] = field(default_factory=list)
    histograms: torch.Tensor | None = None  # [parameters, HIST_BINS]
    update_reference: NamedTensors | None = None  # parameter samples from before optimizer.step()
    update_ratios: NamedRows | None = None
    activations: list[NamedRows] = field(default_factory=list)  # rows of ActivationStats
    # per micro-batch: norms of the root input and leaf outputs (non-finite exactly where a tensor
    # held NaN/Inf), named for an alert
    finite_checks: list[NamedTensors] = field(default_factory=list)

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss = loss if self.loss is None else self.loss + loss

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
        self.update_reference = NamedTensors(names, devicestats.update_samples(params))

    def take_update_ratios(self, params: list[torch.Tensor]) -> None:
        """After optimizer.step(): the update/weight ratio of each parameter kept before it."""
        ref, self.update_reference = self.update_reference, None
        if ref is None or len(params) != len(ref.tensors):
            return
        ratios = devicestats.update_ratios(ref.tensors, params)
        if ratios is not None:
            self.update_ratios = NamedRows(ref.names, ratios)

    def after_skipped_step(self) -> StepValues:
        """Values for the step that follows one GradScaler skipped: its loss and gradients are
        dropped, but what it observed (logged metrics, activations, non-finite checks) is reported
        with the next step, which keeps its number."""
        return StepValues(
            metrics=self.metrics,
            update_ratios=self.update_ratios,
            activations=self.activations,
            finite_checks=self.finite_checks,
        )
