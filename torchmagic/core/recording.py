"""From finished steps on the device to history rows, layer statistics and alerts on the host.

The monitor hands a batch of :class:`PendingStep` at each refresh; :class:`StepRecorder` moves
their device values to the host in one transfer per device, appends one history row per step,
checks the values (non-finite, exploding, vanishing) and keeps the scheduled per-layer rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch

from torchmagic.core import devicestats, memory
from torchmagic.core.alerts import AlertBook
from torchmagic.core.devicestats import ActivationStats
from torchmagic.core.result import LayerInfo, LayerRow, RunResult
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.stepstate import StepValues

EXPLODING_FACTOR = 100.0  # a global grad norm this many times the recent median is "exploding"
VANISHING_NORM = 1e-8
LAYER_HISTORY_LIMIT = 200_000
HISTOGRAM_SNAPSHOTS = 256
INPUT_PREFIX = "<input of "  # names a micro-batch's input among its leaf outputs: "<input of NAME>"


class LateMetric(NamedTuple):
    """A value logged after its step's optimizer.step(), before the next backward()."""

    step: int
    name: str
    value: float | torch.Tensor


@dataclass(frozen=True, slots=True)
class PendingStep:
    """A finished step whose values may still wait on the device."""

    step: int
    time: float
    dt: float
    lrs: list[Any]  # per parameter group: a number, or a tensor for a learning rate kept on the device
    values: StepValues


class HostRows(NamedTuple):
    """:class:`NamedRows` or :class:`NamedTensors` after the transfer: the values of all names, flat."""

    names: list[str]
    values: list[float]


@dataclass
class HostValues:
    """A pending step's device values after the transfer; what the step did not have stays empty."""

    loss: float | None = None
    grad_norms: list[float] = field(default_factory=list)
    update_ratios: list[float] = field(default_factory=list)
    histograms: list[float] | None = None  # flat [parameters * HIST_BINS]
    metrics: dict[str, float] = field(default_factory=dict)  # those logged as tensors
    lrs: dict[int, float] = field(default_factory=dict)  # those kept as tensors, by parameter group
    activations: list[HostRows] = field(default_factory=list)
    finite_checks: list[HostRows] = field(default_factory=list)

    def set_loss(self, values: list[float]) -> None:
        self.loss = values[0]

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


