"""A run's per-step history in compact typed columns.

Every column is an ``array`` of 8-byte values, so a row costs the same few bytes on step 10 and on
step 10 million, and appending a refresh's rows is a handful of C-level ``extend`` calls. A value
a row does not have (``None``) is marked in a byte mask that a column makes only once the first
one appears; NaN stays a value. The pandas DataFrame is built only when someone asks for it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Value = float | int | None
_CHUNK = 1 << 16  # rows converted at a time when a whole column is iterated


class Column(Sequence[Value]):
    """One growing column: floats (``"d"``) or integers (``"q"``), ``None`` where a row has none."""

    __slots__ = ("_values", "_missing", "_last")

    def __init__(self, typecode: str = "d", missing: int = 0) -> None:
        self._values: array[Any] = array(typecode, bytes(8 * missing))
        self._missing: bytearray | None = bytearray(b"\x01" * missing) if missing else None
        self._last = -1  # index of the last row that has a value

    # ------------------------------------------------------------------ growing
    def append(self, value: Value) -> None:
        self.extend([value])

    def extend(self, values: list[Value]) -> None:
        start = len(self._values)
        if None not in values:
            self._values.extend(values)
            if self._missing is not None:
                self._missing.extend(bytes(len(values)))
            if values:
                self._last = start + len(values) - 1
            return
        if values.count(None) == len(values):  # a column these rows do not have (most refreshes' grad_norm)
            self._values.frombytes(bytes(8 * len(values)))
            flags = b"\x01" * len(values)
        else:
            flags = bytes([v is None for v in values])
            self._values.extend([0 if v is None else v for v in values])
        if self._missing is None:
            self._missing = bytearray(start)
        self._missing.extend(flags)
        present = flags.rfind(b"\x00")
        if present >= 0:
            self._last = start + present

    def extend_missing(self, count: int) -> None:
        if count > 0:
            self.extend([None] * count)

    def set(self, row: int, value: Value) -> None:
        """Fill in (or clear) the value of an existing row."""
        if value is None:
            if self._missing is None:
                self._missing = bytearray(len(self._values))
            self._missing[row] = 1
            return
        self._values[row] = value
        if self._missing is not None:
            self._missing[row] = 0
        self._last = max(self._last, row)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> Value: ...
    @overload
    def __getitem__(self, index: slice) -> list[Value]: ...
    def __getitem__(self, index: int | slice) -> Value | list[Value]:
        if isinstance(index, slice):
            values: list[Value] = self._values[index].tolist()
            if self._missing is None:
                return values
            flags = self._missing[index]
            if 1 not in flags:
                return values
            return [None if f else v for v, f in zip(values, flags)]
        value: Value = self._values[index]  # raises IndexError as a list would
        if self._missing is not None and self._missing[index]:
            return None
        return value

    def __iter__(self) -> Iterator[Value]:
        for start in range(0, len(self._values), _CHUNK):
            yield from self[start : start + _CHUNK]

    def __reversed__(self) -> Iterator[Value]:
        # Readers mostly want the last value that is not None: start with a small chunk, grow it.
        stop, chunk = len(self._values), 16
        while stop > 0:
            yield from reversed(self[max(0, stop - chunk) : stop])
            stop, chunk = stop - chunk, min(chunk * 4, _CHUNK)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Column, list, tuple)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self[:5])
        return f"Column([{head}{', …' if len(self) > 5 else ''}], rows={len(self)})"

    @property
    def last(self) -> Value:
        """The value of the last row that has one (None if none has): O(1)."""
        return self[self._last] if self._last >= 0 else None

    @property
    def nbytes(self) -> int:
        """Bytes held for the rows (the arrays' spare capacity not counted)."""
        return len(self._values) * self._values.itemsize + (len(self._missing) if self._missing is not None else 0)

    def to_numpy(self) -> np.ndarray:
        """A copy: integers stay int64 unless a row is missing; missing rows become NaN."""
        out = np.array(self._values, dtype=np.int64 if self._values.typecode == "q" else np.float64)
        if self._missing is not None and 1 in self._missing:
            out = out.astype(np.float64)
            out[np.frombuffer(bytes(self._missing), dtype=np.uint8).astype(bool)] = np.nan
        return out


class History(Mapping[str, Column]):
    """Named columns of equal length: one row per step (or per memory sample)."""

    def __init__(self, integer_columns: Iterable[str] = ("step",)) -> None:
        self._columns: dict[str, Column] = {}
        self._integers = frozenset(integer_columns)
        self.rows = 0

    def __getitem__(self, name: str) -> Column:
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return f"History({list(self._columns)}, rows={self.rows})"

    def _column(self, name: str) -> Column:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = Column("q" if name in self._integers else "d", missing=self.rows)
        return column

    def append_rows(self, columns: Mapping[str, list[Value]], count: int) -> None:
        """``count`` new rows; every list given holds ``count`` values, other columns get None."""
        for name, values in columns.items():
            self._column(name).extend(values)
        for name, column in self._columns.items():
            if name not in columns:
                column.extend_missing(count)
        self.rows += count

    def append_row(self, row: Mapping[str, Value]) -> None:
        self.append_rows({name: [value] for name, value in row.items()}, 1)

    def set(self, name: str, row: int, value: Value) -> None:
        """The value of column ``name`` (made if new) in an existing row."""
        if 0 <= row < self.rows:
            self._column(name).set(row, value)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._columns.values())

    def to_frame(self, index: str | None = None, empty: Sequence[str] = ()) -> pd.DataFrame:
        import pandas as pd

        if not self._columns:
            return pd.DataFrame(columns=list(empty))
        frame = pd.DataFrame({name: column.to_numpy() for name, column in self._columns.items()})
        return frame.set_index(index, drop=False) if index is not None else frame

    def snapshot(self) -> dict[str, list[Any]]:
        """Plain lists of every column (for tests and small runs)."""
        return {name: list(column) for name, column in self._columns.items()}
