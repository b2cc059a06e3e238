"""A failed torch call explained: the module, the op, the operand shapes, and what did not fit.

Each op family has an explainer that reads the operands and returns a sentence, or "" when the
rule it checks holds (the trouble lies elsewhere). Then, and for ops without an explainer, the
broadcasting rule is tried, which covers elementwise ops and most losses. Explaining never
raises: a bug here must not hide the user's own error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from torchmagic.core.formatting import dims
from torchmagic.core.inspect_result import Finding
from torchmagic.core.opcall import broadcast_shape, call_text, op_name, operands

# words of torch's own messages that say an error is about shapes, when no explainer spoke
_SHAPE_WORDS = re.compile(
    r"shape|size|dimension|mat1|mat2|channels|match|broadcast|expected input|invalid for input", re.IGNORECASE
)


class FailedCall(NamedTuple):
    """The call that raised: the op's ``__name__``, its arguments, and every tensor among them."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tensors: list[torch.Tensor]


Explainer = Callable[[FailedCall], str]


def explain(
    func: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: BaseException,
    *,
    module: str | None = None,
    config: str | None = None,
    line: int | None = None,
) -> Finding:
    """A sentence that names the module, the op and the operand shapes, and says what did not fit."""
    op = op_name(func)
    tensors = operands(args) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    reason = _reason(FailedCall(getattr(func, "__name__", "") or "", args, kwargs, tensors))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    is_shape = bool(reason) or bool(_SHAPE_WORDS.search(first))
    where = f"in module `{module}` ({config})" if module else "outside any module"
    at = f" on line {line} of the cell" if line else ""
    head = "Shape error" if is_shape else f"{type(exc).__name__}"
    message = f"{head} {where}{at}: {op}({call_text(args, kwargs)})"
    message += f" — {reason}" if reason else f" — {first}"
    return Finding(
        "shape_error" if is_shape else "op_error",
        message,
        line=line,
        module=module,
        module_config=config,
        op=op,
        shapes=[list(t.shape) for t in tensors],
    )


def _reason(call: FailedCall) -> str:
    explainer = _conv if call.name.startswith("conv") else _EXPLAINERS.get(call.name)
    try:
        return (explainer(call) if explainer is not None else "") or _broadcast(call)
    except Exception:  # noqa: BLE001 - an explanation must never hide the user's error
        return ""


# ---------------------------------------------------------------------------------------------
# one explainer per op family


def _linear(call: FailedCall) -> str:
    if len(call.tensors) < 2:
        return ""
    x, w = call.tensors[0], call.tensors[1]
    if not x.dim() or x.shape[-1] == w.shape[-1]:
        return ""
    return (
        f"the input has {x.shape[-1]} features in its last dimension but the layer expects "
        f"in_features={w.shape[-1]} (weight {dims(w.shape)}); set in_features={x.shape[-1]} or reshape "
        f"the input"
    )


def _matmul(call: FailedCall) -> str:
    return _inner_dimensions(call.tensors[0], call.tensors[1]) if len(call.tensors) >= 2 else ""


def _rmatmul(call: FailedCall) -> str:
    """``x.__rmatmul__(y)`` computes ``y @ x``."""
    return _inner_dimensions(call.tensors[1], call.tensors[0]) if len(call.tensors) >= 2 else ""


def _addmm(call: FailedCall) -> str:
    """``addmm(input, a, b)`` adds ``a @ b`` to ``input``: the product is of the last two."""
    return _inner_dimensions(call.tensors[-2], call.tensors[-1]) if len(call.tensors) >= 2 else ""


