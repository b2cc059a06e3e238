"""Record every torch operation a block of code runs, and explain the one that fails on shapes.

A ``TorchFunctionMode`` sees each call with its arguments *before* it runs, so when an op raises,
its operand shapes are still at hand; global forward pre/post hooks (``always_call``) keep a stack
of the modules being run, so the failing op is pinned to a module's qualified name (``fc1``) and
configuration (``Linear(in_features=4000, out_features=10, bias=True)``). The source line is the
innermost frame whose code object comes from the recorded file (a notebook cell). The words of
the explanation come from ``shape_errors``.

Everything attached is removed on every exit path.
"""

from __future__ import annotations

import math
import sys
from contextlib import ExitStack
from types import FrameType
from typing import Any, NamedTuple

import torch
from torch.nn.modules import module as nn_module
from torch.overrides import TorchFunctionMode

from torchmagic.core.attachments import Attachments
from torchmagic.core.formatting import dims
from torchmagic.core.inspect_result import Finding, OpRecord
from torchmagic.core.modtrace import module_config
from torchmagic.core.opcall import broadcast_shape, call_text, op_name, operand_text, operands, output_text
from torchmagic.core.shape_errors import explain

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


class _Running(NamedTuple):
    """A module whose forward is under way, and its name relative to the model it belongs to."""

    module: torch.nn.Module
    name: str


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: OpRecorder) -> None:
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


class OpRecorder:
    """Context manager: ``with OpRecorder(filename) as rec: exec(code, ns)``; then ``rec.ops``, ``rec.findings``."""

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
        self._stack: list[_Running] = []
        self._qualified: dict[int, str] = {}
        self._attachments = Attachments()
        self._mode = _Mode(self)

    # -- attach / detach ---------------------------------------------------------------------

    def __enter__(self) -> OpRecorder:
        try:
            self._attachments.hook(nn_module.register_module_forward_pre_hook(self._pre))
            self._attachments.hook(nn_module.register_module_forward_hook(self._post, always_call=True))
            mode = ExitStack()
            mode.enter_context(self._mode)
            self._attachments.callback(mode.close)
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
        self._stack.append(_Running(module, self._qualified.get(key, "")))

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._stack and self._stack[-1].module is module:
            self._stack.pop()

    def _module_label(self) -> tuple[str | None, str | None]:
        if not self._stack:
            return None, None
        running = self._stack[-1]
        module = running.module
        return (running.name or self.root_names.get(id(module)) or type(module).__name__), module_config(module)

    # -- ops ---------------------------------------------------------------------------------

    def _line(self) -> int | None:
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename == self.filename:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        line = self._line()
        module, _ = self._module_label()
        op = op_name(func)
        inputs, outputs = call_text(args, kwargs), output_text(out)
        key = (line, module, op, inputs, outputs)
        rec = self._index.get(key)
        if rec is not None:
            rec.count += 1
        elif len(self._index) < self.limit:
            rec = OpRecord(line, module, op, inputs, outputs)
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
        tensors = operands(args[:2]) + [v for k, v in kwargs.items() if k == "target" and isinstance(v, torch.Tensor)]
        if len(tensors) < 2:
            return
        a, b = tensors[0], tensors[1]
        if a.shape == b.shape:
            return
        joint = broadcast_shape(a.shape, b.shape)
        if joint is None or math.prod(joint) <= max(a.numel(), b.numel()):
            return
        if name in _SUBTRACT and not _column_against_vector(a.shape, b.shape):
            return
        key = (line, name, tuple(a.shape), tuple(b.shape))
        if key in self._flagged:
            return
        self._flagged.add(key)
        what = "the loss" if name in _LOSSES else "the difference"
        message = (
            f"{op_name(func)} of {operand_text(a)} and {operand_text(b)} broadcasts to "
            f"{dims(joint)}: {what} is taken over {math.prod(joint):,} pairs instead of "
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
        current: BaseException | None = exc
        seen = 0
        while current is not None and seen < 8:
            for e, finding in self._failures:
                if e is current:
                    return finding
            current = current.__cause__ or current.__context__
            seen += 1
        return None


def _column_against_vector(a: torch.Size, b: torch.Size) -> bool:
    return (len(a) == 2 and a[1] == 1 and len(b) == 1 and b[0] == a[0] > 1) or (
        len(b) == 2 and b[1] == 1 and len(a) == 1 and a[0] == b[0] > 1
    )
