"""Finished steps waiting on the device, and their one move to the host per refresh.

A :class:`PendingStep` keeps what a step gathered as device tensors; :class:`Transfer` collects
those of a whole refresh and moves them with one ``to_host`` call (one copy per device), each
value with the function that stores its floats in a :class:`HostValues`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch

from torchmagic.core import deferred, devicestats
from torchmagic.core.stepstate import StepValues


class LateMetric(NamedTuple):
    """A value logged after its step's optimizer.step(), before the next backward()."""

    step: int
    name: str
    value: float | torch.Tensor


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs five times more, once per step
class PendingStep:
    """A finished step whose values may still wait on the device."""

    step: int
    time: float
    dt: float
    lrs: Sequence[Any]  # per parameter group: a number, or a tensor for a learning rate kept on the device
    values: StepValues

    def only_loss(self) -> bool:
        """Nothing but the loss waits on the device (most steps): the refresh's fast path."""
        return self.values.only_loss() and not any(isinstance(lr, torch.Tensor) for lr in self.lrs)


class HostRows(NamedTuple):
    """:class:`~torchmagic.core.stepstate.NamedRows` or ``NamedTensors`` after the transfer: the
    values of all names, flat."""

    names: list[str]
    values: list[float]


@dataclass
class HostValues:
    """A pending step's device values (but its loss) after the transfer; what it lacked stays empty."""

    grad_norms: list[float] = field(default_factory=list)
    update_ratios: list[float] = field(default_factory=list)
    update_names: list[str] = field(default_factory=list)  # the parameters of update_ratios
    histograms: list[float] | None = None  # flat [parameters * HIST_BINS]
    metrics: dict[str, float] = field(default_factory=dict)  # those logged as tensors
    lrs: dict[int, float] = field(default_factory=dict)  # those kept as tensors, by parameter group
    activations: list[HostRows] = field(default_factory=list)
    finite_checks: list[HostRows] = field(default_factory=list)

    def set_histograms(self, values: list[float]) -> None:
        self.histograms = values

    def set_metric(self, name: str, values: list[float]) -> None:
        self.metrics[name] = values[0]

    def set_lr(self, group: int, values: list[float]) -> None:
        self.lrs[group] = values[0]

    def add_activations(self, names: list[str], values: list[float]) -> None:
        self.activations.append(HostRows(names, values))

    def add_finite_check(self, names: list[str], values: list[float]) -> None:
        self.finite_checks.append(HostRows(names, values))


class Transfer:
    """Device values of many steps moved to the host in one ``to_host`` call."""

    def __init__(self) -> None:
        self._items: list[torch.Tensor | list[torch.Tensor]] = []
        self._stores: list[Callable[[list[float]], None]] = []

    def want(self, value: object, store: Callable[[list[float]], None]) -> None:
        if isinstance(value, (torch.Tensor, list)):
            self._items.append(value)
            self._stores.append(store)

    def want_losses(self, losses: list[Any]) -> list[float | None]:
        """The steps' losses (floats, device tensors or None), filled in by :meth:`run`: one stacked
        item for all the tensors."""
        if set(map(type, losses)) <= {float}:  # the CPU's losses, read already: told by a C loop
            return losses
        index = [i for i, v in enumerate(losses) if type(v) is not float and isinstance(v, torch.Tensor)]
        if not index:
            return losses if None not in losses else [v if type(v) is float else None for v in losses]
        out: list[float | None] = [v if type(v) is float else None for v in losses]

        def store(values: list[float]) -> None:
            for i, v in zip(index, values):
                out[i] = v

        self.want([losses[i] for i in index], store)
        return out

    def want_step(self, rec: PendingStep) -> HostValues:
        """Queue a step's device values but its loss; the returned record is filled by :meth:`run`."""
        v, host = rec.values, HostValues()
        if v.grad_norms:
            self.want(v.grad_norms, host.grad_norms.extend)
        if v.update_ratios is not None:
            host.update_names = list(v.update_ratios.names)
            self.want(v.update_ratios.rows, host.update_ratios.extend)
        self.want(v.histograms, host.set_histograms)
        for name, value in v.metrics.items():
            self.want(value, partial(host.set_metric, name))
        for rows in v.activations:
            self.want(rows.rows, partial(host.add_activations, rows.names))
        for check in v.finite_checks:
            self.want(check.tensors, partial(host.add_finite_check, check.names))
        for group, lr in enumerate(rec.lrs):
            self.want(lr, partial(host.set_lr, group))
        return host

    def want_deferred(self, pending: Mapping[int, PendingStep], hosts: dict[int, HostValues]) -> None:
        """The samples that waited for the refresh, reduced for all steps together (see deferred)."""
        acts = [(hosts[i], s) for i in hosts for s in pending[i].values.activation_samples]
        if acts:
            reduced = deferred.activation_rows([s for _, s in acts])

            def store_activations(values: list[float]) -> None:
                for (host, s), a, n in zip(acts, reduced.starts, reduced.counts):
                    host.add_activations(s.names, values[a : a + n])

            self.want(reduced.values, store_activations)
        ups = [(hosts[i], u) for i in hosts for u in pending[i].values.update_samples if u.after is not None]
        if ups:
            ratios = deferred.update_ratio_rows([u for _, u in ups])

            def store_ratios(values: list[float]) -> None:
                for (host, u), a, n in zip(ups, ratios.starts, ratios.counts):
                    host.update_names += u.names
                    host.update_ratios += values[a : a + n]

            self.want(ratios.values, store_ratios)

    def run(self) -> None:
        for store, values in zip(self._stores, devicestats.to_host(self._items)):
            store(values)
