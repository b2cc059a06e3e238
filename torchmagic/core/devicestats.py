"""Statistics computed on the tensors' own device, returned as device tensors.

Nothing here calls ``.item()`` or ``.cpu()``: values wait in a buffer until the next refresh
moves them to the host in one transfer (:func:`to_host`). Samples are strided, never random,
so the user's RNG streams are untouched.
"""

from __future__ import annotations

import torch

HIST_BINS = 28
HIST_LOG10_RANGE = (-12.0, 2.0)  # histograms of log10|g|: half a decade per bin
SAMPLE = 4096
ACTIVATION_SAMPLE = 4096


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
def total_norm(norms: list[torch.Tensor]) -> torch.Tensor | None:
    """Global L2 norm from per-tensor norms, on the first tensor's device."""
    if not norms:
        return None
    first = norms[0]
    if all(n.device == first.device and n.dtype == first.dtype for n in norms):
        return torch.linalg.vector_norm(torch.stack(norms).float())
    stacked = torch.stack([n.float().to(first.device, non_blocking=True) for n in norms])
    return torch.linalg.vector_norm(stacked)


@torch.no_grad()
def log_magnitude_histogram(t: torch.Tensor) -> torch.Tensor:
    """Counts of log10|x| over a bounded strided sample, in HIST_BINS fixed bins."""
    lo, hi = HIST_LOG10_RANGE
    sample = _float(strided_sample(t, SAMPLE))
    logs = torch.log10(sample.abs().clamp_min(10**lo)).nan_to_num(nan=hi, posinf=hi, neginf=lo).clamp(lo, hi)
    return torch.histc(logs, bins=HIST_BINS, min=lo, max=hi)


@torch.no_grad()
def activation_summary(t: torch.Tensor) -> torch.Tensor:
    """[mean, std, fraction of zeros, fraction non-finite] of a bounded strided sample.

    Mean and std turn NaN when the sample holds non-finite values; the last entry says so.
    """
    sample = _float(strided_sample(t, ACTIVATION_SAMPLE))
    if sample.numel() == 0:
        return torch.full((4,), float("nan"), device=sample.device)
    std, mean = torch.std_mean(sample, correction=0)
    n = sample.numel()
    zeros = (sample == 0).sum() / n
    nonfinite = 1.0 - torch.isfinite(sample).sum() / n
    return torch.stack([mean.float(), std.float(), zeros.float(), nonfinite.float()])


@torch.no_grad()
def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """A device bool: every floating element of every tensor is finite."""
    flags = [torch.isfinite(t.detach()).all() for t in tensors if t.is_floating_point() or t.is_complex()]
    if not flags:
        return None
    return torch.stack(flags).all() if len(flags) > 1 else flags[0]


def _host_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@torch.no_grad()
def to_host(tensors: list[torch.Tensor]) -> list[list[float]]:
    """Move many small device tensors to Python floats: one transfer per device."""
    out: list[list[float]] = [[] for _ in tensors]
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, idx in by_device.items():
        dtype = _host_dtype(device)
        flat = [tensors[i].detach().reshape(-1).to(dtype) for i in idx]
        host = torch.cat(flat).cpu().tolist() if flat else []
        pos = 0
        for i, f in zip(idx, flat):
            n = f.numel()
            out[i] = host[pos : pos + n]
            pos += n
    return out
