"""A torch call as the op recorder and the shape-error explainer print it: ``matmul (@)(f32[3, 4], f32[5, 6])``.

Operands show as dtype and shape; lists of tensors, scalars and int tuples show too, and anything
else is left out, since its repr says nothing about shapes and can be long.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torchmagic.core.formatting import dims
from torchmagic.core.shapes import dtype_name

# torch documents ``broadcast_shapes(*shapes) -> Size`` but leaves the function unannotated
_broadcast_shapes: Callable[..., torch.Size] = torch.broadcast_shapes

# dunder methods behind Python operators, named after the function and the operator
_OPERATORS = {
    "__matmul__": "matmul (@)",
    "__rmatmul__": "matmul (@)",
    "__add__": "add (+)",
    "__radd__": "add (+)",
    "__sub__": "sub (-)",
    "__rsub__": "sub (-)",
    "__mul__": "mul (*)",
    "__rmul__": "mul (*)",
    "__truediv__": "div (/)",
    "__rtruediv__": "div (/)",
    "__pow__": "pow (**)",
    "__iadd__": "add (+=)",
    "__isub__": "sub (-=)",
    "__imul__": "mul (*=)",
    "__itruediv__": "div (/=)",
    "__getitem__": "index []",
    "__setitem__": "index assign []",
}


def op_name(func: Any) -> str:
    """``add (+)`` for ``__add__``, ``and`` for ``__and__``; an in-place ``add_`` keeps its underscore."""
    name = getattr(func, "__name__", None) or str(func)
    if name in _OPERATORS:
        return _OPERATORS[name]
    return name[2:-2] if name.startswith("__") and name.endswith("__") and len(name) > 4 else name


def operand_text(t: torch.Tensor) -> str:
    return f"{dtype_name(t.dtype)}{dims(t.shape)}"


def _arg_text(a: Any) -> str | None:
    if isinstance(a, torch.Tensor):
        return operand_text(a)
    if isinstance(a, (list, tuple)) and a and all(isinstance(x, torch.Tensor) for x in a):
        inner = ", ".join(operand_text(x) for x in a[:6]) + (", …" if len(a) > 6 else "")
        return f"[{inner}]"
    if isinstance(a, (bool, int, float)) or a is None:
        return repr(a)
    if isinstance(a, (tuple, list, torch.Size)) and all(isinstance(x, int) for x in a):
        return repr(tuple(a)) if len(a) <= 8 else f"({len(a)} ints)"
    return None


def call_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [t for t in (_arg_text(a) for a in args) if t is not None]
    parts += [f"{k}={t}" for k, t in ((k, _arg_text(v)) for k, v in kwargs.items()) if t is not None]
    return ", ".join(parts)


def output_text(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return operand_text(out)
    if isinstance(out, (tuple, list)):
        inner = [operand_text(o) for o in out[:6] if isinstance(o, torch.Tensor)]
        return f"({', '.join(inner)})" if inner else ""
    return "" if out is None else type(out).__name__


def operands(args: tuple[Any, ...]) -> list[torch.Tensor]:
    """The tensors among the arguments, including those in a list argument (``torch.cat([a, b])``)."""
    out: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, torch.Tensor))
    return out


def broadcast_shape(a: torch.Size, b: torch.Size) -> torch.Size | None:
    """The shape ``a`` and ``b`` broadcast to, or None where they do not broadcast."""
    try:
        return _broadcast_shapes(a, b)
    except RuntimeError:
        return None
