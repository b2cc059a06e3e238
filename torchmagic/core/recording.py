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
from typing import Any

import torch

from torchmagic.core import devicestats, memory
from torchmagic.core.alerts import AlertBook
from torchmagic.core.result import LayerInfo, RunResult
from torchmagic.core.schedule import StepSchedule

EXPLODING_FACTOR = 100.0  # a global grad norm this many times the recent median is "exploding"
VANISHING_NORM = 1e-8
LAYER_HISTORY_LIMIT = 200_000
HISTOGRAM_SNAPSHOTS = 256
INPUT_PREFIX = "<input of "  # names a micro-batch's input among its leaf outputs: "<input of NAME>"


@dataclass
class PendingStep:
    """A finished step whose values may still wait on the device."""

    step: int
    time: float
    dt: float
    samples: int
    lrs: list[Any]
    loss: torch.Tensor | None
    metrics: dict[str, Any]
    # per-parameter gradient norms as returned by one fused call (0-d device tensors), with the
    # parameters they belong to; the global norm is computed from them on the host
    grad_params: list[torch.Tensor] = field(default_factory=list)
    grad_norms: list[torch.Tensor] = field(default_factory=list)
    update_ratios: tuple[list[str], torch.Tensor] | None = None
    histograms: torch.Tensor | None = None
    activations: list[tuple[list[str], torch.Tensor]] = field(default_factory=list)
    # per micro-batch: names of the root input and leaf outputs, and their norms (non-finite
    # exactly where a tensor held NaN/Inf)
    finite_checks: list[tuple[list[str], list[torch.Tensor]]] = field(default_factory=list)


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
        tensors: list[torch.Tensor] = []
        slots: list[tuple[int, str, Any]] = []

        def want(i: int, kind: str, t: Any, extra: Any = None) -> None:
            if isinstance(t, (torch.Tensor, list)):
                slots.append((i, kind, extra))
                tensors.append(t)

        for i, rec in enumerate(pending):
            want(i, "loss", rec.loss)
            if rec.grad_norms:
                want(i, "grad_norms", rec.grad_norms)
            want(i, "update_ratios", rec.update_ratios[1] if rec.update_ratios is not None else None)
            want(i, "histograms", rec.histograms)
            for name, value in rec.metrics.items():
                want(i, "metric", value, name)
            for names, stats in rec.activations:
                want(i, "activation", stats, names)
            for names, flags in rec.finite_checks:
                want(i, "finite_check", flags, names)
            for j, lr in enumerate(rec.lrs):
                want(i, "lr", lr, j)
        host = devicestats.to_host(tensors)
        values: list[dict[str, Any]] = [{} for _ in pending]
        for (i, kind, extra), v in zip(slots, host):
            if kind in ("metric", "activation", "finite_check", "lr"):
                values[i].setdefault(kind, []).append((extra, v))
            else:
                values[i][kind] = v
        for rec, got in zip(pending, values):
            self._record_step(rec, got)

    def absorb_late(self, late: list[tuple[int, str, Any]]) -> None:
        """Metrics logged right after their step ended, written into that step's row."""
        host = devicestats.to_host([v for _, _, v in late if isinstance(v, torch.Tensor)])
        values = iter(host)
        cols = self.result.columns
        n = len(cols.get("step", []))
        for step, name, value in late:
            v = next(values)[0] if isinstance(value, torch.Tensor) else float(value)
            column = cols.setdefault(name, [None] * n)
            if 0 < step <= n:
                column[step - 1] = v

    def _record_step(self, rec: PendingStep, got: dict[str, Any]) -> None:
        cols = self.result.columns
        n = len(cols.get("step", []))
        loss = got["loss"][0] if "loss" in got else None
        norms = got.get("grad_norms", [])
        gn = math.sqrt(math.fsum(v * v for v in norms)) if norms else None
        lrs: list[float | None] = [float(lr) if isinstance(lr, (int, float)) else None for lr in rec.lrs]
        for j, v in got.get("lr", []):
            lrs[j] = v[0]
        row: dict[str, Any] = {
            "step": rec.step,
            "time": rec.time,
            "loss": loss,
            "lr": lrs[0] if lrs else None,
            "grad_norm": gn,
            "samples_per_s": rec.samples / rec.dt if rec.samples and rec.dt > 0 else None,
            "step_time": rec.dt,
        }
        for j, lr in enumerate(lrs[1:], start=1):
            row[f"lr_{j}"] = lr
        for name, value in rec.metrics.items():
            if not isinstance(value, torch.Tensor):
                row[name] = float(value) if isinstance(value, (int, float, bool)) else value
        for name, v in got.get("metric", []):
            row[name] = v[0]
        for key, value in row.items():
            column = cols.setdefault(key, [None] * n)
            column.append(value)
        for column in cols.values():
            if len(column) < n + 1:
                column.append(None)
        self._check_values(rec, loss, gn, got)
        self._record_layers(rec, got)

    def _check_values(self, rec: PendingStep, loss: float | None, gn: float | None, got: dict[str, Any]) -> None:
        step = rec.step
        if not self.alerts.has("nonfinite"):
            for names, norms in got.get("finite_check", []):
                if self.name_first_nonfinite(names, norms, step):
                    break
        if loss is not None and not math.isfinite(loss):
            self.alert_nonfinite("loss", None, step)
        if gn is not None:
            if not math.isfinite(gn):
                bad = next((i for i, v in enumerate(got.get("grad_norms", [])) if not math.isfinite(v)), None)
                name = self._names_of(rec.grad_params)[bad] if bad is not None else None
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

    def _record_layers(self, rec: PendingStep, got: dict[str, Any]) -> None:
        by_name = {info.name: info for info in self._layers()}
        rows = self.result.layer_rows
        param_names = self._names_of(rec.grad_params) if self.schedule(rec.step) or "histograms" in got else []
        if "grad_norms" in got and self.schedule(rec.step):
            per_layer: dict[str, float] = {}
            for pname, norm in zip(param_names, got["grad_norms"]):
                layer = pname.rsplit(".", 1)[0] if "." in pname else ""
                per_layer[layer] = per_layer.get(layer, 0.0) + norm * norm
            for layer, sq in per_layer.items():
                value = math.sqrt(sq) if math.isfinite(sq) else float("nan")
                if layer in by_name:
                    by_name[layer].grad_norm = value
                rows.append((rec.step, layer, "grad_norm", value))
        if rec.update_ratios is not None:
            for pname, ratio in zip(rec.update_ratios[0], got.get("update_ratios", [])):
                layer = pname.rsplit(".", 1)[0] if "." in pname else ""
                if layer in by_name:
                    by_name[layer].update_ratio = ratio
                rows.append((rec.step, pname, "update_ratio", ratio))
        activations = [
            (name, values[4 * k : 4 * k + 4]) for names, values in got.get("activation", []) for k, name in enumerate(names)
        ]
        for name, (mean, std, zeros, _nonfinite) in activations:
            if name in by_name:
                info = by_name[name]
                info.act_mean, info.act_std, info.act_zeros = mean, std, zeros
            rows.extend(
                [(rec.step, name, "act_mean", mean), (rec.step, name, "act_std", std), (rec.step, name, "act_zeros", zeros)]
            )
        if len(rows) > LAYER_HISTORY_LIMIT:
            self.result.layer_rows_dropped += len(rows) // 2
            del rows[: len(rows) // 2]
        if "histograms" in got:
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
                flat = got["histograms"]
                h["steps"].append(rec.step)
                h["counts"].append([flat[k * bins : (k + 1) * bins] for k in range(len(flat) // bins)])
                if len(h["steps"]) > HISTOGRAM_SNAPSHOTS:
                    del h["steps"][0], h["counts"][0]

    def sample_memory(self, elapsed: float, step: int, final: bool) -> None:
        times = self.result.memory.get("time")
        if times and elapsed - times[-1] < 0.5 and not final:
            return  # at most two samples a second; the final refresh always samples
        sample = memory.memory_sample()
        mem = self.result.memory
        n = len(mem.get("time", []))
        mem.setdefault("time", []).append(elapsed)
        mem.setdefault("step", []).append(step)
        for key, value in sample.items():
            mem.setdefault(key, [None] * n).append(value)


def recent_rate(cols: dict[str, list[Any]]) -> float | None:
    rates = [r for r in cols.get("samples_per_s", [])[-20:] if r]
    return statistics.median(rates) if rates else None
