"""Pictures of a tensor's values, chosen by its shape.

An image, an image grid, a per-channel table, a heatmap, or heatmaps of the first slices. Each
view moves one small, already downsampled tensor to the host: every k-th row and column of the
last two dimensions (a preview, not a resize), and at most the first images, channels or slices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from torchmagic.core.inspect_result import View
from torchmagic.core.tensorvalues import as_real, collapse_expanded

IMAGE_SIDE = 256
GRID_SIDE = 96
GRID_IMAGES = 16
HEATMAP_SIDE = 96
SLICES = 4
CHANNELS = 64
_CHANNEL_STATS = ("min", "max", "mean", "std")


def shape_views(t: torch.Tensor, stats: dict[str, Any]) -> list[View]:
    """The views that fit ``t``'s shape; its statistics scale the images and say whether to mask non-finite values.

    ``t`` may have any dtype ``as_real`` takes: only the small pieces shown are converted.
    """
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
    return as_real(_strided(t, HEATMAP_SIDE)).to(torch.float64).cpu().numpy()


NONFINITE_RGB = (255, 0, 255)  # image pixels that are NaN or ±Inf in any channel
NONFINITE_NOTE = "magenta: NaN or ±Inf"


def _marked(image: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``image`` as RGB with the pixels where any channel is non-finite painted ``NONFINITE_RGB``."""
    where = bad.any(axis=-1)
    if not where.any():
        return image
    rgb = np.repeat(image[..., :1], 3, axis=-1) if image.shape[-1] < 3 else image[..., :3].copy()
    rgb[where] = NONFINITE_RGB
    return rgb


def _image_view(title: str, pixels: np.ndarray, dtype: torch.dtype, stats: dict[str, Any], note: str) -> View:
    bad = ~np.isfinite(pixels)
    image = _marked(_levels(pixels, dtype, stats), bad)
    return View("image", title, image, "; ".join(part for part in (note, NONFINITE_NOTE if bad.any() else "") if part))


def _levels(pixels: np.ndarray, dtype: torch.dtype, stats: dict[str, Any]) -> np.ndarray:
    pixels = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if dtype == torch.uint8:
        return pixels.clip(0, 255).astype(np.uint8)
    lo: float | None = stats.get("min")
    hi: float | None = stats.get("max")
    if lo is None or hi is None:
        return np.zeros(pixels.shape, np.uint8)
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0  # already an image in [0, 1]: keep its brightness
    scale = (hi - lo) or 1.0
    levels: np.ndarray = ((pixels - lo) / scale * 255).clip(0, 255).round()
    return levels.astype(np.uint8)


def _image(t: torch.Tensor, stats: dict[str, Any]) -> View:
    pixels = as_real(_strided(t, IMAGE_SIDE).permute(1, 2, 0)).to(torch.float64).cpu().numpy()
    note = "min–max scaled" if not (t.dtype == torch.uint8) else ""
    return _image_view(f"image {t.shape[1]}×{t.shape[2]}", pixels, t.dtype, stats, note)


def _image_grid(t: torch.Tensor, stats: dict[str, Any]) -> View:
    n = min(t.shape[0], GRID_IMAGES)
    small = as_real(_strided(t[:n], GRID_SIDE).permute(0, 2, 3, 1)).to(torch.float64).cpu().numpy()
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    _, h, w, c = small.shape
    grid = np.zeros((rows * (h + 2), cols * (w + 2), c))
    for i in range(n):
        r, col = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, col * (w + 2) + 1 : col * (w + 2) + 1 + w] = small[i]
    more = f"first {n} of {t.shape[0]}" if n < t.shape[0] else ""
    return _image_view(f"{n} images {t.shape[2]}×{t.shape[3]}", grid, t.dtype, stats, more)


def _channels(t: torch.Tensor, channel_dim: int, nonfinite: bool) -> View:
    c = t.shape[channel_dim]
    k = min(c, CHANNELS)
    # per-channel min, max, mean and population std are the same over an expand()'s distinct elements
    x, _ = collapse_expanded(t.narrow(channel_dim, 0, k).movedim(channel_dim, 0), start=1)
    x = as_real(x).reshape(k, -1)
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
    rows = [{"channel": i, **dict(zip(_CHANNEL_STATS, row))} for i, row in enumerate(table)]
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
        as_real(torch.stack([_strided(flat[i] if flat is not None else t[idx], HEATMAP_SIDE) for i, idx in enumerate(picked)]))
        .to(torch.float64)
        .cpu()
        .numpy()
    )
    for idx, data in zip(picked, stacked):
        label = ", ".join(str(j) for j in idx)
        out.append(View("heatmap", f"slice [{label}, :, :]", data, _stride_note(t.shape)))
    return out
