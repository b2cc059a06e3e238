"""What a tensor is, without reading its values: shape, dtype, layout, strides, memory, autograd state.

Works for every layout (dense, sparse, nested, quantized, mkldnn) and for tensors that have no
values at all (meta and fake tensors), so nothing here touches the data or the device.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchmagic.core.inspect_result import TensorCard
from torchmagic.core.shapes import dtype_name

MKLDNN: torch.layout | None = getattr(torch, "_mkldnn", None)  # a layout torch's type stubs leave out


def is_fake(t: torch.Tensor) -> bool:
    try:
        from torch._subclasses.fake_tensor import FakeTensor
    except ImportError:  # pragma: no cover - older torch
        return False
    return isinstance(t, FakeTensor)


def tensor_kind(t: torch.Tensor) -> str:
    """One of "dense", "meta", "fake", "sparse", "nested", "mkldnn" and "quantized"."""
    if is_fake(t):
        return "fake"
    if t.device.type == "meta":
        return "meta"
    if t.is_nested:
        return "nested"
    if t.layout == MKLDNN:
        return "mkldnn"
    if t.layout != torch.strided:
        return "sparse"
    if t.is_quantized:
        return "quantized"
    return "dense"


def card(t: torch.Tensor) -> TensorCard:
    kind = tensor_kind(t)
    strided = t.layout == torch.strided and not t.is_nested
    extra: dict[str, Any] = {}
    if kind == "nested":
        shape: Any = [tuple(c.shape) for c in t.unbind()]
        numel = sum(math.prod(s) for s in shape)
    else:
        shape = tuple(t.shape)
        numel = t.numel()
    if kind == "sparse":
        extra["nnz"] = int(t._nnz()) if t.layout == torch.sparse_coo else int(t.values().numel())
    if kind == "quantized":
        extra["qscheme"] = _qscheme(t)
    storage = None
    if strided and kind in ("dense", "quantized"):
        try:
            storage = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            storage = None
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
        nbytes=math.ceil(numel * _element_bits(t) / 8) if kind != "sparse" else None,
        storage_bytes=storage,
        requires_grad=t.requires_grad,
        grad_fn=type(t.grad_fn).__name__ if t.grad_fn is not None else None,
        has_grad=_has_grad(t),
        kind=kind,
        extra=extra,
    )


def _qscheme(t: torch.Tensor) -> str:
    try:
        return str(t.qscheme()).replace("torch.", "")
    except RuntimeError:  # torch.empty(..., dtype=torch.qint8) makes a tensor without a quantizer
        return "none"


def _element_bits(t: torch.Tensor) -> int:
    """Bits per element: quint4x2 and quint2x4 pack two and four elements into a byte."""
    packed = {getattr(torch, "quint4x2", None): 4, getattr(torch, "quint2x4", None): 2}
    return packed.get(t.dtype, 8 * t.dtype.itemsize)


def _has_grad(t: torch.Tensor) -> bool:
    if not t.is_leaf:
        return False  # reading .grad of a non-leaf warns and is always None
    return t.grad is not None
