"""The values a tensor's statistics are taken over, for every layout and dtype.

Layouts become one flat set of values: a nested tensor's components concatenated, a sparse
tensor's stored values (its implicit zeros are counted, not materialised). Dtypes become one the
reductions have kernels for: quantized values are dequantized, complex ones reduce as ``|z|``
(with the phase reported apart), float8 and half are upcast, unsigned ints beyond uint8 widened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

_FLOAT8 = tuple(
    getattr(torch, n)
    for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
    if hasattr(torch, n)
)
_NATIVE_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_COMPRESSED = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


@dataclass
class Reducible:
    """What the statistics are taken over, and what the layout and dtype add to them."""

    values: torch.Tensor
    implicit_zeros: int = 0  # zeros a sparse layout does not store
    extras: dict[str, Any] = field(default_factory=dict)  # statistics only this dtype or layout has
    note: str | None = None  # how the values were obtained, for the reader


def reducible(t: torch.Tensor) -> Reducible:
    t = t.detach()
    found = Reducible(t)
    if t.is_nested:
        parts = [c.reshape(-1) for c in t.unbind()]
        t = torch.cat(parts) if parts else torch.empty(0, dtype=t.dtype, device=t.device)
        found.note = f"nested tensor of {len(parts)} components: statistics over all their values"
    elif t.layout == torch.sparse_coo or t.layout in _COMPRESSED:
        vals = t.coalesce().values() if t.layout == torch.sparse_coo else t.values()
        found.implicit_zeros = t.numel() - vals.numel()
        found.extras.update(nnz=int(vals.numel()), density=vals.numel() / t.numel() if t.numel() else 0.0)
        found.note = "sparse: statistics include the implicit zeros; no picture of the values"
        t = vals
    if t.is_quantized:
        found.extras.update(_quantization(t))
        t = t.dequantize()
        found.note = "quantized: statistics of the dequantized values"
    if t.is_complex():
        found.extras.update(_phase_and_parts(t))
        found.note = "complex: min/max/mean/std are of the magnitude |z|; phase in radians"
        found.values = t.abs()
        return found
    found.values = _in_reduction_dtype(t)
    return found


def _quantization(t: torch.Tensor) -> dict[str, Any]:
    """Scale and zero point (or the channel axis), and the range of the stored integers."""
    if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        out: dict[str, Any] = {"scale": float(t.q_scale()), "zero_point": int(t.q_zero_point())}
    else:
        out = {"channel_axis": int(t.q_per_channel_axis())}
    ints = t.int_repr()
    if ints.numel():
        lo, hi = torch.aminmax(ints)
        out.update(int_min=int(lo), int_max=int(hi))
    return out


def _phase_and_parts(t: torch.Tensor) -> dict[str, float]:
    if not t.numel():
        return {}
    pmin, pmax = torch.aminmax(torch.angle(t))
    host = torch.stack([pmin.double(), pmax.double(), t.real.double().mean(), t.imag.double().mean()]).tolist()
    phase_min, phase_max, real_mean, imag_mean = host
    return {"phase_min": phase_min, "phase_max": phase_max, "real_mean": real_mean, "imag_mean": imag_mean}


def _in_reduction_dtype(t: torch.Tensor) -> torch.Tensor:
    """``t`` in a dtype that torch's reductions have kernels for and sum precisely in."""
    if t.dtype in _FLOAT8 or t.dtype in (torch.float16, torch.bfloat16):
        return t.float()  # float8 has no reductions; half sums lose precision
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype in _NATIVE_INTS:
        return t
    # uint16/32/64 have few kernels
    return t.to(torch.float64 if t.dtype == getattr(torch, "uint64", None) else torch.int64)


def is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex)


def as_real(t: torch.Tensor) -> torch.Tensor:
    """What the values look like as real numbers: |z| for complex, 0/1 for bool."""
    if t.is_complex():
        return t.abs()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t
