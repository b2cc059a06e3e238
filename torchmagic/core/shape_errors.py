"""A failed torch call explained: the module, the op, the operand shapes, and what did not fit.

Each op family has an explainer that reads the operands and returns a sentence, or "" when the
rule it checks holds (the trouble lies elsewhere). The broadcasting rule speaks only for ops that
broadcast (elementwise ops and losses), never for index ops, whose operands need not share a
shape. Explaining never raises: a bug here must not hide the user's own error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from torchmagic.core.formatting import dims
from torchmagic.core.inspect_result import Finding
from torchmagic.core.opcall import broadcast_shape, call_text, op_name, operands
from torchmagic.core.shapes import dtype_name

# words of torch's own messages that say an error is about shapes, when no explainer spoke
_SHAPE_WORDS = re.compile(
    r"shape|size|dimension|mat1|mat2|channels|match|broadcast|expected input|invalid for input", re.IGNORECASE
)
# "index 12 is out of bounds for dimension 0 with size 10" is about a value, not a shape
_INDEX_WORDS = re.compile(r"out of (bounds|range)", re.IGNORECASE)


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
    tensors = operands(args) + [v for k, v in kwargs.items() if k != "out" and isinstance(v, torch.Tensor)]
    call = FailedCall(getattr(func, "__name__", "") or "", args, kwargs, tensors)
    reason = _reason(call)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if reason:
        is_shape = call.name not in _VALUE_EXPLAINERS
    else:
        is_shape = bool(_SHAPE_WORDS.search(first)) and not _INDEX_WORDS.search(first)
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
    explainer = _EXPLAINERS.get(call.name)
    try:
        reason = explainer(call) if explainer is not None else ""
        return reason or (_broadcast(call) if broadcasts(call.name) else "")
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
    """``matmul``, ``mm``, ``bmm`` and ``@``; ``x.__rmatmul__(y)`` computes ``y @ x``."""
    if len(call.tensors) < 2:
        return ""
    a, b = call.tensors[:2] if call.name != "__rmatmul__" else (call.tensors[1], call.tensors[0])
    return _product(a, b, call.name)


def _addmm(call: FailedCall) -> str:
    """``addmm(input, a, b)`` adds ``a @ b`` to ``input``: the product is of the last two."""
    return _product(call.tensors[-2], call.tensors[-1], call.name) if len(call.tensors) >= 2 else ""


def _product(a: torch.Tensor, b: torch.Tensor, name: str) -> str:
    if a.dim() < 1 or b.dim() < 1:
        return ""
    inner_b = b.shape[-2] if b.dim() >= 2 else b.shape[0]
    if a.shape[-1] != inner_b:
        return (
            f"the inner dimensions differ: {dims(a.shape)} @ {dims(b.shape)} needs the last dimension of "
            f"the left ({a.shape[-1]}) to equal the {'second-to-last' if b.dim() >= 2 else 'only'} "
            f"dimension of the right ({inner_b})"
        )
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    if name in ("bmm", "baddbmm"):
        return "" if batch_a == batch_b else f"{name} needs equal batch sizes; got {dims(batch_a)} and {dims(batch_b)}"
    if broadcast_shape(batch_a, batch_b) is None:
        return f"the batch dimensions {dims(batch_a)} of the left and {dims(batch_b)} of the right do not broadcast"
    return ""


def _conv(call: FailedCall) -> str:
    """F.convNd weights are [out, in / groups, …]; F.conv_transposeNd weights are [in, out / groups, …]."""
    if len(call.tensors) < 2:
        return ""
    x, w = call.tensors[0], call.tensors[1]
    args = call.args
    # groups is the seventh positional argument of F.convNd and F.conv_transposeNd, the ninth of
    # torch.convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    generic = call.name == "convolution"
    transposed = bool(call.kwargs.get("transposed", args[6] if generic and len(args) > 6 else "transpose" in call.name))
    at = 8 if generic else 6
    groups = call.kwargs.get("groups", args[at] if len(args) > at and isinstance(args[at], int) else 1)
    spatial = w.dim() - 2
    batched = x.dim() == spatial + 2
    channels = x.shape[1] if batched else (x.shape[0] if x.dim() == spatial + 1 else None)
    if channels is None:
        return (
            f"the input {dims(x.shape)} has {x.dim()} dimensions; {call.name} expects {spatial + 1} (unbatched) "
            f"or {spatial + 2} (batched: N, C, …)"
        )
    expected = w.shape[0] if transposed else w.shape[1] * groups
    if channels == expected:
        return ""
    return (
        f"the input has {channels} channels (dimension {1 if batched else 0} of {dims(x.shape)}) but "
        f"the layer expects in_channels={expected}"
    )


def _listed(call: FailedCall) -> list[torch.Tensor] | None:
    """The tensors in the first argument (``cat([a, b])``), or None without such a list."""
    if not call.args or not isinstance(call.args[0], (list, tuple)):
        return None
    return [t for t in call.args[0] if isinstance(t, torch.Tensor)]


def _shapes_text(tensors: list[torch.Tensor]) -> str:
    return ", ".join(dims(t.shape) for t in tensors[:8]) + (", …" if len(tensors) > 8 else "")


def _stack(call: FailedCall) -> str:
    listed = _listed(call)
    if not listed or all(t.shape == listed[0].shape for t in listed):
        return ""
    return f"stack needs tensors of equal shape; got {_shapes_text(listed)}"


# hstack, vstack and dstack first lift their inputs to at least 1, 2 and 3 dimensions (atleast_Nd)
_LIFT = {"hstack": 1, "vstack": 2, "row_stack": 2, "dstack": 3}
_JOIN_DIM = {"vstack": 0, "row_stack": 0, "dstack": 2}


def _lifted(shape: Sequence[int], to: int) -> tuple[int, ...]:
    s = tuple(shape)
    if len(s) >= to:
        return s
    if not s:
        return (1,) * to
    if to == 2:
        return (1, *s)
    return (1, *s, 1) if len(s) == 1 else (*s, 1)


def _concatenate(call: FailedCall) -> str:
    listed = _listed(call)
    if not listed:
        return ""
    shapes = [_lifted(t.shape, _LIFT.get(call.name, 0)) for t in listed]
    if call.name == "hstack":
        dim = 0 if all(len(s) == 1 for s in shapes) else 1  # 1-D tensors are joined end to end
    elif call.name in _JOIN_DIM:
        dim = _JOIN_DIM[call.name]
    else:
        dim = call.kwargs.get("dim", call.kwargs.get("axis", call.args[1] if len(call.args) > 1 else 0))
    ranks = {len(s) for s in shapes}
    if len(ranks) == 1 and isinstance(dim, int):
        n = ranks.pop()
        if not -n <= dim < n:
            return ""  # torch's own message says the dim is out of range
        d = dim % n
        if all(s[:d] + s[d + 1 :] == shapes[0][:d] + shapes[0][d + 1 :] for s in shapes):
            return ""
    return f"{call.name} along dim {dim} needs the other dimensions equal; got {_shapes_text(listed)}"


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


# ---------------------------------------------------------------------------------------------
# index ops: what is wrong is a value, not a shape


def _embedding(call: FailedCall) -> str:
    """``F.embedding(indices, weight)``; ``torch.embedding(weight, indices)`` has them the other way round."""
    if len(call.tensors) < 2:
        return ""
    idx, weight = call.tensors[0], call.tensors[1]
    if idx.is_floating_point() and not weight.is_floating_point():
        idx, weight = weight, idx
    if idx.dtype not in (torch.int32, torch.int64):
        return f"the indices are {dtype_name(idx.dtype)}; an embedding looks rows up by integer index: convert them with .long()"
    n = weight.shape[0]
    return _out_of_range(idx, n, f"num_embeddings is {n} (weight {dims(weight.shape)})", "indices")


def _index_select(call: FailedCall) -> str:
    if len(call.tensors) < 2:
        return ""
    x, idx = call.tensors[0], call.tensors[1]
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0)
    if not isinstance(dim, int):
        return ""
    n = x.shape[dim] if x.dim() else 1
    return _out_of_range(idx, n, f"dimension {dim} of {dims(x.shape)} has size {n}", "indices")


def _class_targets(call: FailedCall) -> str:
    """``cross_entropy`` and ``nll_loss`` with class indices as the target; ``ignore_index`` is allowed."""
    if len(call.tensors) < 2 or call.tensors[1].is_floating_point():
        return ""  # a target of class probabilities
    x, target = call.tensors[0], call.tensors[1]
    ignore = call.kwargs.get("ignore_index", call.args[4] if len(call.args) > 4 else -100)
    n = x.shape[1] if x.dim() >= 2 else x.shape[0]
    return _out_of_range(target[target != ignore], n, f"the input {dims(x.shape)} has {n} classes", "targets")


def _out_of_range(idx: torch.Tensor, n: int, what: str, noun: str) -> str:
    """Which of ``idx`` lies outside ``0…n-1``, and how many do; the reductions run on the indices' device."""
    if idx.numel() == 0:
        return ""
    lo, hi = (int(v) for v in torch.aminmax(idx.reshape(-1)))
    if 0 <= lo and hi < n:
        return ""
    bad = int(((idx < 0) | (idx >= n)).sum())
    one = noun.removesuffix("s").replace("indice", "index")
    relation = f"{hi} is out of range" if hi >= n else f"{lo} is negative"
    return f"{one} {relation}: {what}, so {noun} must lie in 0…{n - 1} ({bad:,} of {idx.numel():,} do not)"


