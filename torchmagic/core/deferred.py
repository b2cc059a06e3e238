"""Statistics whose reductions wait for the refresh.

A scheduled step takes *samples* (copies of a few thousand strided elements per activation and per
parameter, a handful of ops), and the refresh reduces the samples of every step since the last one
together. Each torch op has a fixed cost of a few microseconds, so a small model's statistics
would otherwise cost far more than their arithmetic; batched, a refresh pays the ops once for all
its steps. Large samples (a model with many layers, whose ops are already amortised over big
stacks) are reduced at once so that what waits stays small.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from torchmagic.core.devicestats import ACTIVATION_SAMPLE, SAMPLE, _equal_sample, _float

REDUCE_AT_ONCE = 1 << 18  # elements: a step's samples beyond this are reduced on the spot (1 MiB of float32)


class ActivationSamples(NamedTuple):
    """Equal-length samples of some leaf outputs, stacked (a copy): one row per name."""

    names: list[str]
    stack: torch.Tensor  # [len(names), n]


class UpdateSamples(NamedTuple):
    """Samples of parameters of one device and dtype, flat, from before and after optimizer.step()."""

    names: list[str]
    sizes: list[int]  # elements per parameter, in order
    before: torch.Tensor
    after: torch.Tensor | None = None


@torch.no_grad()
def sample_activations(names: list[str], tensors: list[torch.Tensor]) -> list[ActivationSamples]:
    """Stacks of the tensors' strided samples, one per sample length, device and dtype."""
    groups: dict[tuple[int, torch.device, torch.dtype], tuple[list[str], list[torch.Tensor]]] = {}
    for name, t in zip(names, tensors):
        s = _equal_sample(t, ACTIVATION_SAMPLE)
        if s.numel():
            group = groups.setdefault((s.numel(), s.device, s.dtype), ([], []))
            group[0].append(name)
            group[1].append(s)
    return [ActivationSamples(n, torch.stack(ts)) for n, ts in groups.values()]


def _param_sample(p: torch.Tensor) -> torch.Tensor:
    """At most SAMPLE strided elements of a parameter, as a view: one op for most parameters (under
    ``no_grad``, so without ``detach``; the ``cat`` that follows makes the copy)."""
    flat = p if p.dim() == 1 else p.reshape(-1)
    n = flat.numel()
    return flat if n <= SAMPLE else flat[:: (n + SAMPLE - 1) // SAMPLE]


class Reduced(NamedTuple):
    """Results of many samples in one tensor, so the refresh moves them to the host in one item:
    sample ``i`` owns ``values[starts[i] : starts[i] + counts[i]]`` of its flattened floats."""

    values: torch.Tensor
    starts: list[int]
    counts: list[int]


@torch.no_grad()
def activation_rows(samples: list[ActivationSamples]) -> Reduced:
    """The :class:`~torchmagic.core.devicestats.ActivationStats` rows of every sample (4 floats per
    name), the stacks of equal shape reduced together. The reductions are plain sums: on CPU
    ``std_mean``, ``mean`` and boolean sums are several times slower than ``sum`` (measured, torch
    2.13). Mean and std turn NaN when a sample holds non-finite values; the last column says so."""
    width = 4
    starts, counts = [0] * len(samples), [width * len(s.names) for s in samples]
    by_key: dict[tuple[int, torch.device, torch.dtype], list[int]] = {}
    for i, s in enumerate(samples):
        by_key.setdefault((s.stack.shape[1], s.stack.device, s.stack.dtype), []).append(i)
    parts: list[torch.Tensor] = []
    offset = 0
    for (n, _, _), idx in by_key.items():
        m = _float(torch.cat([samples[i].stack for i in idx]) if len(idx) > 1 else samples[idx[0]].stack)
        mean = m.sum(dim=1) / n
        centred = m - mean.unsqueeze(1)
        std = ((centred * centred).sum(dim=1) / n).sqrt()  # two passes: no cancellation when |mean| >> std
        zeros = 1.0 - m.sign().abs().sum(dim=1) / n
        nonfinite = (~torch.isfinite(mean)).to(mean.dtype)
        parts.append(torch.stack([mean, std, zeros, nonfinite], dim=1).float().reshape(-1))
        for i in idx:
            starts[i], offset = offset, offset + counts[i]
    return Reduced(_joined(parts), starts, counts)


@torch.no_grad()
def sample_update(names: list[str], params: list[torch.Tensor]) -> list[UpdateSamples]:
    """Before optimizer.step(): a strided sample of each parameter, one flat copy per device and dtype."""
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[str], list[torch.Tensor]]] = {}
    for name, p in zip(names, params):
        group = groups.setdefault((p.device, p.dtype), ([], []))
        group[0].append(name)
        group[1].append(_param_sample(p))
    return [UpdateSamples(n, [s.numel() for s in ss], torch.cat(ss)) for n, ss in groups.values()]


@torch.no_grad()
def resample_update(before: list[UpdateSamples], params: list[torch.Tensor]) -> list[UpdateSamples]:
    """After optimizer.step(): the same samples again (``params`` in the order sampled before)."""
    out: list[UpdateSamples] = []
    start = 0
    for u in before:
        group = params[start : start + len(u.sizes)]
        start += len(u.sizes)
        out.append(u._replace(after=torch.cat([_param_sample(p) for p in group])))
    return out


@torch.no_grad()
def update_ratio_rows(updates: list[UpdateSamples]) -> Reduced:
    """|update| / |weight| per parameter of every :class:`UpdateSamples` (its parameters in order).

    The samples of steps that sampled the same parameters are stacked, so each parameter costs two
    norms over all those steps together, however many steps the refresh brings."""
    starts, counts = [0] * len(updates), [len(u.sizes) if u.after is not None else 0 for u in updates]
    by_key: dict[tuple[torch.device, torch.dtype, tuple[int, ...]], list[int]] = {}
    for i, u in enumerate(updates):
        if u.after is not None:
            by_key.setdefault((u.before.device, u.before.dtype, tuple(u.sizes)), []).append(i)
    parts: list[torch.Tensor] = []
    offset = 0
    for (_, _, sizes), idx in by_key.items():
        after = torch.stack([updates[i].after for i in idx])  # type: ignore[misc]  # only those with one
        delta = after - torch.stack([updates[i].before for i in idx])
        delta_norms, weight_norms = [], []
        start = 0
        for size in sizes:
            delta_norms.append(torch.linalg.vector_norm(delta[:, start : start + size], dim=1))
            weight_norms.append(torch.linalg.vector_norm(after[:, start : start + size], dim=1))
            start += size
        ratios = torch.stack(delta_norms, dim=1) / (torch.stack(weight_norms, dim=1) + 1e-12)
        parts.append(ratios.float().reshape(-1))
        for i in idx:
            starts[i], offset = offset, offset + counts[i]
    return Reduced(_joined(parts), starts, counts)


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    if not parts:
        return torch.empty(0)
    return parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].device) for p in parts])


def in_order(reduced: Reduced, names: list[list[str]]) -> tuple[list[str], torch.Tensor]:
    """The names of the samples in the order of ``reduced.values``, and the values."""
    order = sorted(range(len(names)), key=lambda i: reduced.starts[i])
    return [n for i in order if reduced.counts[i] for n in names[i]], reduced.values
