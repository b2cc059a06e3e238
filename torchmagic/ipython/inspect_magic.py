"""``%tensor_inspect``: a tensor, a module or a cell, explained."""

from __future__ import annotations

from typing import Any

import torch
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from torchmagic.core.celltrace import OpRecorder
from torchmagic.core.inspect_result import InspectResult
from torchmagic.core.modtrace import forward_mismatch, meta_mismatch, parameter_rows, trace_module
from torchmagic.core.tensorstats import inspect_tensor
from torchmagic.ipython.cell_runner import compile_cell, show_user_frames


@magics_class
class InspectMagics(Magics):
    @magic_arguments()
    @argument("expression", nargs="*", help="a tensor or a module (any Python expression); empty with %%%%tensor_inspect")
    @argument(
        "--input",
        nargs="+",
        metavar="EXPR",
        default=None,
        help="sample input for a module: a tuple or list is passed as positional arguments, a dict as "
        "keyword arguments, anything else as the one argument; adds FLOPs and a layer-by-layer trace",
    )
    @argument(
        "--train-mode",
        action="store_true",
        help="trace in the module's current train/eval mode (default: eval, restored afterwards)",
    )
    @argument("--no-flops", action="store_true", help="skip counting FLOPs")
    @argument("--no-views", action="store_true", help="tensor: statistics and histogram only, no image/heatmap")
    @needs_local_scope
    @line_cell_magic
    def tensor_inspect(self, line: str, cell: str | None = None, local_ns: dict[str, Any] | None = None) -> Any:
        """Explain a tensor, a module, or every torch operation of a cell.

        ``%tensor_inspect x``: shape, dtype, device, layout, strides, memory, autograd state, statistics
        over the finite values (NaN and ±Inf counted apart), a histogram of a sample, and pictures
        chosen by shape (image, image grid, per-channel table, heatmap, slices). Every dtype and
        layout gets its card; where torch cannot read the values (bits8, uint4, …) a note says why.

        ``%tensor_inspect model --input x``: parameters and buffers, FLOPs and the input/output
        shapes of every layer; the model's mode, parameters, buffers and the RNG state are left
        as they were. ``--input (x, lengths)`` passes two arguments, ``--input {'x': x}`` keywords.

        ``%%tensor_inspect`` on a cell: each torch op the cell runs, by source line and module. A
        shape error is re-raised with a note naming the module (``fc1``), its configuration, the op
        and the operand shapes; a loss that broadcasts a [N, 1] prediction against a [N] target is
        flagged.

        The line magic returns the result: ``r = %tensor_inspect x`` then ``r.stats``, ``r.trace``.

        Example::

            %tensor_inspect images[0]
            %tensor_inspect model --input torch.randn(8, 3, 32, 32)
        """
        __tracebackhide__ = True
        args = parse_argstring(self.tensor_inspect, line)
        ns = dict(self.shell.user_ns)
        ns.update(local_ns or {})
        if cell is not None:
            return self._cell(cell, args)
        expression = " ".join(args.expression).strip()
        if not expression:
            raise _usage("%tensor_inspect: give a tensor or module expression, e.g. %tensor_inspect x")
        obj = _evaluate(expression, ns, "the expression")
        if isinstance(obj, torch.Tensor):
            if _module_options(args):
                raise _usage(f"%tensor_inspect: {_module_options(args)[0]} is for modules; `{expression}` is a tensor")
            return inspect_tensor(obj, expression, views=not args.no_views)
        if isinstance(obj, torch.nn.Module):
            return self._module(obj, expression, args, ns)
        what, hint = _what(obj, expression)
        raise _usage(f"%tensor_inspect: `{expression}` is {what}, not a torch.Tensor or torch.nn.Module{hint}")

    def _module(self, module: torch.nn.Module, expression: str, args: Any, ns: dict[str, Any]) -> InspectResult:
        __tracebackhide__ = True
        if "_parameters" not in vars(module):
            kind = type(module).__name__
            raise _usage(f"%tensor_inspect: `{expression}` is a {kind} whose __init__ never called super().__init__()")
        if args.input is None:
            if _module_options(args):
                raise _usage("%tensor_inspect: --train-mode and --no-flops need --input, the sample to trace with")
            rows, totals = parameter_rows(module)
            return InspectResult(
                kind="module", name=expression, module_type=type(module).__name__, parameters=rows, totals=totals
            )
        if isinstance(module, torch.jit.ScriptModule):
            raise _usage(f"%tensor_inspect: `{expression}` is a ScriptModule, which takes no hooks; inspect it before scripting")
        call_args, call_kwargs = _call(_evaluate(" ".join(args.input), ns, "--input"))
        mismatch = forward_mismatch(module, call_args, call_kwargs) or meta_mismatch(module, call_args, call_kwargs)
        if mismatch:
            raise _usage(f"%tensor_inspect: --input does not match: {mismatch}")
        recorder = OpRecorder("<no cell>", ns, record_ops=False)
        with recorder:
            try:
                return trace_module(
                    module,
                    call_args,
                    call_kwargs,
                    name=expression,
                    mode="same" if args.train_mode else "eval",
                    count_flops=not args.no_flops,
                )
            except Exception as exc:
                show_user_frames(self.shell, exc, hide_torch=_explain(recorder, exc))
                raise

    def _cell(self, cell: str, args: Any) -> InspectResult:
        __tracebackhide__ = True
        if args.expression or args.no_views or _module_options(args):
            raise _usage("%%tensor_inspect takes no expression or options; it records the cell below it")
        if not cell.strip():
            raise _usage("%%tensor_inspect: the cell is empty")
        try:
            compiled = compile_cell(self.shell, cell)  # IPython syntax (%magics, !commands) becomes Python on the same lines
        except SyntaxError as exc:
            where = f"line {exc.lineno} of the cell" if exc.lineno else "the cell"
            raise _usage(f"%%tensor_inspect: {where} is not valid Python ({exc.msg})") from None
        recorder = OpRecorder(compiled.filename, self.shell.user_ns)
        result = InspectResult(kind="cell", name="cell", source=cell.splitlines())
        try:
            with recorder:
                exec(compiled.code, self.shell.user_ns)
        except Exception as exc:
            _collect(result, recorder)
            exc.inspect_result = result  # type: ignore[attr-defined]
            explained = _explain(recorder, exc)
            show_user_frames(self.shell, exc, compiled.filename, hide_torch=explained)
            raise
        _collect(result, recorder)
        return result


