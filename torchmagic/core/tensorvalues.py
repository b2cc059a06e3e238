"""The values a tensor's statistics are taken over, for every layout and dtype, or why there are none.

Layouts become one flat set of values: a nested tensor's components concatenated, a sparse
tensor's stored values (its implicit zeros are counted, not materialised), an mkldnn tensor made
dense. An expanded view (stride 0) is reduced over its distinct elements, each counted as often
as it repeats. Dtypes become one the reductions have kernels for: quantized values are
dequantized, complex ones reduce as ``|z|`` (with the phase reported apart; complex32 upcast
first), float8 and half are upcast, float4 is decoded, unsigned ints beyond uint8 widened. Bit
containers and the sub-byte shell dtypes have no arithmetic in torch: they get a reason instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from torchmagic.core.shapes import dtype_name
from torchmagic.core.tensorcard import MKLDNN


def _dtypes(*names: str) -> tuple[torch.dtype, ...]:
    """The dtypes of this torch build among ``names`` (they come and go between releases)."""
    return tuple(d for d in (getattr(torch, n, None) for n in names) if isinstance(d, torch.dtype))


_FLOAT8 = _dtypes("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
_FLOAT4 = _dtypes("float4_e2m1fn_x2")
_BITS = _dtypes("bits8", "bits16", "bits1x8", "bits2x4", "bits4x2")
_SHELL = _dtypes(*(f"{kind}{n}" for kind in ("uint", "int") for n in range(1, 8)))
_NATIVE_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_COMPRESSED = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)
# the 16 values of an e2m1 nibble: sign, two exponent bits (bias 1), one mantissa bit
_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


@dataclass
class Reducible:
    """What the statistics are taken over, and what the layout and dtype add to them."""

    values: torch.Tensor | None  # None: torch cannot read these values, ``note`` says why
    implicit_zeros: int = 0  # zeros a sparse layout does not store
    repeat: int = 1  # how often each of ``values`` stands in an expanded view
    extras: dict[str, Any] = field(default_factory=dict)  # statistics only this dtype or layout has
    note: str | None = None  # how the values were obtained, or why there are none
    picture: torch.Tensor | None = None  # the values in the tensor's own shape, for the views


def no_values_reason(dtype: torch.dtype) -> str | None:
    """Why torch can read no values of ``dtype``, or None where it can."""
    name = dtype_name(dtype)
    if dtype in _BITS:
        as_int = {1: "uint8", 2: "uint16"}.get(dtype.itemsize, "uint8")
        return f"{name} holds raw bits without a numeric meaning: no statistics (view it as numbers, e.g. t.view(torch.{as_int}))"
    if dtype in _SHELL:
        return (
            f"{name} is a shell dtype without kernels in torch (tensor subclasses such as torchao's give it one): no statistics"
        )
    return None


def reducible(t: torch.Tensor) -> Reducible:
    t = t.detach()
    name = dtype_name(t.dtype)
    reason = no_values_reason(t.dtype)
    if reason is not None:
        return Reducible(None, note=reason)
    found = Reducible(t)
    notes: list[str] = []
    if t.layout == MKLDNN:
        t = t.to_dense()
        notes.append("mkldnn: statistics of the dense copy")
    shaped = not (t.is_nested or t.layout == torch.sparse_coo or t.layout in _COMPRESSED)
    if t.is_nested:
        parts = [c.reshape(-1) for c in t.unbind()]
        t = torch.cat(parts) if parts else torch.empty(0, dtype=t.dtype, device=t.device)
        notes.append(f"nested tensor of {len(parts)} components: statistics over all their values")
    elif not shaped:
        vals = t.coalesce().values() if t.layout == torch.sparse_coo else t.values()
        found.implicit_zeros = t.numel() - vals.numel()
        found.extras.update(nnz=int(vals.numel()), density=vals.numel() / t.numel() if t.numel() else 0.0)
        notes.append("sparse: statistics include the implicit zeros; no picture of the values")
        t = vals
    if t.is_quantized:
        if not has_quantizer(t):
            return Reducible(None, note="quantized tensor without a quantizer (as torch.empty makes one): no values to read")
        found.extras.update(_quantization(t))
        t = t.dequantize()
        notes.append("quantized: statistics of the dequantized values")
    found.picture = t if shaped else None
    if shaped:
        t, found.repeat = collapse_expanded(t)
    if t.dtype in _FLOAT4:
        t = _decode_e2m1(t)
        found.picture = None
        notes.append(f"{name} packs two 4-bit floats per element: statistics over both")
    if t.dtype == torch.complex32:
        t = t.to(torch.complex64)  # ComplexHalf has no angle, mean or std kernels
        notes.append("complex32 upcast to complex64")
    if t.is_complex():
        found.extras.update(_phase_and_parts(t))
        notes.append("complex: min/max/mean/std are of the magnitude |z|; phase in radians")
        t = t.abs()
    found.values = _in_reduction_dtype(t)
    found.note = "; ".join(notes) or None
    return found


def has_quantizer(t: torch.Tensor) -> bool:
    """False for a quantized tensor made by ``torch.empty(..., dtype=torch.qint8)``: it has no scale to read."""
    try:
        t.qscheme()
    except RuntimeError:
        return False
    return True


def collapse_expanded(t: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, int]:
    """``t`` without the dimensions from ``start`` on that an expand() repeats (stride 0), and how often
    each element repeats.

    Reductions of an expanded view materialise or walk every repeated element: a bias expanded
    to 10¹² elements would not fit. Every distinct element repeats equally often, so min, max
    and mean are unchanged and counts scale by the repeat.
    """
    if t.layout != torch.strided or t.is_nested or t.numel() == 0:
        return t, 1
    index = tuple(
        slice(0, 1) if d >= start and stride == 0 and size > 1 else slice(None)
        for d, (size, stride) in enumerate(zip(t.shape, t.stride()))
    )
    if all(s == slice(None) for s in index):
        return t, 1
    collapsed = t[index]
    return collapsed, t.numel() // collapsed.numel()


def _decode_e2m1(t: torch.Tensor) -> torch.Tensor:
    """Both nibbles of every byte as float32. Statistics do not depend on which nibble comes first."""
    raw = t.contiguous().view(torch.uint8).reshape(-1)
    table = torch.tensor(_E2M1, dtype=torch.float32, device=t.device)
    return torch.cat([table[(raw & 15).long()], table[(raw >> 4).long()]])


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
    if t.dtype == torch.complex32:
        t = t.to(torch.complex64)
    if t.is_complex():
        return t.abs()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t


def repeated_std(std: float | None, count: int, repeat: int) -> float | None:
    """The sample std of ``count`` values each repeated ``repeat`` times, from the std of the values once."""
    total = count * repeat
    if total < 2:
        return None
    var = (std or 0.0) ** 2 * (count - 1) / count if count > 1 else 0.0  # population variance is unchanged
    return math.sqrt(var * total / (total - 1))
