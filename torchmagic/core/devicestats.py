"""Statistics computed on the tensors' own device, returned as device tensors.

Nothing here calls ``.item()`` or ``.cpu()``: values wait in a buffer until the next refresh
moves them to the host in one transfer (:func:`to_host`). Samples are strided, never random,
so the user's RNG streams are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

HIST_BINS = 28
HIST_LOG10_RANGE = (-12.0, 2.0)  # histograms of log10|g|: half a decade per bin
SAMPLE = 4096
ACTIVATION_SAMPLE = 1024  # enough for a mean, a spread and a fraction of zeros to a percent or two


def strided_sample(t: torch.Tensor, limit: int) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    n = flat.numel()
    if n <= limit:
        return flat
    return flat[:: (n + limit - 1) // limit]


def _float(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t.abs().float()
    return t.float() if t.dtype != torch.float64 else t


@torch.no_grad()
def grad_norms(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norm of each gradient, one fused call per device and dtype."""
    if not grads:
        return []
    try:
        return list(torch._foreach_norm(grads))
    except (RuntimeError, TypeError):
        return [torch.linalg.vector_norm(_float(g)) for g in grads]


@torch.no_grad()
def max_abs(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Largest magnitude of each tensor, one fused call per device and dtype: finite exactly when
    the tensor is (NaN propagates; an L2 norm would overflow for finite float32 values near 1e20)."""
    full = [t for t in tensors if t.numel()]  # an empty tensor has no largest value: it counts as finite
    try:
        norms = iter(torch._foreach_norm(full, math.inf) if full else [])
    except (RuntimeError, TypeError):
        norms = iter([torch.linalg.vector_norm(_float(t), math.inf) for t in full])
    return [next(norms) if t.numel() else torch.zeros((), device=t.device) for t in tensors]


@torch.no_grad()
def log_magnitude_histogram(t: torch.Tensor) -> torch.Tensor:
    """Counts of log10|x| over a bounded strided sample, in HIST_BINS fixed bins."""
    lo, hi = HIST_LOG10_RANGE
    sample = _float(strided_sample(t, SAMPLE))
    logs = torch.log10(sample.abs().clamp_min(10**lo)).nan_to_num(nan=hi, posinf=hi, neginf=lo).clamp(lo, hi)
    return torch.histc(logs, bins=HIST_BINS, min=lo, max=hi)


class ActivationStats(NamedTuple):
    """The columns of an activation summary row, in order."""

    mean: float
    std: float
    zeros: float  # fraction of exact zeros
    nonfinite: float  # 1.0 when the sample holds NaN/Inf (its mean is then not finite), else 0.0


def _equal_sample(t: torch.Tensor, limit: int) -> torch.Tensor:
    """Exactly ``limit`` strided elements when the tensor has that many (so samples stack); called
    under ``no_grad``, so no ``detach`` is needed."""
    flat = t.reshape(-1)
    n = flat.numel()
    return flat if n <= limit else flat[:: n // limit][:limit]


def _host_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class _Scalar(NamedTuple):
    item: int
    position: int  # in the item's list
    value: torch.Tensor  # 0-d


class _Flat(NamedTuple):
    item: int
    value: torch.Tensor  # a whole item, flattened for the transfer


@torch.no_grad()
def to_host(items: Sequence[torch.Tensor | Sequence[torch.Tensor]]) -> list[list[float]]:
    """Move many small device tensors to Python floats: one transfer per device.

    An item is a tensor (flattened) or a list of 0-d tensors, such as ``_foreach_norm`` returns;
    those are stacked per device and dtype, so a refresh costs a few ops however many steps and
    parameters it carries.
    """
    out: list[list[float]] = [[] for _ in items]
    scalars: dict[tuple[torch.device, torch.dtype], list[_Scalar]] = {}
    tensors: dict[torch.device, list[_Flat]] = {}
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            tensors.setdefault(item.device, []).append(_Flat(i, item))
            continue
        out[i] = [math.nan] * len(item)
        for j, t in enumerate(item):
            t = t if t.dim() == 0 else t.reshape(-1)[0]
            scalars.setdefault((t.device, t.dtype), []).append(_Scalar(i, j, t))
    for device in {d for d, _ in scalars} | set(tensors):
        dtype = _host_dtype(device)
        groups = [group for (d, _), group in scalars.items() if d == device]
        whole = tensors.get(device, [])
        parts = [torch.stack([s.value.detach() for s in group]).to(dtype) for group in groups]
        parts += [f.value.detach().reshape(-1).to(dtype) for f in whole]
        host: list[float] = torch.cat(parts).cpu().tolist() if parts else []
        pos = 0
        for group in groups:
            for s, v in zip(group, host[pos : pos + len(group)]):
                out[s.item][s.position] = v
            pos += len(group)
        for f in whole:
            n = f.value.numel()
            out[f.item] = host[pos : pos + n]
            pos += n
    return out
