"""Statistics of one tensor, for every dtype and layout, computed on the tensor's own device.

The common case (no NaN, no Inf) costs one ``aminmax``, one ``mean``, one ``std`` and one
``count_nonzero``, and one transfer to the host that also carries the histogram sample. A NaN
or an Inf shows up in ``aminmax`` for free; only then are the non-finite values counted and the
statistics recomputed over the finite ones (boolean indexing would cost 15× on every tensor).
Min, max, mean and std are over the finite values, as lovely-tensors reports them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from torchmagic.core.inspect_result import InspectResult, TensorCard, View
from torchmagic.core.shapes import dtype_name

SAMPLE = 65536
BINS = 40
SEED = 0
IMAGE_SIDE = 256
GRID_SIDE = 96
GRID_IMAGES = 16
HEATMAP_SIDE = 96
SLICES = 4
CHANNELS = 64

_FLOAT8 = tuple(
    getattr(torch, n)
    for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
    if hasattr(torch, n)
)
_NATIVE_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def is_fake(t: torch.Tensor) -> bool:
    try:
        from torch._subclasses.fake_tensor import FakeTensor
    except ImportError:  # pragma: no cover - older torch
        return False
    return isinstance(t, FakeTensor)


def _kind(t: torch.Tensor) -> str:
    if is_fake(t):
        return "fake"
    if t.device.type == "meta":
        return "meta"
    if t.is_nested:
        return "nested"
    if t.layout != torch.strided:
        return "sparse"
    if t.is_quantized:
        return "quantized"
    return "dense"


def card(t: torch.Tensor) -> TensorCard:
    kind = _kind(t)
    strided = t.layout == torch.strided and not t.is_nested
    extra: dict[str, Any] = {}
    if kind == "nested":
        shape: Any = [tuple(c.shape) for c in t.unbind()] if t.layout == torch.strided else _jagged_shapes(t)
        numel = sum(math.prod(s) for s in shape)
    else:
        shape = tuple(t.shape)
        numel = t.numel()
    if kind == "sparse":
        extra["nnz"] = int(t._nnz()) if t.layout == torch.sparse_coo else int(t.values().numel())
    if kind == "quantized":
        extra["qscheme"] = str(t.qscheme()).replace("torch.", "")
    storage = None
    if strided and kind in ("dense", "quantized"):
        try:
            storage = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            storage = None
    elem = t.element_size() if not t.is_quantized else 1
    if strided and t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        extra["memory_format"] = "channels_last"
    return TensorCard(
        shape=shape,
        dtype=dtype_name(t.dtype),
        device=str(t.device),
        layout=str(t.layout).replace("torch.", ""),
        strides=tuple(t.stride()) if strided else None,
        contiguous=t.is_contiguous() if strided else None,
        numel=numel,
        nbytes=numel * elem if kind != "sparse" else None,
        storage_bytes=storage,
        requires_grad=t.requires_grad,
        grad_fn=type(t.grad_fn).__name__ if t.grad_fn is not None else None,
        has_grad=_has_grad(t),
        kind=kind,
        extra=extra,
    )


def _has_grad(t: torch.Tensor) -> bool:
    if not t.is_leaf:
        return False  # reading .grad of a non-leaf warns and is always None
    return t.grad is not None


def _jagged_shapes(t: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(c.shape) for c in t.unbind()]


@torch.no_grad()
def inspect_tensor(t: torch.Tensor, name: str = "tensor", *, views: bool = True) -> InspectResult:
    """The card, statistics, histogram sample and shape-chosen views of ``t``; never raises for a dtype."""
    result = InspectResult(kind="tensor", name=name, card=card(t))
    kind = result.card.kind
    if kind in ("meta", "fake"):
        result.note = f"{kind} tensor: it has a shape and a dtype but no values"
        return result
    values, implicit_zeros, extras, note = _values(t)
    result.note = note
    if values is None:
        return result
    stats, sample = _reduce(values, implicit_zeros, t.dtype)
    stats.update(extras)
    result.stats = stats
    result.sample_size = len(sample)
    result.histogram = _histogram(sample, stats, integer=_is_integer(values.dtype))
    if views and kind in ("dense", "quantized"):
        dense = t.dequantize() if t.is_quantized else t
        result.views = shape_views(_as_real(dense), stats)
    return result


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex)


def _as_real(t: torch.Tensor) -> torch.Tensor:
    """What the values look like as real numbers: |z| for complex, 0/1 for bool."""
    if t.is_complex():
        return t.abs()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t


def _values(t: torch.Tensor) -> tuple[torch.Tensor | None, int, dict[str, Any], str | None]:
    """The values to reduce, how many zeros the layout leaves implicit, dtype-specific extras, a note."""
    t = t.detach()
    extras: dict[str, Any] = {}
    note = None
    implicit = 0
    if t.is_nested:
        parts = [c.reshape(-1) for c in t.unbind()]
        t = torch.cat(parts) if parts else torch.empty(0, dtype=t.dtype, device=t.device)
        note = f"nested tensor of {len(parts)} components: statistics over all their values"
    elif t.layout == torch.sparse_coo:
        vals = t.coalesce().values()
        implicit = t.numel() - vals.numel()
        extras.update(nnz=int(vals.numel()), density=vals.numel() / t.numel() if t.numel() else 0.0)
        t = vals
        note = "sparse: statistics include the implicit zeros; no picture of the values"
    elif t.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        vals = t.values()
        implicit = t.numel() - vals.numel()
        extras.update(nnz=int(vals.numel()), density=vals.numel() / t.numel() if t.numel() else 0.0)
        t = vals
        note = "sparse: statistics include the implicit zeros; no picture of the values"
    if t.is_quantized:
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            extras.update(scale=float(t.q_scale()), zero_point=int(t.q_zero_point()))
        else:
            extras.update(channel_axis=int(t.q_per_channel_axis()))
        ints = t.int_repr()
        if ints.numel():
            lo, hi = torch.aminmax(ints)
            extras.update(int_min=int(lo), int_max=int(hi))
        t = t.dequantize()
        note = "quantized: statistics of the dequantized values"
    if t.is_complex():
        if t.numel():
            phase = torch.angle(t)
            pmin, pmax = torch.aminmax(phase)
            host = torch.stack([pmin.double(), pmax.double(), t.real.double().mean(), t.imag.double().mean()]).tolist()
            extras.update(phase_min=host[0], phase_max=host[1], real_mean=host[2], imag_mean=host[3])
        note = "complex: min/max/mean/std are of the magnitude |z|; phase in radians"
        return t.abs(), implicit, extras, note
    if t.dtype in _FLOAT8 or t.dtype in (torch.float16, torch.bfloat16):
        return t.float(), implicit, extras, note  # float8 has no reductions; half sums lose precision
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype in _NATIVE_INTS:
        return t, implicit, extras, note
    if not t.dtype.is_floating_point:  # uint16/32/64 have few kernels
        return t.to(torch.float64 if t.dtype == getattr(torch, "uint64", None) else torch.int64), implicit, extras, note
    return None, 0, extras, f"no statistics for dtype {t.dtype}"


def _reduce(v: torch.Tensor, implicit_zeros: int, dtype: torch.dtype) -> tuple[dict[str, Any], np.ndarray]:
    n = v.numel() + implicit_zeros
    stats: dict[str, Any] = {
        "numel": n,
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "norm": 0.0,
        "nan": 0,
        "posinf": 0,
        "neginf": 0,
        "zeros": implicit_zeros,
    }
    if v.numel() == 0:
        if implicit_zeros:
            stats.update(min=0, max=0, mean=0.0, std=0.0 if n > 1 else None)
        return stats, np.zeros(0)
    if v.dtype == torch.bool:
        return _reduce_bool(v, stats, implicit_zeros)
    integer = _is_integer(v.dtype)
    lo, hi = torch.aminmax(v)
    wide = torch.float64 if (integer or v.dtype == torch.float64) else torch.float32
    mean = v.mean(dtype=wide) if integer else v.mean()
    std = (v.to(wide) if integer else v).std() if v.numel() > 1 else torch.zeros((), dtype=wide, device=v.device)
    nonzero = torch.count_nonzero(v)
    sample = _sample(v)
    host = _to_host([lo, hi, mean, std, nonzero], sample)
    first, sample_np = host
    lo_h, hi_h, mean_h, std_h, nonzero_h = first
    if not integer and not (math.isfinite(lo_h) and math.isfinite(hi_h)):
        return _reduce_nonfinite(v, stats, implicit_zeros, sample_np)
    stats["zeros"] = v.numel() - int(nonzero_h) + implicit_zeros
    count = v.numel()
    if integer:
        lo_h, hi_h = int(lo_h), int(hi_h)
        stats["sum"] = int(round(mean_h * count)) if abs(mean_h * count) < 2**53 else mean_h * count
    _finish(stats, count, lo_h, hi_h, mean_h, std_h, implicit_zeros)
    return stats, sample_np


def _finish(stats: dict[str, Any], count: int, lo: float, hi: float, mean: float, std: float, implicit: int) -> None:
    """Fold the implicit zeros of a sparse layout in, clamp rounding, derive the L2 norm from mean and std."""
    mean = min(max(mean, lo), hi)  # a float32 mean of a constant 1e16 can round past it
    if std < 0 or not math.isfinite(std) or lo == hi:
        std = 0.0  # a float32 std of a constant 1e16 comes out as 2e9
    sumsq = (count - 1) * std * std + count * mean * mean if count > 1 else mean * mean * count
    total = count + implicit
    if implicit:
        mean_all = mean * count / total
        lo, hi = min(lo, type(lo)(0)), max(hi, type(hi)(0))
        var = max(0.0, (sumsq - total * mean_all * mean_all) / (total - 1)) if total > 1 else 0.0
        mean, std = mean_all, math.sqrt(var)
    stats.update(min=lo, max=hi, mean=mean, std=std if total > 1 else None, norm=math.sqrt(max(sumsq, 0.0)))


def _reduce_bool(v: torch.Tensor, stats: dict[str, Any], implicit: int) -> tuple[dict[str, Any], np.ndarray]:
    true = torch.count_nonzero(v)
    sample = _sample(v)
    (true_h,), sample_np = _to_host([true], sample)
    t, n = int(true_h), v.numel() + implicit
    p = t / n
    stats.update(
        min=0 if t < n else 1,
        max=int(t > 0),
        mean=p,
        std=math.sqrt(p * (1 - p) * n / (n - 1)) if n > 1 else None,
        norm=math.sqrt(t),
        zeros=n - t,
        true=t,
        false=n - t,
    )
    return stats, sample_np


def _reduce_nonfinite(
    v: torch.Tensor, stats: dict[str, Any], implicit: int, sample: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """Only when aminmax saw a NaN or an Inf: count them, then reduce over the finite values.

    One masked copy is refilled in place (+inf for the min, -inf for the max, 0 for the sums);
    the std of the zero-filled copy is corrected for the zeros that stand in for non-finite values.
    """
    bad = ~torch.isfinite(v)
    n_bad = bad.sum()
    nan = torch.isnan(v).sum()
    posinf = (v == math.inf).sum()
    filled = v.masked_fill(bad, math.inf)
    lo = filled.amin()
    hi = filled.masked_fill_(bad, -math.inf).amax()
    zeroed = filled.masked_fill_(bad, 0)
    total = zeroed.sum(dtype=torch.float64)
    std_z = zeroed.std() if v.numel() > 1 else torch.zeros((), dtype=v.dtype, device=v.device)
    nonzero = torch.count_nonzero(zeroed)
    (n_bad_h, nan_h, pos_h, lo_h, hi_h, total_h, std_h, nonzero_h), _ = _to_host(
        [n_bad, nan, posinf, lo, hi, total, std_z, nonzero], torch.zeros(0, device=v.device)
    )
    n, k = v.numel(), int(n_bad_h)
    nf = n - k
    stats.update(
        nan=int(nan_h), posinf=int(pos_h), neginf=k - int(nan_h) - int(pos_h), zeros=n - int(nonzero_h) - k + implicit, finite=nf
    )
    if nf == 0:
        return stats, sample
    mean_f = total_h / nf
    mean_z = total_h / n
    m2_z = std_h * std_h * (n - 1)
    m2_f = max(0.0, m2_z - k * mean_z * mean_z - nf * (mean_f - mean_z) ** 2)
    _finish(stats, nf, lo_h, hi_h, mean_f, math.sqrt(m2_f / (nf - 1)) if nf > 1 else 0.0, implicit)
    return stats, sample


def _sample(v: torch.Tensor, limit: int = SAMPLE) -> torch.Tensor:
    """A bounded uniform sample drawn with a private generator: the global RNG is not touched."""
    n = v.numel()
    if n <= limit:
        return v.reshape(-1)
    g = torch.Generator(device=v.device)
    g.manual_seed(SEED)
    flat_index = torch.randint(0, n, (limit,), generator=g, device=v.device)
    if v.is_contiguous():
        return v.reshape(-1)[flat_index]
    # index the view in place: reshape(-1) of a non-contiguous or expanded view would copy it all
    return v[torch.unravel_index(flat_index, v.shape)]


def _to_host(scalars: list[torch.Tensor], sample: torch.Tensor) -> tuple[list[float], np.ndarray]:
    """Scalars and the sample in a single device-to-host transfer."""
    packed = torch.cat([torch.stack([s.to(torch.float64) for s in scalars]), sample.reshape(-1).to(torch.float64)])
    host = packed.cpu().numpy()
    k = len(scalars)
    return [float(x) for x in host[:k]], host[k:]


def _histogram(sample: np.ndarray, stats: dict[str, Any], integer: bool) -> tuple[np.ndarray, np.ndarray] | None:
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:  # a constant tensor: one bar (histc fails here at large magnitude)
        return np.array([finite.size]), np.array([lo, hi])
    if integer and hi - lo < BINS:
        edges = np.arange(lo, hi + 2) - 0.5
        return np.histogram(finite, bins=edges)[0], edges
    counts, edges = np.histogram(finite, bins=BINS, range=(lo, hi))
    return counts, edges


# --------------------------------------------------------------------------------------------
# views chosen by shape: each moves one small, already downsampled tensor to the host


def shape_views(t: torch.Tensor, stats: dict[str, Any]) -> list[View]:
    if t.numel() == 0 or stats.get("finite") == 0:
        return []
    dims = t.dim()
    out: list[View] = []
    if dims == 3 and t.shape[0] in (1, 3, 4) and min(t.shape[1:]) >= 2:
        out.append(_image(t, stats))
    elif dims == 4 and t.shape[1] in (1, 3, 4) and min(t.shape[2:]) >= 2:
        out.append(_image_grid(t, stats))
    if dims in (3, 4) and min(t.shape[-2:]) >= 2:
        out.append(_channels(t, channel_dim=0 if dims == 3 else 1, nonfinite=_has_nonfinite(stats)))
    if dims == 2 and min(t.shape) >= 1:
        out.append(View("heatmap", f"heatmap {t.shape[0]}×{t.shape[1]}", _heat(t), _stride_note(t.shape)))
    elif dims >= 3 and not any(v.kind == "image" for v in out):
        out.extend(_slices(t))
    return out


def _has_nonfinite(stats: dict[str, Any]) -> bool:
    return bool(stats.get("nan") or stats.get("posinf") or stats.get("neginf"))


def _strided(t: torch.Tensor, side: int) -> torch.Tensor:
    """Every k-th row and column so that the last two dims fit in ``side`` (a preview, not a resize)."""
    h, w = t.shape[-2], t.shape[-1]
    return t[..., :: max(1, math.ceil(h / side)), :: max(1, math.ceil(w / side))]


def _stride_note(shape: torch.Size) -> str:
    h, w = shape[-2], shape[-1]
    step = max(math.ceil(h / HEATMAP_SIDE), math.ceil(w / HEATMAP_SIDE))
    return f"every {step}th row and column" if step > 1 else ""


def _heat(t: torch.Tensor) -> np.ndarray:
    return _strided(t, HEATMAP_SIDE).to(torch.float64).cpu().numpy()


def _to_uint8(pixels: np.ndarray, dtype: torch.dtype, stats: dict[str, Any]) -> np.ndarray:
    pixels = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if dtype == torch.uint8:
        return pixels.clip(0, 255).astype(np.uint8)
    lo, hi = stats.get("min"), stats.get("max")
    if lo is None or hi is None:
        return np.zeros(pixels.shape, np.uint8)
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0  # already an image in [0, 1]: keep its brightness
    scale = (hi - lo) or 1.0
    return ((pixels - lo) / scale * 255).clip(0, 255).round().astype(np.uint8)


def _image(t: torch.Tensor, stats: dict[str, Any]) -> View:
    pixels = _strided(t, IMAGE_SIDE).permute(1, 2, 0).to(torch.float64).cpu().numpy()
    return View(
        "image",
        f"image {t.shape[1]}×{t.shape[2]}",
        _to_uint8(pixels, t.dtype, stats),
        "min–max scaled" if not (t.dtype == torch.uint8) else "",
    )


def _image_grid(t: torch.Tensor, stats: dict[str, Any]) -> View:
    n = min(t.shape[0], GRID_IMAGES)
    small = _strided(t[:n], GRID_SIDE).permute(0, 2, 3, 1).to(torch.float64).cpu().numpy()
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    _, h, w, c = small.shape
    grid = np.zeros((rows * (h + 2), cols * (w + 2), c))
    for i in range(n):
        r, col = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, col * (w + 2) + 1 : col * (w + 2) + 1 + w] = small[i]
    more = f"first {n} of {t.shape[0]}" if n < t.shape[0] else ""
    return View("image", f"{n} images {t.shape[2]}×{t.shape[3]}", _to_uint8(grid, t.dtype, stats), more)


def _channels(t: torch.Tensor, channel_dim: int, nonfinite: bool) -> View:
    c = t.shape[channel_dim]
    k = min(c, CHANNELS)
    x = t.narrow(channel_dim, 0, k).movedim(channel_dim, 0).reshape(k, -1)
    x = x.to(torch.float64) if x.dtype == torch.float64 or not x.dtype.is_floating_point else x.float()
    if nonfinite:
        finite = torch.isfinite(x)
        x = torch.where(finite, x, torch.full((), math.nan, dtype=x.dtype, device=x.device))
        inf = math.inf
        lo = torch.where(finite, x, inf).amin(1)
        hi = torch.where(finite, x, -inf).amax(1)
        mean = torch.nanmean(x, 1)
        std = torch.sqrt(torch.nanmean((x - mean[:, None]) ** 2, 1))
    else:
        lo, hi = torch.aminmax(x, dim=1)
        std, mean = torch.std_mean(x, dim=1, correction=0)
    table = torch.stack([lo.double(), hi.double(), mean.double(), std.double()], 1).cpu().tolist()
    rows = [{"channel": i, "min": r[0], "max": r[1], "mean": r[2], "std": r[3]} for i, r in enumerate(table)]
    return View("channels", f"per channel (dim {channel_dim}, {c} channels)", rows, f"first {k} of {c}" if k < c else "")


def _slices(t: torch.Tensor) -> list[View]:
    lead = t.shape[:-2]
    count = min(math.prod(lead), SLICES)
    flat = t.reshape(-1, t.shape[-2], t.shape[-1]) if t.is_contiguous() else None
    out = []
    picked = []
    for i in range(count):
        index = tuple(int(j) for j in np.unravel_index(i, tuple(lead)))
        picked.append(index)
    stacked = (
        torch.stack([_strided(flat[i] if flat is not None else t[idx], HEATMAP_SIDE) for i, idx in enumerate(picked)])
        .to(torch.float64)
        .cpu()
        .numpy()
    )
    for idx, data in zip(picked, stacked):
        label = ", ".join(str(j) for j in idx)
        out.append(View("heatmap", f"slice [{label}, :, :]", data, _stride_note(t.shape)))
    return out
