"""Where an op came from, read off the Python stack torch recorded for it (innermost frame first).

``with_modules`` puts "nn.Module: <name>" frames on the stack; that is where eager modules' names
live. The source line is the innermost frame of the profiled code itself (the cell or statement,
found by its file name), else the innermost frame that is not library code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

MODULE_FRAME = "nn.Module: "
# Frames of library code: a source-line grouping points at the first frame outside them.
LIBRARY_PREFIXES = ("torch/", "torchmagic/", "IPython/", "ipykernel/", "<built-in", "<frozen", MODULE_FRAME)


class OpOrigin(NamedTuple):
    """An op's module and source line, as the grouped tables name them."""

    module: str  # "" when no module was recorded
    source: str  # "" when no stack was recorded


def origin_of(stack: Sequence[str], user_files: dict[str, str]) -> OpOrigin:
    return OpOrigin(module_of(stack), source_of(stack, user_files))


def module_of(stack: Sequence[str]) -> str:
    """The innermost module on the stack ("" when none was recorded)."""
    for frame in stack:
        if frame.startswith(MODULE_FRAME):
            return frame[len(MODULE_FRAME) :]
    return ""


def source_of(stack: Sequence[str], user_files: dict[str, str]) -> str:
    """The innermost frame of the profiled code, else the innermost frame outside libraries.

    ``user_files`` maps the profiled code's file names to labels ("cell"), so its frames read as
    "cell:3 forward()" or "cell (top level)".
    """
    if not stack:
        return ""
    for frame in stack:
        for file, label in user_files.items():
            if frame.startswith(file + "("):
                line, _, func = frame[len(file) + 1 :].partition("): ")
                # torch's Python tracer records a frame's first line, not the running line: a
                # function is named by its ``def`` line, top-level code by the cell alone.
                return f"{label} (top level)" if func == "<module>" else f"{label}:{line} {func}()"
    for frame in stack:
        if not frame.startswith(LIBRARY_PREFIXES) and "site-packages/" not in frame and "/lib/python" not in frame:
            return frame
    return ""