# ---------------------------------------------------------------------------------------------
# broadcasting: elementwise ops and losses


def _broadcast(call: FailedCall) -> str:
    """The first two operands that do not broadcast, or an in-place op whose result would not fit its target."""
    shapes = [t.shape for t in call.tensors]
    for i, a in enumerate(shapes):
        for b in shapes[i + 1 :]:
            if broadcast_shape(a, b) is None:
                bad = [f"{x} vs {y}" for x, y in zip(reversed(a), reversed(b)) if x != y and x != 1 and y != 1]
                return (
                    f"{dims(a)} and {dims(b)} do not broadcast: aligned from the right, the sizes "
                    f"{'; '.join(reversed(bad))} differ and neither is 1"
                )
    if len(shapes) >= 2 and _in_place(call.name):
        joint = broadcast_shape(shapes[0], shapes[1])
        if joint is not None and joint != shapes[0]:
            return f"an in-place op writes into its first operand {dims(shapes[0])}, but the operands broadcast to {dims(joint)}"
    return ""


def _in_place(name: str) -> bool:
    return (name.endswith("_") and not name.startswith("__")) or (name.startswith("__i") and name != "__invert__")


def broadcasts(name: str) -> bool:
    """Whether the op named ``name`` (``add``, ``__iadd__``, ``mul_``) broadcasts its tensor operands."""
    if name.startswith("__i"):
        name = "__" + name[3:]
    elif name.endswith("_") and not name.startswith("__"):
        name = name[:-1]
    return name in _BROADCASTING


