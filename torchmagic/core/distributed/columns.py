"""Reading and writing a :class:`RunResult`'s columns through the few operations this package needs.

``RunResult.columns`` and ``.memory`` are name → column mappings whose columns slice and index
like lists; depending on the version they are plain lists or typed columns with
``append_rows``/``set``. These helpers keep the rest of the package to that common shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchmagic.core.result import RunResult

Plain = dict[str, list[Any]]


def row_count(cols: Mapping[str, Sequence[Any]], key: str = "step") -> int:
    return len(cols.get(key, ()))


def plain(cols: Mapping[str, Sequence[Any]]) -> Plain:
    """Every column as a list (for JSON, and for views the kernel extends)."""
    return {str(name): list(values) for name, values in cols.items()}


def build(rows: Plain, integer: Sequence[str] = ("step",), *, memory: bool = False) -> Any:
    """Columns of the kind ``RunResult`` holds, filled with ``rows`` (equal-length lists)."""
    empty: Any = RunResult().memory if memory else RunResult().columns
    if isinstance(empty, dict):
        return {name: list(values) for name, values in rows.items()}
    cols = type(empty)(integer_columns=tuple(integer))
    cols.append_rows(rows, len(next(iter(rows.values()), [])))
    return cols


def append_row(cols: Any, row: Mapping[str, Any], key: str = "step") -> None:
    """One row; columns the row lacks get None, a new column gets None for the earlier rows."""
    if hasattr(cols, "append_row"):
        cols.append_row(row)
        return
    n = row_count(cols, key)
    for name, value in row.items():
        cols.setdefault(name, [None] * n).append(value)
    for column in cols.values():
        column.extend([None] * (n + 1 - len(column)))


def set_value(cols: Any, name: str, row: int, value: Any, key: str = "step") -> None:
    """The value of ``name`` (a new column if need be) in an existing row."""
    if hasattr(cols, "append_rows"):
        cols.set(name, row, value)
        return
    column = cols.setdefault(name, [None] * row_count(cols, key))
    column.extend([None] * (row_count(cols, key) - len(column)))
    column[row] = value
