"""One way for every magic to run its cell: as IPython runs the same cell without the magic.

The cell goes through ``shell.transform_cell`` (``!cmd``, ``%magic``, ``x?`` become calls), is
cached under the running cell's own name (tracebacks say ``In[7]``, not ``In[0]``), compiled with
the notebook's ``__future__`` flags and run in the notebook's namespace. Nothing is saved and put
back around it: warnings filters, ``sys.stdout`` and anything else the cell changes stay changed.

A failing cell's traceback starts at the cell's own frame and leaves out torchmagic's frames (and,
for an explained shape error, torch's): ``_render_traceback_`` is the hook IPython's
``showtraceback`` asks for the lines to show; ``%debug`` and ``%tb`` still see every frame.
"""

from __future__ import annotations

import ast
import os
import sys
import types
from dataclasses import dataclass
from typing import Any

import IPython
import torch
from IPython.display import display

import torchmagic

TORCHMAGIC_DIR = os.path.dirname(os.path.abspath(torchmagic.__file__)) + os.sep
IPYTHON_DIR = os.path.dirname(os.path.abspath(IPython.__file__)) + os.sep
TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


@dataclass(frozen=True)
class Cell:
    """A magic's cell, ready to run."""

    raw: str  # as typed
    source: str  # after transform_cell: plain Python
    filename: str  # the name tracebacks and linecache know it by
    code: types.CodeType  # the whole cell
    # The cell split as IPython runs it: all but a final expression, and that expression, whose value
    # is shown (not with a trailing ";"); None when the cell does not end with one.
    last_expression: tuple[types.CodeType, types.CodeType] | None = None


def compile_cell(shell: Any, raw: str) -> Cell:
    """The cell as Python; a syntax error propagates as itself, pointing into the cell."""
    __tracebackhide__ = True
    source = str(shell.transform_cell(raw))
    filename = shell.compile.cache(source, running_cell_number(shell), raw_code=raw)
    flags = getattr(shell.compile, "flags", 0)  # `from __future__ import ...` run in an earlier cell
    code = compile(source, filename, "exec", flags, dont_inherit=True)
    return Cell(raw, source, filename, code, _split_last_expression(source, filename, flags))


def _split_last_expression(source: str, filename: str, flags: int) -> tuple[types.CodeType, types.CodeType] | None:
    tree = compile(source, filename, "exec", flags | ast.PyCF_ONLY_AST, dont_inherit=True)
    if not tree.body or not isinstance(tree.body[-1], ast.Expr) or source.rstrip().endswith(";"):
        return None
    body = compile(ast.Module(tree.body[:-1], type_ignores=[]), filename, "exec", flags, dont_inherit=True)
    last = compile(ast.Expression(tree.body[-1].value), filename, "eval", flags, dont_inherit=True)
    return body, last


def run_cell(shell: Any, cell: Cell) -> None:
    """Run the cell in the notebook's namespace; an exception shows the cell's frames, not ours."""
    __tracebackhide__ = True
    try:
        if cell.last_expression is None:
            exec(cell.code, shell.user_ns)
        else:
            body, last = cell.last_expression
            exec(body, shell.user_ns)
            value = eval(last, shell.user_ns)
            if value is not None:  # shown as the cell's value would be (the magic's own result is Out[n])
                display(value)  # type: ignore[no-untyped-call]
    except Exception as exc:
        show_user_frames(shell, exc, cell.filename)
        raise


def running_cell_number(shell: Any) -> int:
    """The ``In[n]`` of the cell being run: the outermost frame that runs code IPython cached."""
    numbers = getattr(shell.compile, "_filename_map", {})
    number = None
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        number = numbers.get(frame.f_code.co_filename, number)
        frame = frame.f_back
    return int(number) if number is not None else int(shell.execution_count)


def show_user_frames(shell: Any, exc: BaseException, start: str | None = None, hide_torch: bool = False) -> None:
    """Have IPython show ``exc`` from the frame that runs ``start`` (a cell's filename) on, without
    torchmagic's and IPython's frames (nor torch's with ``hide_torch``)."""
    if hasattr(exc, "_render_traceback_"):
        return  # the exception renders itself
    hidden = (TORCHMAGIC_DIR, IPYTHON_DIR, TORCH_DIR) if hide_torch else (TORCHMAGIC_DIR, IPYTHON_DIR)

    def render() -> list[str]:
        tb = user_traceback(exc.__traceback__, start, hidden)
        if tb is None:
            return list(shell.InteractiveTB.get_exception_only(type(exc), exc))
        return list(shell.InteractiveTB.structured_traceback(type(exc), exc, tb))

    try:
        exc._render_traceback_ = render  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__: IPython shows every frame
        pass


def show_one_line(exc: BaseException, line: str) -> None:
    """Have IPython show ``exc`` as ``line``, no traceback (the cell still ends in error)."""
    try:
        exc._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    except AttributeError:
        pass


def user_traceback(tb: types.TracebackType | None, start: str | None, hidden: tuple[str, ...]) -> types.TracebackType | None:
    """A new chain of ``tb``'s frames: from the first one running ``start`` (all when none does),
    leaving out those in files under ``hidden``. The exception's own chain is left as it is."""
    frames: list[types.TracebackType] = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    names = [t.tb_frame.f_code.co_filename for t in frames]
    if start is not None and start in names:
        frames = frames[names.index(start) :]
    kept = [t for t in frames if not _real_path(t.tb_frame.f_code.co_filename).startswith(hidden)]
    chain: types.TracebackType | None = None
    for t in reversed(kept):
        chain = types.TracebackType(chain, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return chain


def _real_path(filename: str) -> str:
    """A module's file as an absolute path; a cell's ``<ipython-input-…>`` name as it is."""
    return filename if filename.startswith("<") else os.path.abspath(filename)
