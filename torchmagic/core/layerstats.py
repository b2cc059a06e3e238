"""Scheduled per-layer statistics on the host: long-format rows, the live layer table, histograms.

Only steps that took statistics come here; their cost grows with the model's layers, not with the
length of the run (the rows are bounded by :data:`LAYER_HISTORY_LIMIT`, the oldest half dropped).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from torchmagic.core import devicestats
from torchmagic.core.devicestats import ActivationStats
from torchmagic.core.result import LayerInfo, LayerRow, RunResult
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.transfer import HostRows, HostValues, PendingStep

LAYER_HISTORY_LIMIT = 200_000
HISTOGRAM_SNAPSHOTS = 256


def _layer_of(param: str) -> str:
    return param.rsplit(".", 1)[0] if "." in param else ""


class LayerRecorder:
    def __init__(self, result: RunResult, schedule: StepSchedule, names_of: Callable[[list[torch.Tensor]], list[str]]) -> None:
        self.result = result
        self.schedule = schedule
        self._names_of = names_of

    def record(self, rec: PendingStep, host: HostValues, by_name: dict[str, LayerInfo]) -> None:
        """One step's per-layer values; ``by_name`` is the shape table's rows, updated in place."""
        rows = self.result.layer_rows
        scheduled = self.schedule(rec.step)
        param_names = self._names_of(rec.values.grad_params) if scheduled or host.histograms is not None else []
        if host.grad_norms and scheduled:
            per_layer: dict[str, float] = {}
            for pname, norm in zip(param_names, host.grad_norms):
                layer = _layer_of(pname)
                per_layer[layer] = per_layer.get(layer, 0.0) + norm * norm
            for layer, sq in per_layer.items():
                value = math.sqrt(sq) if math.isfinite(sq) else float("nan")
                if layer in by_name:
                    by_name[layer].grad_norm = value
                rows.append(LayerRow(rec.step, layer, "grad_norm", value))
        if host.update_names:
            for pname, ratio in zip(host.update_names, host.update_ratios):
                layer = _layer_of(pname)
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
            self._record_histograms(rec.step, param_names, host.histograms)

    def _record_histograms(self, step: int, param_names: list[str], flat: list[float]) -> None:
        h = self.result.histograms
        if not h:
            lo, hi = devicestats.HIST_LOG10_RANGE
            bins = devicestats.HIST_BINS
            h.update(steps=[], names=list(param_names), counts=[], edges=[lo + i * (hi - lo) / bins for i in range(bins + 1)])
        if list(param_names) == h["names"]:
            bins = devicestats.HIST_BINS
            h["steps"].append(step)
            h["counts"].append([flat[k * bins : (k + 1) * bins] for k in range(len(flat) // bins)])
            if len(h["steps"]) > HISTOGRAM_SNAPSHOTS:
                del h["steps"][0], h["counts"][0]


def _activation_stats(activations: list[HostRows]) -> list[tuple[str, ActivationStats]]:
    width = len(ActivationStats._fields)
    return [
        (name, ActivationStats._make(rows.values[width * k : width * (k + 1)]))
        for rows in activations
        for k, name in enumerate(rows.names)
    ]
