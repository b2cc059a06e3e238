"""Statistics of one tensor, for every dtype and layout, computed on the tensor's own device.

The common case (no NaN, no Inf) costs one ``aminmax``, one ``mean``, one ``std`` and one
``count_nonzero``, and one transfer to the host that also carries the histogram sample. A NaN
or an Inf shows up in ``aminmax`` for free; only then are the non-finite values counted and the
statistics recomputed over the finite ones (boolean indexing would cost 15× on every tensor).
Min, max, mean and std are over the finite values, as lovely-tensors reports them.

``inspect_tensor`` adds the card (``tensorcard``) and the shape-chosen views (``tensorviews``);
``tensorvalues`` turns every layout and dtype into values these reductions can take, or says why
there are none. It works or says why: no dtype, layout or subclass makes it raise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from torchmagic.core.inspect_result import InspectResult
from torchmagic.core.tensorcard import card
from torchmagic.core.tensorvalues import is_integer, reducible, repeated_std
from torchmagic.core.tensorviews import shape_views

SAMPLE = 65536
BINS = 40
SEED = 0


@torch.no_grad()
def inspect_tensor(t: torch.Tensor, name: str = "tensor", *, views: bool = True) -> InspectResult:
    """The card, statistics, histogram sample and shape-chosen views of ``t``.

    Never raises for a dtype or a layout: where torch cannot read the values, ``note`` says why.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"inspect_tensor takes a torch.Tensor, not {type(t).__name__}")
    about = card(t)
    result = InspectResult(kind="tensor", name=name, card=about)
    if about.kind in ("meta", "fake"):
        result.note = f"{about.kind} tensor: it has a shape and a dtype but no values"
        return result
    try:
        found = reducible(t)
        if found.values is None:
            result.note = found.note
            return result
        stats, sample = _reduce(found.values, found.implicit_zeros)
    except Exception as exc:  # noqa: BLE001 - a kernel this build or a tensor subclass lacks: say so instead
        what = f"{about.dtype} on {about.device}" if type(t) in (torch.Tensor, torch.nn.Parameter) else type(t).__name__
        result.note = f"no statistics: torch could not reduce this {what} ({_first_line(exc)})"
        return result
    if found.repeat > 1:
        _repeat(stats, found.repeat)
    stats.update(found.extras)
    result.stats, result.note = stats, found.note
    result.sample_size = len(sample)
    result.histogram = _histogram(sample, integer=is_integer(found.values.dtype))
    if views and found.picture is not None:
        try:
            result.views = shape_views(found.picture, stats)
        except Exception as exc:  # noqa: BLE001 - the statistics stand without a picture
            result.note = "; ".join(n for n in (result.note, f"no picture: {_first_line(exc)}") if n)
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:159] + "…"


def _repeat(stats: dict[str, Any], k: int) -> None:
    """Statistics of the distinct values of an expanded view turned into those of the whole view."""
    counted = stats.get("finite", stats["numel"])  # the values the std was taken over
    stats["std"] = repeated_std(stats["std"], counted, k) if stats["mean"] is not None else None
    for key in ("numel", "zeros", "nan", "posinf", "neginf", "finite", "true", "false", "sum"):
        if isinstance(stats.get(key), (int, float)):
            stats[key] *= k
    stats["norm"] *= math.sqrt(k)


def _reduce(v: torch.Tensor, implicit_zeros: int) -> tuple[dict[str, Any], np.ndarray]:
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
    integer = is_integer(v.dtype)
    lo, hi = torch.aminmax(v)
    wide = torch.float64 if (integer or v.dtype == torch.float64) else torch.float32
    mean = v.mean(dtype=wide) if integer else v.mean()
    std = (v.to(wide) if integer else v).std() if v.numel() > 1 else torch.zeros((), dtype=wide, device=v.device)
    nonzero = torch.count_nonzero(v)
    sample = _sample(v)
    (lo_h, hi_h, mean_h, std_h, nonzero_h), sample_np = _to_host([lo, hi, mean, std, nonzero], sample)
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


def _histogram(sample: np.ndarray, integer: bool) -> tuple[np.ndarray, np.ndarray] | None:
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
