"""Record every torch operation a block of code runs, and explain the one that fails on shapes.

A ``TorchFunctionMode`` sees each call with its arguments *before* it runs, so when an op raises,
its operand shapes are still at hand; global forward pre/post hooks (``always_call``) keep a stack
of the modules being run, so the failing op is pinned to a module's qualified name (``fc1``) and
configuration (``Linear(in_features=4000, out_features=10, bias=True)``). The source line is the
innermost frame whose code object comes from the recorded file (a notebook cell).

Everything attached is removed on every exit path.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import torch
from torch.nn.modules import module as nn_module
from torch.overrides import TorchFunctionMode

from torchmagic.core.attachments import Attachments
from torchmagic.core.inspect_result import Finding, OpRecord
from torchmagic.core.modtrace import module_config
from torchmagic.core.shapes import dtype_name

LIMIT = 2000  # distinct (line, module, op, shapes) records kept; identical calls are folded

# attribute reads and queries that say nothing about the computation
_SKIP = {
    "__get__",
    "__set__",
    "dim",
    "size",
    "numel",
    "__len__",
    "__repr__",
    "__format__",
    "__iter__",
    "__hash__",
    "stride",
    "is_contiguous",
    "element_size",
    "is_floating_point",
    "is_complex",
    "__reduce_ex__",
    "__deepcopy__",
    "__setstate__",
    "__array__",
    "__bool__",
    "data_ptr",
    "has_names",
    "_is_view",
    "untyped_storage",
    "storage_offset",
    "__contains__",
    "__index__",
    "__int__",
    "__float__",
    "tolist",
    "__dlpack__",
    "get_device",
    "__getstate__",
    "__array_wrap__",
    "__torch_function__",
}
_LOSSES = {
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "soft_margin_loss",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "kl_div",
}
_SUBTRACT = {"sub", "__sub__", "__rsub__", "rsub", "subtract"}
_SHAPE_WORDS = re.compile(
    r"shape|size|dimension|mat1|mat2|channels|match|broadcast|expected input|invalid for input", re.IGNORECASE
)


def tensor_text(t: torch.Tensor) -> str:
    return f"{dtype_name(t.dtype)}[{', '.join(str(d) for d in t.shape)}]"


def _arg_text(a: Any) -> str | None:
    if isinstance(a, torch.Tensor):
        return tensor_text(a)
    if isinstance(a, (list, tuple)) and a and all(isinstance(x, torch.Tensor) for x in a):
        inner = ", ".join(tensor_text(x) for x in a[:6]) + (", …" if len(a) > 6 else "")
        return f"[{inner}]"
    if isinstance(a, (bool, int, float)) or a is None:
        return repr(a)
    if isinstance(a, (tuple, list, torch.Size)) and all(isinstance(x, int) for x in a):
        return repr(tuple(a)) if len(a) <= 8 else f"({len(a)} ints)"
    return None


def _call_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [t for t in (_arg_text(a) for a in args) if t is not None]
    parts += [f"{k}={t}" for k, t in ((k, _arg_text(v)) for k, v in kwargs.items()) if t is not None]
    return ", ".join(parts)


def _out_text(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return tensor_text(out)
    if isinstance(out, (tuple, list)):
        inner = [tensor_text(o) for o in out[:6] if isinstance(o, torch.Tensor)]
        return f"({', '.join(inner)})" if inner else ""
    return "" if out is None else type(out).__name__


def _tensors(args: tuple[Any, ...]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, torch.Tensor))
    return out


def op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return {
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
        "__getitem__": "index []",
        "__setitem__": "index assign []",
    }.get(name, name.strip("_") or name)


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: CellRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _SKIP:
            return func(*args, **kwargs)
        try:
            out = func(*args, **kwargs)
        except Exception as exc:
            self.recorder.failed(func, args, kwargs, exc)
            raise
        if self.recorder.record_ops:
            self.recorder.record(func, args, kwargs, out)
        return out


class CellRecorder:
    """Context manager: ``with CellRecorder(filename) as rec: exec(code, ns)``; then ``rec.ops``, ``rec.findings``."""

    def __init__(
        self, filename: str, namespace: dict[str, Any] | None = None, limit: int = LIMIT, *, record_ops: bool = True
    ) -> None:
        self.filename = filename
        self.record_ops = record_ops
        self.limit = limit
        self.namespace = namespace if namespace is not None else {}  # where a model's variable name is found
        self.root_names: dict[int, str] = {}
        self.ops: list[OpRecord] = []
        self.dropped = 0
        self.findings: list[Finding] = []
        self._index: dict[tuple[Any, ...], OpRecord] = {}
        self._flagged: set[tuple[Any, ...]] = set()
        self._failures: list[tuple[BaseException, Finding]] = []
        self._stack: list[tuple[torch.nn.Module, str]] = []
        self._qualified: dict[int, str] = {}
        self._attachments = Attachments()
        self._mode = _Mode(self)

    # -- attach / detach ---------------------------------------------------------------------

    def __enter__(self) -> CellRecorder:
        try:
            self._attachments.hook(nn_module.register_module_forward_pre_hook(self._pre))
            self._attachments.hook(nn_module.register_module_forward_hook(self._post, always_call=True))
            self._mode.__enter__()
            self._attachments.callback(lambda: self._mode.__exit__(None, None, None))
        except BaseException:
            self._attachments.detach()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._attachments.detach()

    # -- modules -----------------------------------------------------------------------------

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        key = id(module)
        if key not in self._qualified:  # a model seen for the first time: names relative to it, like named_modules()
            for name, m in module.named_modules():
                self._qualified.setdefault(id(m), name)
            self.root_names[key] = next((k for k, v in list(self.namespace.items()) if v is module and not k.startswith("_")), "")
        self._stack.append((module, self._qualified.get(key, "")))

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._stack and self._stack[-1][0] is module:
            self._stack.pop()

    def _module_label(self) -> tuple[str | None, str | None]:
        if not self._stack:
            return None, None
        module, name = self._stack[-1]
        return (name or self.root_names.get(id(module)) or type(module).__name__), module_config(module)

    # -- ops ---------------------------------------------------------------------------------

    def _line(self) -> int | None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename == self.filename:
                return frame.f_lineno
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        line = self._line()
        module, _ = self._module_label()
        op = op_name(func)
        key = (line, module, op, _call_text(args, kwargs), _out_text(out))
        rec = self._index.get(key)
        if rec is not None:
            rec.count += 1
        elif len(self._index) < self.limit:
            rec = OpRecord(line, module, op, key[3], key[4])
            self._index[key] = rec
            self.ops.append(rec)
        else:
            self.dropped += 1
        self._check_broadcast(func, args, kwargs, out, line, module)

    def _check_broadcast(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, line: int | None, module: str | None
    ) -> None:
        """Flag a loss whose prediction [N, 1] meets a target [N]: it broadcasts to [N, N] and means something else."""
        name = getattr(func, "__name__", "")
        if name not in _LOSSES and name not in _SUBTRACT:
            return
        tensors = _tensors(args[:2]) + [v for k, v in kwargs.items() if k == "target" and isinstance(v, torch.Tensor)]
        if len(tensors) < 2:
            return
        a, b = tensors[0], tensors[1]
        if a.shape == b.shape:
            return
        try:
            joint = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            return
        if math.prod(joint) <= max(a.numel(), b.numel()):
            return
        if name in _SUBTRACT and not _column_against_vector(a.shape, b.shape):
            return
        key = (line, name, tuple(a.shape), tuple(b.shape))
        if key in self._flagged:
            return
        self._flagged.add(key)
        what = "the loss" if name in _LOSSES else "the difference"
        message = (
            f"{op_name(func)} of {tensor_text(a)} and {tensor_text(b)} broadcasts to "
            f"[{', '.join(str(d) for d in joint)}]: {what} is taken over {math.prod(joint):,} pairs instead of "
            f"{max(a.numel(), b.numel()):,} elements, which silently changes its meaning; "
            f"make the shapes equal (for example prediction.squeeze(-1) or target.unsqueeze(-1))"
        )
        self.findings.append(
            Finding("broadcast", message, line=line, module=module, op=op_name(func), shapes=[list(a.shape), list(b.shape)])
        )

    def failed(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException) -> None:
        """Keep the innermost failing op of each exception, with its operands and module."""
        if any(e is exc for e, _ in self._failures):
            return
        module, config = self._module_label()
        finding = explain(func, args, kwargs, exc, module=module, config=config, line=self._line())
        self._failures.append((exc, finding))
        self.findings.append(finding)

    def finding_for(self, exc: BaseException) -> Finding | None:
        """The explanation recorded for ``exc`` (or an exception in its cause/context chain)."""
        seen = 0
        while exc is not None and seen < 8:
            for e, finding in self._failures:
                if e is exc:
                    return finding
            exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
            seen += 1
        return None


def _column_against_vector(a: torch.Size, b: torch.Size) -> bool:
    return (len(a) == 2 and a[1] == 1 and len(b) == 1 and b[0] == a[0] > 1) or (
        len(b) == 2 and b[1] == 1 and len(a) == 1 and a[0] == b[0] > 1
    )


# ---------------------------------------------------------------------------------------------
# explanations


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
    name = getattr(func, "__name__", "") or ""
    op = op_name(func)
    tensors = _tensors(args) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    shapes = [list(t.shape) for t in tensors]
    reason = _reason(name, args, kwargs, tensors)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    is_shape = bool(reason) or bool(_SHAPE_WORDS.search(first))
    where = f"in module `{module}` ({config})" if module else "outside any module"
    at = f" on line {line} of the cell" if line else ""
    head = "Shape error" if is_shape else f"{type(exc).__name__}"
    message = f"{head} {where}{at}: {op}({_call_text(args, kwargs)})"
    message += f" — {reason}" if reason else f" — {first}"
    return Finding(
        "shape_error" if is_shape else "op_error", message, line=line, module=module, module_config=config, op=op, shapes=shapes
    )


def _dims(shape: torch.Size) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _reason(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], tensors: list[torch.Tensor]) -> str:
    try:
        return _reason_for(name, args, kwargs, tensors)
    except Exception:  # noqa: BLE001 - an explanation must never hide the user's error
        return ""


def _reason_for(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], tensors: list[torch.Tensor]) -> str:
    if name == "linear" and len(tensors) >= 2:
        x, w = tensors[0], tensors[1]
        if x.dim() and x.shape[-1] != w.shape[-1]:
            return (
                f"the input has {x.shape[-1]} features in its last dimension but the layer expects "
                f"in_features={w.shape[-1]} (weight {_dims(w.shape)}); set in_features={x.shape[-1]} or reshape "
                f"the input"
            )
    if name in ("matmul", "mm", "bmm", "__matmul__", "__rmatmul__", "addmm", "baddbmm") and len(tensors) >= 2:
        a, b = (tensors[-2], tensors[-1]) if name in ("addmm", "baddbmm") else (tensors[0], tensors[1])
        if name == "__rmatmul__":
            a, b = b, a
        if a.dim() >= 1 and b.dim() >= 1:
            inner_b = b.shape[-2] if b.dim() >= 2 else b.shape[0]
            if a.shape[-1] != inner_b:
                return (
                    f"the inner dimensions differ: {_dims(a.shape)} @ {_dims(b.shape)} needs the last dimension of "
                    f"the left ({a.shape[-1]}) to equal the {'second-to-last' if b.dim() >= 2 else 'only'} "
                    f"dimension of the right ({inner_b})"
                )
    if name.startswith("conv") and len(tensors) >= 2:
        x, w = tensors[0], tensors[1]
        groups = kwargs.get("groups", args[6] if len(args) > 6 and isinstance(args[6], int) else 1)
        spatial = w.dim() - 2
        batched = x.dim() == spatial + 2
        channels = x.shape[1] if batched else (x.shape[0] if x.dim() == spatial + 1 else None)
        if channels is None:
            return (
                f"the input {_dims(x.shape)} has {x.dim()} dimensions; {name} expects {spatial + 1} (unbatched) "
                f"or {spatial + 2} (batched: N, C, …)"
            )
        if channels != w.shape[1] * groups:
            return (
                f"the input has {channels} channels (dimension {1 if batched else 0} of {_dims(x.shape)}) but "
                f"the layer expects in_channels={w.shape[1] * groups}"
            )
    if name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack") and args and isinstance(args[0], (list, tuple)):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        shapes = ", ".join(_dims(t.shape) for t in args[0][:8])
        if name == "stack":
            return f"stack needs tensors of equal shape; got {shapes}"
        return f"{name} along dim {dim} needs the other dimensions equal; got {shapes}"
    if name in ("view", "reshape") and tensors:
        x = tensors[0]
        target = [a for a in args[1:]] if len(args) > 1 else list(kwargs.get("shape", []))
        if len(target) == 1 and isinstance(target[0], (tuple, list, torch.Size)):
            target = list(target[0])
        if all(isinstance(d, int) for d in target):
            known = math.prod(d for d in target if d != -1)
            if -1 in target:
                if known == 0 or x.numel() % known:
                    return (
                        f"{x.numel():,} elements of {_dims(x.shape)} cannot be arranged as {tuple(target)}: "
                        f"{x.numel():,} is not a multiple of {known:,}"
                    )
            elif known != x.numel():
                return f"{_dims(x.shape)} has {x.numel():,} elements but {tuple(target)} has {known:,}"
            elif name == "view":
                return f"view cannot reshape this non-contiguous tensor (strides {tuple(x.stride())}); use reshape()"
    if len(tensors) >= 2:
        try:
            torch.broadcast_shapes(*(t.shape for t in tensors[:2]))
        except RuntimeError:
            a, b = tensors[0].shape, tensors[1].shape
            bad = [f"{x} vs {y}" for x, y in zip(reversed(a), reversed(b)) if x != y and x != 1 and y != 1]
            return (
                f"{_dims(a)} and {_dims(b)} do not broadcast: aligned from the right, the sizes "
                f"{'; '.join(reversed(bad))} differ and neither is 1"
            )
    return ""
