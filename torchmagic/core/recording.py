"""From finished steps on the device to history rows, layer statistics and alerts on the host.

The monitor hands the steps finished since the last refresh; :class:`StepRecorder` moves their
device values to the host in one transfer per device, appends their rows to the history column
by column, and checks them (non-finite, exploding, vanishing). A refresh's work per step carrying
only a loss (most steps) is done by C loops (list slices, ``sum``, numpy), and nothing grows with
the steps recorded before.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from torchmagic.core import devicestats, memory
from torchmagic.core.alerts import AlertBook
from torchmagic.core.history import Value
from torchmagic.core.layerstats import LayerRecorder
from torchmagic.core.nonfinite import NonfiniteAlerts
from torchmagic.core.pending import PendingSteps
from torchmagic.core.result import LayerInfo, RunResult
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.stepstate import StepValues
from torchmagic.core.transfer import HostValues, LateMetric, PendingStep, Transfer

__all__ = ["BUILTIN_COLUMNS", "LateMetric", "PendingStep", "StepRecorder", "is_builtin_column", "recent_rate"]

EXPLODING_FACTOR = 100.0  # a global grad norm this many times the recent median is "exploding"
VANISHING_NORM = 1e-8
MEMORY_SAMPLE_INTERVAL = 0.5  # seconds: at most two memory samples a second
# The columns the monitor measures itself (and lr_1, lr_2, … for more parameter groups).
BUILTIN_COLUMNS = (
    *("step", "time", "loss", "lr", "grad_norm", "samples_per_s", "step_time", "evaluations"),
    *("optimizer", "iteration"),  # with several optimizers (see optimizer_book)
)


def is_builtin_column(name: str) -> bool:
    return name in BUILTIN_COLUMNS or (name.startswith("lr_") and name[3:].isdigit())


class StepRecorder:
    """Turns pending steps into history rows, per-layer rows and alerts, in step order."""

    def __init__(
        self,
        result: RunResult,
        alerts: AlertBook,
        schedule: StepSchedule,
        names_of: Callable[[list[torch.Tensor]], list[str]],
        layers: Callable[[], Iterable[LayerInfo]],
    ) -> None:
        self.result = result
        self.alerts = alerts
        self.nonfinite = NonfiniteAlerts(alerts)
        self._names_of = names_of
        self._layers = layers
        self._layer_recorder = LayerRecorder(result, schedule, names_of)
        self._grad_history: list[float] = []

    def absorb(self, pending: PendingSteps) -> None:
        """Move a batch of finished steps to the host (one transfer per device) and record them.

        If the transfer fails (a device in an error state), the rows are written all the same,
        without the values that waited on the device, and the error is raised after.
        """
        transfer = Transfer()
        losses = transfer.want_losses(pending.column("loss"))
        full = pending.full
        hosts = {i: transfer.want_step(rec) for i, rec in full.items() if not rec.only_loss()}
        failure: Exception | None = None
        try:
            transfer.want_deferred(full, hosts)
            transfer.run()
        except Exception as exc:  # noqa: BLE001 - re-raised once the rows are consistent
            failure = exc
            losses = [None] * len(pending)
            hosts = {i: HostValues() for i in hosts}
        steps = pending.column("step")
        grad_norms = self._append_rows(pending, steps, losses, hosts)
        by_name = {info.name: info for info in self._layers()} if hosts else {}
        # Only rows with more than a finite loss have anything to check: most refreshes visit a few.
        nonfinite = _nonfinite_rows(losses)
        for i in sorted({*full, *nonfinite}) if nonfinite else full:
            rec, host = full.get(i), hosts.get(i)
            step = steps[i]
            if host is not None and self.nonfinite.locating:
                for check in host.finite_checks:
                    if self.nonfinite.name_first(check.names, check.values, step):
                        break
            self._check_loss(step, losses[i], rec.values if rec is not None else None)
            if rec is not None and host is not None:
                self._check_gradients(rec, grad_norms[i], host)
                self._layer_recorder.record(rec, host, by_name)
        if failure is not None:
            raise failure

    def _append_rows(
        self, pending: PendingSteps, steps: list[int], losses: list[float | None], hosts: Mapping[int, HostValues]
    ) -> list[Value]:
        """One row per step; returns the grad_norm column of the rows."""
        n = len(pending)
        grad_norm: list[Value] = [None] * n
        lrs = pending.column("lrs")
        distinct = _distinct(lrs)
        dt = pending.column("dt")
        cols: dict[str, list[Value]] = {
            "step": cast(list[Value], steps),
            "time": pending.column("time"),
            "loss": losses,
            "lr": _first_numbers(lrs, distinct),
            "grad_norm": grad_norm,
            "samples_per_s": _rates(pending.column("samples"), dt),
            "step_time": dt,
        }
        if any(len(group_lrs) > 1 for group_lrs in distinct):
            for i, group_lrs in enumerate(lrs):
                for j in range(1, len(group_lrs)):
                    cols.setdefault(f"lr_{j}", [None] * n)[i] = _number(group_lrs[j])
        for i, rec in pending.full.items():
            if rec.values.evaluations:  # steps with a closure: how many times step() evaluated it
                cols.setdefault("evaluations", [None] * n)[i] = rec.values.evaluations
            for name, value in rec.values.metrics.items():
                if not isinstance(value, torch.Tensor):
                    cols.setdefault(name, [None] * n)[i] = float(value)
        for i, host in hosts.items():
            for group, lr in host.lrs.items():
                cols.setdefault("lr" if group == 0 else f"lr_{group}", [None] * n)[i] = lr
            for name, value in host.metrics.items():
                cols.setdefault(name, [None] * n)[i] = value
            if host.grad_norms:
                grad_norm[i] = math.sqrt(math.fsum(v * v for v in host.grad_norms))
        if len(self.result.optimizer_names) > 1:
            self._optimizer_columns(cols, pending)
        self.result.columns.append_rows(cols, n)
        return grad_norm

    def _optimizer_columns(self, cols: dict[str, list[Value]], pending: PendingSteps) -> None:
        """Which optimizer made each step and the loop iteration it belongs to, once a second optimizer
        stepped; the rows before it (one optimizer's steps, an iteration each) are filled in then."""
        history = self.result.columns
        if "optimizer" not in history:
            for row, step in enumerate(history["step"] if "step" in history else []):
                history.set("optimizer", row, 0)
                history.set("iteration", row, step)
        cols["optimizer"] = pending.column("optimizer")
        cols["iteration"] = [it or None for it in pending.column("iteration")]

    def absorb_late(self, late: list[LateMetric]) -> None:
        """Metrics logged right after their step ended, written into that step's row."""
        host = iter(devicestats.to_host([m.value for m in late if isinstance(m.value, torch.Tensor)]))
        for m in late:
            value = next(host)[0] if isinstance(m.value, torch.Tensor) else float(m.value)
            self.result.columns.set(m.name, m.step - 1, value)

    def _check_loss(self, step: int, loss: float | None, values: StepValues | None) -> None:
        """``values``: the step's, when it kept them (a plain step was neither watched nor alerted yet)."""
        nonfinite = self.nonfinite
        if loss is not None and not math.isfinite(loss) and not (values is not None and values.loss_reported):
            nonfinite.nonfinite_loss(step, values is not None and values.watched)
        if nonfinite.unlocated is not None and values is not None and values.watched:
            nonfinite.watched_step_done(step)

    def _check_gradients(self, rec: PendingStep, gn: Value, host: HostValues) -> None:
        step = rec.step
        if gn is None:
            return
        if not math.isfinite(gn):
            bad = next((i for i, v in enumerate(host.grad_norms) if not math.isfinite(v)), None)
            name = self._names_of(rec.values.grad_params)[bad] if bad is not None else None
            self.nonfinite.gradient(name, step)
            return
        self.nonfinite.gradients_finite(step)
        recent = self._grad_history[-50:]
        if len(recent) >= 10:
            median = statistics.median(recent)
            if median > 0 and gn > EXPLODING_FACTOR * median:
                message = f"gradient norm {gn:.3g} is {gn / median:.0f}x the recent median {median:.3g}"
                self.alerts.add("exploding_grad", step, message, key="exploding")
        if 0 < gn < VANISHING_NORM or (gn == 0 and step > 1):
            self.alerts.add("vanishing_grad", step, f"gradient norm {gn:.3g} (vanishing)", key="vanishing")
        self._grad_history.append(gn)
        if len(self._grad_history) > 1000:
            del self._grad_history[:500]

    def sample_memory(self, elapsed: float, step: int, final: bool) -> None:
        mem = self.result.memory
        times = mem.get("time")
        last = times.last if times is not None else None
        if last is not None and elapsed - last < MEMORY_SAMPLE_INTERVAL and not final:
            return  # the final refresh always samples
        row: dict[str, Value] = {"time": elapsed, "step": step}
        row.update(memory.memory_sample())
        mem.append_row(row)


def _nonfinite_rows(losses: list[float | None]) -> list[int]:
    """The rows whose loss is NaN or infinite: none in most refreshes, told by one C-level sum."""
    if not losses or (None not in losses and math.isfinite(sum(cast(list[float], losses)))):
        return []  # a sum of finite losses can overflow only past 1e308: then the rows are read one by one
    return [i for i, loss in enumerate(losses) if loss is not None and loss - loss != 0]


def _rates(samples: list[int], dt: list[float]) -> list[Value]:
    """Samples per second of each row; None where it counted no sample or took no time."""
    count, seconds = np.array(samples, dtype=np.float64), np.array(dt, dtype=np.float64)
    valid = (count > 0) & (seconds > 0)
    rates = np.divide(count, seconds, out=np.zeros_like(seconds), where=valid).tolist()
    if valid.all():
        return cast(list[Value], rates)
    return [r if ok else None for r, ok in zip(rates, valid.tolist())]


def _distinct(lrs: list[Sequence[Any]]) -> list[Sequence[Any]]:
    """The learning-rate objects of the rows, each once (rows share one while it does not change;
    told by identity, as comparing tensors would wait on them)."""
    if lrs and len(set(map(id, lrs))) == 1:  # the usual refresh: one C loop
        return [lrs[0]]
    return list({id(group_lrs): group_lrs for group_lrs in lrs}.values())


def _first_numbers(lrs: list[Sequence[Any]], distinct: list[Sequence[Any]]) -> list[Value]:
    """The first group's learning rate of each row, read once per run of rows sharing one object
    (``distinct``: the rows' objects, each once)."""
    if len(distinct) == 1:
        return [_number(distinct[0][0]) if distinct[0] else None] * len(lrs)
    out: list[Value] = []
    last: Sequence[Any] | None = None
    value: Value = None
    for group_lrs in lrs:
        if group_lrs is not last:
            last, value = group_lrs, _number(group_lrs[0]) if group_lrs else None
        out.append(value)
    return out


def _number(lr: Any) -> float | None:
    """A learning rate that is a number (tensors come through the transfer)."""
    return float(lr) if isinstance(lr, (int, float)) else None


def recent_rate(cols: Mapping[str, Any]) -> float | None:
    """Median samples/s over the last 20 steps."""
    column = cols.get("samples_per_s")
    rates = [r for r in column[-20:] if r] if column is not None else []
    return statistics.median(rates) if rates else None