class _Transfer:
    """Device values of many steps moved to the host in one ``to_host`` call, each with the
    function that stores its floats."""

    def __init__(self) -> None:
        self._items: list[torch.Tensor | list[torch.Tensor]] = []
        self._stores: list[Callable[[list[float]], None]] = []

    def want(self, value: object, store: Callable[[list[float]], None]) -> None:
        if isinstance(value, (torch.Tensor, list)):
            self._items.append(value)
            self._stores.append(store)

    def want_step(self, rec: PendingStep) -> HostValues:
        """Queue a step's device values; the returned record is filled by :meth:`run`."""
        v, host = rec.values, HostValues()
        self.want(v.loss, host.set_loss)
        if v.grad_norms:
            self.want(v.grad_norms, host.grad_norms.extend)
        if v.update_ratios is not None:
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

    def run(self) -> None:
        for store, values in zip(self._stores, devicestats.to_host(self._items)):
            store(values)


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
        self.schedule = schedule
        self._names_of = names_of
        self._layers = layers
        self._grad_history: list[float] = []

    def alert_nonfinite(self, what: str, module: str | None, step: int, note: str | None = None) -> None:
        where = f" first seen in {module}" if module else ""
        message = note or f"non-finite {what}{where}"
        self.alerts.add("nonfinite", step, message, module=module, key=f"nonfinite:{what}")

    def name_first_nonfinite(self, names: list[str], norms: list[float], step: int) -> bool:
        """Alert on the first non-finite norm among a micro-batch's input and leaf outputs (in forward
        order, as the monitor's ``kept_tensors`` lists them); False when all are finite."""
        bad = next((name for name, norm in zip(names, norms) if not math.isfinite(norm)), None)
        if bad is None:
            return False
        if bad.startswith(INPUT_PREFIX):
            root = bad[len(INPUT_PREFIX) : -1]
            self.alert_nonfinite("input", root, step, note=f"the input to {root or 'the model'} is already non-finite")
        else:
            self.alert_nonfinite("activation", bad, step)
        return True

    def absorb(self, pending: list[PendingStep]) -> None:
        """Move a batch of finished steps to the host (one transfer per device) and record them."""
        transfer = _Transfer()
        hosts = [transfer.want_step(rec) for rec in pending]
        transfer.run()
        for rec, host in zip(pending, hosts):
            self._record_step(rec, host)

    def absorb_late(self, late: list[LateMetric]) -> None:
        """Metrics logged right after their step ended, written into that step's row."""
        host = devicestats.to_host([m.value for m in late if isinstance(m.value, torch.Tensor)])
        values = iter(host)
        cols = self.result.columns
        n = len(cols.get("step", []))
        for m in late:
            v = next(values)[0] if isinstance(m.value, torch.Tensor) else float(m.value)
            column = cols.setdefault(m.name, [None] * n)
            if 0 < m.step <= n:
                column[m.step - 1] = v

    def _record_step(self, rec: PendingStep, host: HostValues) -> None:
        cols = self.result.columns
        n = len(cols.get("step", []))
        samples = rec.values.samples
        gn = math.sqrt(math.fsum(v * v for v in host.grad_norms)) if host.grad_norms else None
        lrs: list[float | None] = [float(lr) if isinstance(lr, (int, float)) else None for lr in rec.lrs]
        for group, value in host.lrs.items():
            lrs[group] = value
        row: dict[str, Any] = {
            "step": rec.step,
            "time": rec.time,
            "loss": host.loss,
            "lr": lrs[0] if lrs else None,
            "grad_norm": gn,
            "samples_per_s": samples / rec.dt if samples and rec.dt > 0 else None,
            "step_time": rec.dt,
        }
        for j, lr in enumerate(lrs[1:], start=1):
            row[f"lr_{j}"] = lr
        for name, value in rec.values.metrics.items():
            if not isinstance(value, torch.Tensor):
                row[name] = float(value) if isinstance(value, (int, float, bool)) else value
        row.update(host.metrics)
        for key, value in row.items():
            column = cols.setdefault(key, [None] * n)
            column.append(value)
        for column in cols.values():
            if len(column) < n + 1:
                column.append(None)
        self._check_values(rec, gn, host)
        self._record_layers(rec, host)

    def _check_values(self, rec: PendingStep, gn: float | None, host: HostValues) -> None:
        step = rec.step
        if not self.alerts.has("nonfinite"):
            for check in host.finite_checks:
                if self.name_first_nonfinite(check.names, check.values, step):
                    break
        if host.loss is not None and not math.isfinite(host.loss):
            self.alert_nonfinite("loss", None, step)
        if gn is not None:
            if not math.isfinite(gn):
                bad = next((i for i, v in enumerate(host.grad_norms) if not math.isfinite(v)), None)
                name = self._names_of(rec.values.grad_params)[bad] if bad is not None else None
                self.alert_nonfinite("gradient", name, step, note=f"non-finite gradient of {name}" if name else None)
            else:
                recent = self._grad_history[-50:]
                if len(recent) >= 10:
                    median = statistics.median(recent)
                    if median > 0 and gn > EXPLODING_FACTOR * median:
                        self.alerts.add(
                            "exploding_grad",
                            step,
                            f"gradient norm {gn:.3g} is {gn / median:.0f}x the recent median {median:.3g}",
                            key="exploding",
                        )
                if 0 < gn < VANISHING_NORM or (gn == 0 and step > 1):
                    self.alerts.add("vanishing_grad", step, f"gradient norm {gn:.3g} (vanishing)", key="vanishing")
                self._grad_history.append(gn)
                if len(self._grad_history) > 1000:
                    del self._grad_history[:500]

    def _record_layers(self, rec: PendingStep, host: HostValues) -> None:
        by_name = {info.name: info for info in self._layers()}
        rows = self.result.layer_rows
        scheduled = self.schedule(rec.step)
        param_names = self._names_of(rec.values.grad_params) if scheduled or host.histograms is not None else []
        if host.grad_norms and scheduled:
            per_layer: dict[str, float] = {}
            for pname, norm in zip(param_names, host.grad_norms):
                layer = pname.rsplit(".", 1)[0] if "." in pname else ""
                per_layer[layer] = per_layer.get(layer, 0.0) + norm * norm
            for layer, sq in per_layer.items():
                value = math.sqrt(sq) if math.isfinite(sq) else float("nan")
                if layer in by_name:
                    by_name[layer].grad_norm = value
                rows.append(LayerRow(rec.step, layer, "grad_norm", value))
        if rec.values.update_ratios is not None:
            for pname, ratio in zip(rec.values.update_ratios.names, host.update_ratios):
                layer = pname.rsplit(".", 1)[0] if "." in pname else ""
                if layer in by_name:
                    by_name[layer].update_ratio = ratio
                rows.append(LayerRow(rec.step, pname, "update_ratio", ratio))
        for name, stats in _activation_stats(host.activations):
            if name in by_name:
                info = by_name[name]
                info.act_mean, info.act_std, info.act_zeros = stats.mean, stats.std, stats.zeros
            rows.extend(
                [
                    LayerRow(rec.step, name, "act_mean", stats.mean),
                    LayerRow(rec.step, name, "act_std", stats.std),
                    LayerRow(rec.step, name, "act_zeros", stats.zeros),
                ]
            )
        if len(rows) > LAYER_HISTORY_LIMIT:
            self.result.layer_rows_dropped += len(rows) // 2
            del rows[: len(rows) // 2]
        if host.histograms is not None:
            h = self.result.histograms
            if not h:
                h.update(
                    steps=[],
                    names=list(param_names),
                    counts=[],
                    edges=[
                        devicestats.HIST_LOG10_RANGE[0]
                        + i * (devicestats.HIST_LOG10_RANGE[1] - devicestats.HIST_LOG10_RANGE[0]) / devicestats.HIST_BINS
                        for i in range(devicestats.HIST_BINS + 1)
                    ],
                )
            if list(param_names) == h["names"]:
                bins = devicestats.HIST_BINS
                flat = host.histograms
                h["steps"].append(rec.step)
                h["counts"].append([flat[k * bins : (k + 1) * bins] for k in range(len(flat) // bins)])
                if len(h["steps"]) > HISTOGRAM_SNAPSHOTS:
                    del h["steps"][0], h["counts"][0]

    def sample_memory(self, elapsed: float, step: int, final: bool) -> None:
        times = self.result.memory.get("time")
        last = times[-1] if times else None
        if last is not None and elapsed - last < 0.5 and not final:
            return  # at most two samples a second; the final refresh always samples
        sample = memory.memory_sample()
        mem = self.result.memory
        n = len(mem.get("time", []))
        mem.setdefault("time", []).append(elapsed)
        mem.setdefault("step", []).append(step)
        for key, value in sample.items():
            mem.setdefault(key, [None] * n).append(value)


def _activation_stats(activations: list[HostRows]) -> list[tuple[str, ActivationStats]]:
    width = len(ActivationStats._fields)
    return [
        (name, ActivationStats._make(rows.values[width * k : width * (k + 1)]))
        for rows in activations
        for k, name in enumerate(rows.names)
    ]


def recent_rate(cols: dict[str, list[Any]]) -> float | None:
    rates = [r for r in cols.get("samples_per_s", [])[-20:] if r]
    return statistics.median(rates) if rates else None
