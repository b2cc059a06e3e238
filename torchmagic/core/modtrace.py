"""A module explained: its parameters and buffers, its FLOPs, and the shapes through every layer.

The trace runs one forward pass under ``no_grad`` (in eval mode unless asked otherwise) with a
pre- and a post-hook on every submodule, and leaves the model as it found it: training flags,
buffers, the global RNG state (torch, CUDA, ``random``, numpy) and every hook are restored on
every exit path. A model with lazy modules is traced on a copy, so its parameters stay
uninitialised.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.nn.parameter import is_lazy
from torch.nn.utils.rnn import PackedSequence

from torchmagic.core.attachments import Attachments
from torchmagic.core.inspect_result import InspectResult
from torchmagic.core.memory import cuda_in_use
from torchmagic.core.shapes import dtype_name, format_signature, signature


def shapes_of(value: Any, depth: int = 0) -> Any:
    """Shapes only, as lists of ints nested the way the values are nested; non-tensors are None."""
    if isinstance(value, torch.Tensor):
        return [int(d) for d in value.shape]
    if depth > 6:
        return None
    if isinstance(value, PackedSequence):
        return {"data": shapes_of(value.data, depth + 1), "batch_sizes": shapes_of(value.batch_sizes, depth + 1)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {f: shapes_of(getattr(value, f), depth + 1) for f in value._fields}
    if isinstance(value, (tuple, list)):
        return [shapes_of(v, depth + 1) for v in value]
    if isinstance(value, dict):  # also HuggingFace ModelOutput, an OrderedDict
        return {str(k): shapes_of(v, depth + 1) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: shapes_of(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    return None


def describe_value(value: Any) -> str:
    """``f32[32, 10]`` for one tensor, ``(f32[2, 5], f32[2, 5, 5])`` for a tuple: shapes.py's format."""
    return format_signature(signature(value))


def _describe_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [describe_value(a) for a in args] + [f"{k}={describe_value(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _call_shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    shapes = [shapes_of(a) for a in args]
    if kwargs:
        shapes.append({k: shapes_of(v) for k, v in kwargs.items()})
    return shapes


def module_config(module: torch.nn.Module) -> str:
    """``Linear(in_features=4000, out_features=10, bias=True)``: the type and its own settings."""
    extra = module.extra_repr().replace("\n", " ")
    return f"{type(module).__name__}({extra})"


# ---------------------------------------------------------------------------------------------
# parameters and buffers


def parameter_rows(module: torch.nn.Module) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per parameter and buffer (shared ones once), and the totals."""
    rows: list[dict[str, Any]] = []
    for kind, items in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in items:
            lazy = is_lazy(t)
            count = 0 if lazy else t.numel()
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "shape": None if lazy else [int(d) for d in t.shape],
                    "dtype": dtype_name(t.dtype),
                    "device": str(t.device),
                    "count": count,
                    "bytes": count * t.dtype.itemsize,
                    "trainable": bool(kind == "parameter" and t.requires_grad),
                }
            )
    params = [r for r in rows if r["kind"] == "parameter"]
    totals = {
        "params": sum(r["count"] for r in params),
        "trainable": sum(r["count"] for r in params if r["trainable"]),
        "param_bytes": sum(r["bytes"] for r in params),
        "buffers": sum(r["count"] for r in rows if r["kind"] == "buffer"),
        "buffer_bytes": sum(r["bytes"] for r in rows if r["kind"] == "buffer"),
        "lazy": any(r["shape"] is None for r in rows),
        "devices": sorted({r["device"] for r in rows}),
        "modules": sum(1 for _ in module.modules()),
    }
    return rows, totals


def forward_mismatch(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why ``module(*args, **kwargs)`` cannot bind to ``forward``'s signature, or None."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        return f"{type(module).__name__}.forward{sig} cannot take the input: {exc}"
    return None


def meta_mismatch(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why a meta input cannot meet real parameters, or None.

    Other device mismatches are left to the forward, which may move its inputs itself; a meta
    tensor has no values that any forward could move.
    """
    real = sorted({str(t.device) for t in list(module.parameters()) + list(module.buffers()) if t.device.type != "meta"})
    if not real or not any(t.device.type == "meta" for t in _tensors((args, kwargs))):
        return None
    return (
        f"the input is on meta (a shape without values) but {type(module).__name__}'s parameters are on "
        f"{', '.join(real)}; give the input values or trace a meta copy of the model"
    )


def _tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 6:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v, depth + 1)]
    return []


# ---------------------------------------------------------------------------------------------
# the layer-by-layer trace


