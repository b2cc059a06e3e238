"""Compact, hashable descriptions of what flows through a module: shapes and dtypes, nested.

``signature`` walks tensors, tuples, lists, dicts, ``None``, PackedSequence and dataclass /
ModelOutput-like objects, so the shape table can say when a module sees a new shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.nn.utils.rnn import PackedSequence

_DTYPE_SHORT = {
    torch.float32: "f32",
    torch.float64: "f64",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "bool",
    torch.complex64: "c64",
    torch.complex128: "c128",
}

Signature = Any  # nested tuples of ("T", dtype, shape) leaves; hashable


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_SHORT.get(dtype, str(dtype).replace("torch.", ""))


def signature(value: Any, depth: int = 0) -> Signature:
    """A hashable structure of (dtype, shape) leaves; other values become their type name."""
    if isinstance(value, torch.Tensor):
        return ("T", dtype_name(value.dtype), tuple(value.shape))
    if depth > 4:
        return "…"
    if isinstance(value, PackedSequence):
        return ("Packed", signature(value.data, depth + 1), int(value.batch_sizes[0]) if len(value.batch_sizes) else 0)
    if isinstance(value, (tuple, list)):
        return tuple(signature(v, depth + 1) for v in value[:8])
    if isinstance(value, dict):
        return tuple((str(k), signature(v, depth + 1)) for k, v in list(value.items())[:8])
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple((f.name, signature(getattr(value, f.name), depth + 1)) for f in dataclasses.fields(value)[:8])
    return type(value).__name__


def format_signature(sig: Signature) -> str:
    """``f32[32, 3, 32, 32]``; tuples in parentheses; dict items as ``key=…``."""
    if sig is None:
        return "None"
    if isinstance(sig, str):
        return sig
    if isinstance(sig, tuple) and sig and sig[0] == "T" and len(sig) == 3:
        return f"{sig[1]}[{', '.join(str(d) for d in sig[2])}]"
    if isinstance(sig, tuple) and sig and sig[0] == "Packed":
        return f"Packed({format_signature(sig[1])}, batch={sig[2]})"
    parts = []
    for item in sig:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0] not in ("T", "Packed"):
            parts.append(f"{item[0]}={format_signature(item[1])}")
        else:
            parts.append(format_signature(item))
    return "(" + ", ".join(parts) + ")"


def batch_size(args: tuple[Any, ...], module: torch.nn.Module) -> int | None:
    """The batch size of a model's input, where it can be seen."""
    for arg in args:
        if isinstance(arg, PackedSequence):
            return int(arg.batch_sizes[0]) if len(arg.batch_sizes) else None
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            if isinstance(module, torch.nn.RNNBase) and not module.batch_first and arg.dim() > 2:
                return int(arg.shape[1])
            return int(arg.shape[0])
        if isinstance(arg, dict):
            return batch_size(tuple(arg.values()), module)
    return None


def first_tensor(value: Any, depth: int = 0) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if depth > 3:
        return None
    if isinstance(value, PackedSequence):
        return value.data
    if isinstance(value, (tuple, list)):
        for v in value:
            t = first_tensor(v, depth + 1)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = first_tensor(v, depth + 1)
            if t is not None:
                return t
    return None


def tensors_in(value: Any, depth: int = 0) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 3:
        return []
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v, depth + 1)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v, depth + 1)]
    return []
