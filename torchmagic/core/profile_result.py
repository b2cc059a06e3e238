"""What a profile found: per-op records, a capped timeline, memory curves, and where the files went.

The op records are kept one per event so the same profile can be regrouped (by op, by input
shapes, by module, by source line) without touching the trace again. ``table`` and ``group``
build pandas DataFrames on demand; pandas is imported only there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GROUPS = ("op", "shape", "module", "line")
NO_MODULE = "(no module)"
NO_SOURCE = "(no source line)"

# Per-event columns of ``ProfileResult.op_events`` (one entry per op, annotation or device event).
OP_COLUMNS = (
    "name",
    "thread",
    "self_us",
    "total_us",
    "self_device_us",
    "total_device_us",
    "self_mem",
    "total_mem",
    "self_device_mem",
    "shapes",
    "module",
    "source",
)


def empty_op_events() -> dict[str, list[Any]]:
    return {c: [] for c in OP_COLUMNS}


@dataclass
class Timeline:
    """The longest ``shown`` of ``total`` events, times in microseconds from the trace start."""

    lanes: list[str] = field(default_factory=list)
    start_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    dur_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    lane: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    depth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    names: list[str] = field(default_factory=list)
    total: int = 0
    span_us: float = 0.0

    @property
    def shown(self) -> int:
        return len(self.names)


@dataclass
class MemoryCurve:
    """Bytes allocated since the profile started, on one device, after each allocation event."""

    device: str
    t_us: np.ndarray
    allocated: np.ndarray

    @property
    def peak(self) -> int:
        return int(self.allocated.max()) if len(self.allocated) else 0


@dataclass(slots=True)
class _GroupSums:
    """One row of a grouped table: an op name, the shapes / module / source line it is grouped by, and sums."""

    name: str
    label: str
    calls: int = 0
    self_us: float = 0.0
    total_us: float = 0.0
    self_device_us: float = 0.0
    total_device_us: float = 0.0
    self_mem: int = 0
    total_mem: int = 0
    self_device_mem: int = 0


@dataclass
class ProfileResult:
    """The result of ``%profile`` / ``%%profile`` (also ``torchmagic.last_profile()``).

    ``table``: one row per op (``name``, ``calls``, ``self_cpu_time_us``, ``cpu_time_total_us``,
    device times, and shapes / memory when recorded); ``group(by)`` regroups by ``"op"``,
    ``"shape"``, ``"module"`` or ``"line"``. ``trace_path``: the Chrome/Perfetto trace JSON.
    ``logdir``: the TensorBoard log directory written to (None without ``--logdir``).
    """

    status: str = "completed"  # completed | failed | interrupted | empty
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0  # time the profiled code ran
    analysis_s: float = 0.0  # time spent turning the trace into this result
    steps_seen: int = 0  # optimizer steps the code made
    steps_profiled: int = 0  # of them, inside the schedule's active window
    events: int = 0  # trace events read (ops, annotations, device events, memory events)
    devices: list[str] = field(default_factory=list)
    op_events: dict[str, list[Any]] = field(default_factory=empty_op_events)
    timeline: Timeline = field(default_factory=Timeline)
    memory: list[MemoryCurve] = field(default_factory=list)
    trace_path: str | None = None  # only ever a file that was written
    trace_error: str | None = None  # why the trace could not be written, if it could not
    logdir: str | None = None
    run_dir: str | None = None
    tensorboard_url: str | None = None

    @property
    def op_count(self) -> int:
        return len(self.op_events["name"])

    @property
    def recorded_shapes(self) -> bool:
        return bool(self.options.get("record_shapes"))

    @property
    def recorded_memory(self) -> bool:
        return bool(self.options.get("profile_memory"))

    @property
    def recorded_stacks(self) -> bool:
        return bool(self.options.get("with_stack") or self.options.get("with_modules"))

    @property
    def table(self) -> Any:
        """One row per op, most self CPU time first (a pandas DataFrame)."""
        return self.group("op")

    def rows(self, by: str = "op") -> list[dict[str, Any]]:
        """The grouped rows as plain dicts, most self CPU time first (no pandas needed)."""
        if by not in GROUPS:
            raise ValueError(f"group by one of {', '.join(GROUPS)}, not {by!r}")
        groups = self._sums(by)
        shapes_seen: dict[str, Counter[str]] = {}
        common_shapes = by == "op" and self.recorded_shapes  # an op's row names its most common input shapes
        if common_shapes:
            for name, shapes in zip(self.op_events["name"], self.op_events["shapes"]):
                shapes_seen.setdefault(name, Counter())[shapes] += 1
        rows = []
        for g in groups:
            row: dict[str, Any] = {}
            if by == "module":
                row["module"] = g.label
            elif by == "line":
                row["source"] = g.label
            row["name"] = g.name
            row.update(
                calls=g.calls,
                self_cpu_time_us=round(g.self_us, 3),
                cpu_time_total_us=round(g.total_us, 3),
                self_device_time_us=round(g.self_device_us, 3),
                device_time_total_us=round(g.total_device_us, 3),
            )
            if by == "shape":
                row["input_shapes"] = g.label
            elif common_shapes:
                common = shapes_seen[g.name].most_common()
                top, _ = common[0]
                row["input_shapes"] = top + (f" (+{len(common) - 1} more)" if len(common) > 1 else "")
            if self.recorded_memory:
                row.update(
                    self_cpu_memory_bytes=g.self_mem, cpu_memory_bytes=g.total_mem, self_device_memory_bytes=g.self_device_mem
                )
            rows.append(row)
        rows.sort(key=lambda r: (-r["self_cpu_time_us"], -r["self_device_time_us"], r["name"]))
        return rows

    def _sums(self, by: str) -> list[_GroupSums]:
        """The op events summed per group, in order of first appearance."""
        ev = self.op_events
        label_of = {"op": None, "shape": ev["shapes"], "module": ev["module"], "line": ev["source"]}[by]
        missing = NO_MODULE if by == "module" else NO_SOURCE if by == "line" else ""
        self_us, total_us, self_dev, total_dev = ev["self_us"], ev["total_us"], ev["self_device_us"], ev["total_device_us"]
        self_mem, total_mem, self_dmem = ev["self_mem"], ev["total_mem"], ev["self_device_mem"]
        keyed: dict[tuple[str, str], _GroupSums] = {}
        for i, name in enumerate(ev["name"]):
            label = "" if label_of is None else label_of[i] or missing
            g = keyed.get((label, name))
            if g is None:
                g = keyed[(label, name)] = _GroupSums(name, label)
            g.calls += 1
            g.self_us += self_us[i]
            g.total_us += total_us[i]
            g.self_device_us += self_dev[i]
            g.total_device_us += total_dev[i]
            g.self_mem += self_mem[i]
            g.total_mem += total_mem[i]
            g.self_device_mem += self_dmem[i]
        return list(keyed.values())

    def group(self, by: str = "op") -> Any:
        """The op table grouped ``by`` "op", "shape" (op + input shapes), "module" or "line"."""
        import pandas as pd

        rows = self.rows(by)
        columns = list(rows[0]) if rows else ["name", "calls", "self_cpu_time_us", "cpu_time_total_us"]
        return pd.DataFrame(rows, columns=columns)

    @property
    def self_cpu_time_us(self) -> float:
        return float(sum(self.op_events["self_us"]))

    def __repr__(self) -> str:
        where = f", trace_path={self.trace_path!r}" if self.trace_path else ""
        return (
            f"ProfileResult(status={self.status!r}, ops={self.op_count}, events={self.events}, wall_s={self.wall_s:.3f}{where})"
        )


_last: ProfileResult | None = None


def set_last_profile(result: ProfileResult) -> None:
    global _last
    _last = result


def last_profile() -> ProfileResult | None:
    """The result of the most recent ``%profile`` / ``%%profile`` (None before any)."""
    return _last