@contextmanager
def preserved(module: torch.nn.Module) -> Iterator[None]:
    """Training flags, buffers and every global RNG state exactly as before, on every exit path."""
    flags = [(m, m.training) for m in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers() if b.device.type != "meta"]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if cuda_in_use() else None
    py_rng = random.getstate()
    np_rng = np.random.get_state()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)


class LayerTrace:
    """Hooks on every submodule that record input and output shapes of each call, in call order."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.rows: list[dict[str, Any]] = []
        self._stack: list[int] = []
        self._attachments = Attachments()
        self._names = {id(m): n for n, m in module.named_modules()}

    def __enter__(self) -> LayerTrace:
        try:
            for m in self.module.modules():
                self._attachments.hook(m.register_forward_pre_hook(self._pre, with_kwargs=True))
                self._attachments.hook(m.register_forward_hook(self._post, with_kwargs=True, always_call=True))
        except BaseException:
            self._attachments.detach()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._attachments.detach()

    def _pre(self, m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        name = self._names.get(id(m), "?")
        self._stack.append(len(self.rows))
        self.rows.append(
            {
                "module": name,
                "type": type(m).__name__,
                "depth": 0 if not name else name.count(".") + 1,
                "input_shapes": _call_shapes(args, kwargs),
                "output_shapes": None,
                "params": sum(p.numel() for p in m.parameters(recurse=False) if not is_lazy(p)),
                "flops": None,
                "input": _describe_call(args, kwargs),
                "output": "✗ raised",
            }
        )

    def _post(self, m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not self._stack:
            return
        row = self.rows[self._stack.pop()]
        if output is None and sys.exc_info()[0] is not None:
            return  # the always-called hook of a forward that raised: the row keeps "✗ raised"
        row["output_shapes"] = shapes_of(output)
        row["output"] = describe_value(output)


def _has_lazy(module: torch.nn.Module) -> bool:
    return any(is_lazy(t) for t in list(module.parameters()) + list(module.buffers()))


def _flops_by_module(counts: dict[str, dict[Any, int]], root: torch.nn.Module) -> dict[str, int]:
    """FlopCounterMode names modules ``Root.fc1.0``; map them to ``named_modules`` names."""
    prefix = type(root).__name__
    out = {}
    for key, per_op in counts.items():
        if key == prefix:
            out[""] = sum(per_op.values())
        elif key.startswith(prefix + "."):
            out[key[len(prefix) + 1 :]] = sum(per_op.values())
    return out


def trace_module(
    module: torch.nn.Module,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    name: str = "model",
    mode: str = "eval",
    count_flops: bool = True,
) -> InspectResult:
    """Run ``module(*args, **kwargs)`` once and record every submodule call; the model is left as found.

    ``mode``: "eval" (default, as torchinfo does: no dropout, batch norm uses its running statistics)
    or "same" (the module's current train/eval mode). Raises what the forward raised, with
    ``result.trace_rows`` filled up to the failing layer in ``exc.inspect_result``.
    """
    __tracebackhide__ = True  # noqa: F841 - IPython shows the user's forward, not this frame
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"trace_module takes a torch.nn.Module, not {type(module).__name__}")
    kwargs = kwargs or {}
    start = time.perf_counter()
    rows, totals = parameter_rows(module)
    result = InspectResult(kind="module", name=name, module_type=type(module).__name__, parameters=rows, totals=totals)
    target = module
    if _has_lazy(module):
        target = copy.deepcopy(module)  # tracing materialises lazy parameters; keep the user's model as is
        result.note = "lazy modules: traced on a copy, the model's own parameters stay uninitialised"
    with preserved(target), torch.no_grad():
        if mode == "eval":
            target.eval()
        with LayerTrace(target) as layers:
            try:
                output, flops = _forward(target, args, kwargs, count_flops)
            except BaseException as exc:
                result.trace_rows = layers.rows
                result.elapsed = time.perf_counter() - start
                exc.inspect_result = result  # type: ignore[attr-defined]
                raise
    result.trace_rows = layers.rows
    if flops is not None:
        total, per_module = flops
        result.flops = total
        seen: set[str] = set()
        for row in result.trace_rows:
            if row["module"] not in seen:
                seen.add(row["module"])
                row["flops"] = per_module.get(row["module"], 0)
    result.output = describe_value(output)
    if target is not module:
        result.parameters, result.totals = parameter_rows(target)
        result.totals["lazy"] = True
    result.elapsed = time.perf_counter() - start
    return result


def _forward(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], count_flops: bool
) -> tuple[Any, tuple[int, dict[str, int]] | None]:
    __tracebackhide__ = True  # noqa: F841
    if not count_flops:
        return module(*args, **kwargs), None
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        output = module(*args, **kwargs)
    return output, (int(counter.get_total_flops()), _flops_by_module(counter.get_flop_counts(), module))