def _module_options(args: Any) -> list[str]:
    """The options given that only a module takes."""
    given = {"--input": args.input is not None, "--train-mode": args.train_mode, "--no-flops": args.no_flops}
    return [option for option, on in given.items() if on]


def _usage(message: str) -> UsageError:
    """A one-line UsageError: user text (a signature's defaults, an exception) may hold line breaks."""
    return UsageError(" ".join(message.split()))


def _call(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """--input as positional and keyword arguments: a tuple or list spread, a dict as keywords.

    A named tuple (``PackedSequence``) is one argument: modules take it whole."""
    if isinstance(value, dict):
        return (), {str(k): v for k, v in value.items()}
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return tuple(value), {}
    return (value,), {}


def _collect(result: InspectResult, recorder: OpRecorder) -> None:
    result.ops, result.ops_dropped, result.findings = recorder.ops, recorder.dropped, recorder.findings


def _explain(recorder: OpRecorder, exc: BaseException) -> bool:
    """Add the explanation to the exception (PEP 678) and show it above the traceback; False
    where there is none. The traceback then shows the user's frames only: the note says the rest."""
    finding = recorder.finding_for(exc)
    if finding is None:
        return False
    if finding.message not in getattr(exc, "__notes__", ()):
        exc.add_note(finding.message)
    from IPython.display import display

    from torchmagic.display.inspect_view import Explanation

    display(Explanation(finding))
    return True


def _evaluate(expression: str, ns: dict[str, Any], what: str) -> Any:
    __tracebackhide__ = True
    try:
        return eval(expression, ns)  # noqa: S307 - the user's own expression, in the user's namespace
    except NameError as exc:
        raise _usage(f"%tensor_inspect: {what} `{expression}`: {exc}; run the cell that defines it first") from None
    except SyntaxError as exc:
        raise _usage(f"%tensor_inspect: {what} `{expression}` is not a Python expression ({exc.msg})") from None
    except Exception as exc:
        text = str(exc).strip()
        message = f": {text.splitlines()[0]}" if text else ""
        raise _usage(f"%tensor_inspect: evaluating {what} `{expression}` raised {type(exc).__name__}{message}") from None


def _what(obj: Any, expression: str) -> tuple[str, str]:
    """What ``obj`` is, in words, and a hint (starting with "; ") where the fix is known."""
    if obj is None:
        return "None", ""
    if isinstance(obj, type):
        if issubclass(obj, (torch.nn.Module, torch.Tensor)):
            return f"the class {obj.__qualname__}", f"; create an instance first, e.g. {expression}(...)"
        return f"the class {obj.__qualname__}", ""
    kind = type(obj)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(obj, (list, tuple, dict)):
        return f"{article} {name} of {len(obj)} item{'s' if len(obj) != 1 else ''}", _item_hint(obj, expression)
    try:
        shape = getattr(obj, "shape", None)
    except Exception:  # noqa: BLE001 - a property of the user's object may raise anything
        shape = None
    extra = f" of shape {tuple(shape)}" if isinstance(shape, tuple) else ""
    hint = "; convert it with torch.as_tensor(...)" if kind.__module__.startswith("numpy") else ""
    return f"{article} {name}{extra}", hint


def _item_hint(items: list[Any] | tuple[Any, ...] | dict[Any, Any], expression: str) -> str:
    values = list(items.values()) if isinstance(items, dict) else list(items)
    if not any(isinstance(v, (torch.Tensor, torch.nn.Module)) for v in values):
        return ""
    key = repr(next(iter(items))) if isinstance(items, dict) else "0"
    base = expression if expression.isidentifier() else f"({expression})"
    return f"; inspect one item, e.g. %tensor_inspect {base}[{key}]"