_BROADCASTING = frozenset(
    """add sub subtract rsub mul multiply div divide true_divide floor_divide remainder fmod pow float_power
    atan2 arctan2 hypot copysign nextafter ldexp xlogy logaddexp logaddexp2 maximum minimum fmax fmin heaviside
    gcd lcm igamma igammac eq ne lt le gt ge greater less greater_equal less_equal not_equal isclose
    logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor bitwise_left_shift
    bitwise_right_shift where lerp addcmul addcdiv clamp clip masked_fill broadcast_tensors complex polar copy
    __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __floordiv__ __rfloordiv__
    __mod__ __rmod__ __pow__ __rpow__ __and__ __rand__ __or__ __ror__ __xor__ __rxor__ __lshift__
    __rlshift__ __rshift__ __rrshift__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__
    mse_loss l1_loss smooth_l1_loss huber_loss soft_margin_loss binary_cross_entropy
    binary_cross_entropy_with_logits kl_div poisson_nll_loss gaussian_nll_loss margin_ranking_loss
    hinge_embedding_loss cosine_similarity pairwise_distance""".split()
)

_EXPLAINERS: dict[str, Explainer] = {
    "linear": _linear,
    **dict.fromkeys(("matmul", "mm", "bmm", "__matmul__", "__rmatmul__"), _matmul),
    **dict.fromkeys(("addmm", "baddbmm"), _addmm),
    **dict.fromkeys((*(f"conv{n}d" for n in (1, 2, 3)), *(f"conv_transpose{n}d" for n in (1, 2, 3)), "convolution"), _conv),
    **dict.fromkeys(("cat", "concat", "concatenate", "hstack", "vstack", "row_stack", "dstack"), _concatenate),
    "stack": _stack,
    **dict.fromkeys(("view", "reshape"), _reshape),
    "embedding": _embedding,
    "index_select": _index_select,
    **dict.fromkeys(("cross_entropy", "nll_loss"), _class_targets),
}
# their reasons are about index values, not shapes
_VALUE_EXPLAINERS = frozenset(("embedding", "index_select", "cross_entropy", "nll_loss"))