def _inner_dimensions(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.dim() < 1 or b.dim() < 1:
        return ""
    inner_b = b.shape[-2] if b.dim() >= 2 else b.shape[0]
    if a.shape[-1] == inner_b:
        return ""
    return (
        f"the inner dimensions differ: {dims(a.shape)} @ {dims(b.shape)} needs the last dimension of "
        f"the left ({a.shape[-1]}) to equal the {'second-to-last' if b.dim() >= 2 else 'only'} "
        f"dimension of the right ({inner_b})"
    )


def _conv(call: FailedCall) -> str:
    if len(call.tensors) < 2:
        return ""
    x, w = call.tensors[0], call.tensors[1]
    args = call.args
    # groups is the seventh positional argument of F.convNd and F.conv_transposeNd
    groups = call.kwargs.get("groups", args[6] if len(args) > 6 and isinstance(args[6], int) else 1)
    spatial = w.dim() - 2
    batched = x.dim() == spatial + 2
    channels = x.shape[1] if batched else (x.shape[0] if x.dim() == spatial + 1 else None)
    if channels is None:
        return (
            f"the input {dims(x.shape)} has {x.dim()} dimensions; {call.name} expects {spatial + 1} (unbatched) "
            f"or {spatial + 2} (batched: N, C, …)"
        )
    if channels == w.shape[1] * groups:
        return ""
    return (
        f"the input has {channels} channels (dimension {1 if batched else 0} of {dims(x.shape)}) but "
        f"the layer expects in_channels={w.shape[1] * groups}"
    )


def _listed_shapes(call: FailedCall) -> str | None:
    """The shapes of the tensors in the first argument (``cat([a, b])``), or None without such a list."""
    if not call.args or not isinstance(call.args[0], (list, tuple)):
        return None
    return ", ".join(dims(t.shape) for t in call.args[0][:8])


def _stack(call: FailedCall) -> str:
    shapes = _listed_shapes(call)
    return "" if shapes is None else f"stack needs tensors of equal shape; got {shapes}"


def _concatenate(call: FailedCall) -> str:
    shapes = _listed_shapes(call)
    if shapes is None:
        return ""
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0)
    return f"{call.name} along dim {dim} needs the other dimensions equal; got {shapes}"


def _reshape(call: FailedCall) -> str:
    if not call.tensors:
        return ""
    x = call.tensors[0]
    target = list(call.args[1:]) if len(call.args) > 1 else list(call.kwargs.get("shape", []))
    if len(target) == 1 and isinstance(target[0], (tuple, list, torch.Size)):
        target = list(target[0])  # view((2, 3)) as well as view(2, 3)
    if not all(isinstance(d, int) for d in target):
        return ""  # view(dtype)
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or x.numel() % known:
            return (
                f"{x.numel():,} elements of {dims(x.shape)} cannot be arranged as {tuple(target)}: "
                f"{x.numel():,} is not a multiple of {known:,}"
            )
        return ""
    if known != x.numel():
        return f"{dims(x.shape)} has {x.numel():,} elements but {tuple(target)} has {known:,}"
    if call.name == "view":
        return f"view cannot reshape this non-contiguous tensor (strides {tuple(x.stride())}); use reshape()"
    return ""


def _broadcast(call: FailedCall) -> str:
    """Elementwise ops, losses, and whatever else combines its first two tensors."""
    if len(call.tensors) < 2:
        return ""
    a, b = call.tensors[0].shape, call.tensors[1].shape
    if broadcast_shape(a, b) is not None:
        return ""
    bad = [f"{x} vs {y}" for x, y in zip(reversed(a), reversed(b)) if x != y and x != 1 and y != 1]
    return (
        f"{dims(a)} and {dims(b)} do not broadcast: aligned from the right, the sizes "
        f"{'; '.join(reversed(bad))} differ and neither is 1"
    )


# conv1d, conv2d, conv_transpose2d, … share ``_conv``: every op whose name starts with "conv"
_EXPLAINERS: dict[str, Explainer] = {
    "linear": _linear,
    **dict.fromkeys(("matmul", "mm", "bmm", "__matmul__"), _matmul),
    "__rmatmul__": _rmatmul,
    **dict.fromkeys(("addmm", "baddbmm"), _addmm),
    **dict.fromkeys(("cat", "concat", "concatenate", "hstack", "vstack"), _concatenate),
    "stack": _stack,
    **dict.fromkeys(("view", "reshape"), _reshape),
}
