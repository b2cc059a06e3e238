"""Pictures as PNG without PIL (8-bit grey, RGB or RGBA, one zlib stream), inlined as data URIs.

Also the colour map that turns a heatmap's values into RGB.
"""

from __future__ import annotations

import base64
import struct
import zlib
from html import escape

import numpy as np


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 HxW, HxWx1, HxWx3 or HxWx4 array as PNG."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    h, w = a.shape[:2]
    color = {2: 0, 3: {3: 2, 4: 6}.get(a.shape[2] if a.ndim == 3 else 0, 2)}[a.ndim]
    raw = b"".join(b"\x00" + a[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def png_img(pixels: np.ndarray, scale: int = 1, title: str = "") -> str:
    h, w = pixels.shape[:2]
    data = base64.b64encode(png_bytes(pixels)).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" width="{w * scale}" height="{h * scale}" '
        f'title="{escape(title)}" alt="{escape(title)}" style="image-rendering:pixelated"/>'
    )


def colormap(values: np.ndarray) -> np.ndarray:
    """Blue–white–red around zero when the values change sign, else white to dark blue; NaN/Inf grey."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    out = np.full(v.shape + (3,), 160, dtype=np.uint8)
    if not finite.any():
        return out
    lo, hi = float(v[finite].min()), float(v[finite].max())
    if lo < 0 < hi:
        m = max(-lo, hi)
        t = np.where(finite, v / m, 0.0)
        pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
        r = 255 - neg * 200
        g = 255 - (pos + neg) * 200
        b = 255 - pos * 200
    else:
        t = np.where(finite, (v - lo) / ((hi - lo) or 1.0), 0.0)
        r = 255 - t * 230
        g = 255 - t * 180
        b = 255 - t * 80
    rgb = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    out[finite] = rgb[finite]
    return out
