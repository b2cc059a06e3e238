"""Read a profiler's trace once into a ``ProfileResult``: op events, a capped timeline, memory curves.

The trace is read straight from the profiler's kineto events (``kineto_results.events()``):
one pass over a list, about 10x faster than building ``prof.events()`` FunctionEvents, which is
what makes a 50k-event profile show in about a second.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from torchmagic.core.op_origin import OpOrigin, origin_of
from torchmagic.core.profile_result import MemoryCurve, ProfileResult, Timeline, empty_op_events

TIMELINE_EVENTS = 5000

CPU_OP, DEVICE_OP, MEMORY = 0, 1, 2


class TraceRecord(NamedTuple):
    """One kineto event, reduced to what the tables need (built positionally: this is the hot loop)."""

    kind: int  # CPU_OP, DEVICE_OP or MEMORY
    name: str
    thread: int | str  # thread id of a CPU op or memory event; "cuda:0 stream 7" of a device op
    start_ns: int
    dur_ns: int
    correlation: int  # a CPU op's id, which the kernels it launched link back to
    linked_correlation: int  # a device op's launching CPU op
    device: str  # "CPU", "cuda:0"
    shapes: str  # input shapes as text, when recorded
    stack: tuple[str, ...]  # Python frames, innermost first, when recorded
    nbytes: int  # a memory event's allocation (negative for a free)


def read_trace(
    events: Iterable[Any],
    result: ProfileResult,
    *,
    shapes: bool,
    stacks: bool,
    timeline_events: int = TIMELINE_EVENTS,
    user_files: dict[str, str] | None = None,
) -> None:
    """``extract`` then ``analyse``, with the garbage collector paused while the records live.

    A NamedTuple, unlike a plain tuple of atoms, is never untracked by the collector: collections
    while tens of thousands of records are alive move them to the oldest generation and can set off
    a full collection of the kernel's heap (0.27 s in the benchmark's 10k-event first view). Paused,
    the records are freed by reference counting before any collection sees them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        analyse(extract(events, shapes=shapes, stacks=stacks), result, timeline_events=timeline_events, user_files=user_files)
    finally:
        if enabled:
            gc.enable()


def extract(events: Iterable[Any], *, shapes: bool, stacks: bool) -> list[TraceRecord]:
    """Kineto events as records; Python-function events are left out (stacks carry them)."""
    cpu = torch._C._autograd.DeviceType.CPU
    out: list[TraceRecord] = []
    append = out.append
    for e in events:
        is_python = getattr(e, "is_python_function", None)  # newer torch; older ones keep them apart
        if is_python is not None and is_python():
            continue
        name = e.name()
        dev = e.device_type()
        if name == "[memory]":
            device = "CPU" if dev == cpu else f"{str(dev).split('.')[-1].lower()}:{e.device_index()}"
            append(TraceRecord(MEMORY, name, e.start_thread_id(), e.start_ns(), 0, 0, 0, device, "", (), e.nbytes()))
        elif dev == cpu:
            append(
                TraceRecord(
                    CPU_OP,
                    name,
                    e.start_thread_id(),
                    e.start_ns(),
                    e.duration_ns(),
                    e.correlation_id(),
                    0,
                    "CPU",
                    _shape_text(e.shapes()) if shapes else "",
                    tuple(e.stack()) if stacks else (),
                    0,
                )
            )
        else:
            device = f"{str(dev).split('.')[-1].lower()}:{e.device_index()}"
            lane = f"{device} stream {e.device_resource_id()}"
            append(
                TraceRecord(
                    DEVICE_OP,
                    name,
                    lane,
                    e.start_ns(),
                    e.duration_ns(),
                    e.correlation_id(),
                    e.linked_correlation_id(),
                    device,
                    "",
                    (),
                    0,
                )
            )
    return out


def _shape_text(shapes: Sequence[Sequence[int]]) -> str:
    return "[" + ", ".join("[" + ", ".join(map(str, s)) + "]" for s in shapes) + "]"


@dataclass
class _Rows:
    """The op-event columns being filled, and what the timeline and memory curves need besides."""

    ev: dict[str, list[Any]] = field(default_factory=empty_op_events)
    starts: list[int] = field(default_factory=list)  # per row, in trace nanoseconds
    durs: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)  # nesting depth on the row's thread
    by_correlation: dict[int, int] = field(default_factory=dict)  # CPU op's correlation id -> its row
    allocations: dict[str, list[TraceRecord]] = field(default_factory=dict)  # memory events by device


def analyse(
    records: list[TraceRecord],
    result: ProfileResult,
    *,
    timeline_events: int = TIMELINE_EVENTS,
    user_files: dict[str, str] | None = None,
) -> None:
    """Fill ``result`` (op records, timeline, memory curves) from extracted records.

    Ops nest by time on their thread: self time is the op's time minus its direct children's;
    device time and memory are attributed to the innermost op (kernels through the launching
    op's correlation id, allocations by the op open at that moment) and rolled up to parents.
    """
    result.events = len(records)
    if not records:
        return
    origin = min(r.start_ns for r in records)
    # Per thread by start; at one start time the longer op (the parent) first, a memory event after its op.
    host = sorted((r for r in records if r.kind != DEVICE_OP), key=lambda r: (r.thread, r.start_ns, r.kind, -r.dur_ns))
    device_ops = [r for r in records if r.kind == DEVICE_OP]

    rows = _Rows()
    _add_host_ops(rows, host, user_files or {})
    if device_ops:
        _attribute_device(device_ops, rows.by_correlation, rows.ev)
    _roll_up_device(rows.ev, rows.depths, rows.starts, rows.durs, rows.ev["thread"])
    _add_device_ops(rows, device_ops)
    result.op_events = rows.ev
    result.devices = sorted({r.device for r in records})
    result.timeline = _timeline(rows.ev, rows.starts, rows.durs, rows.depths, origin, timeline_events)
    result.memory = [_memory_curve(dev, events, origin) for dev, events in sorted(rows.allocations.items())]


def _add_host_ops(rows: _Rows, host: list[TraceRecord], user_files: dict[str, str]) -> None:
    """One row per CPU op, nested by time on its thread; memory events go to the op open then."""
    ev = rows.ev
    names, threads, self_us, total_us = ev["name"], ev["thread"], ev["self_us"], ev["total_us"]
    self_dev, total_dev = ev["self_device_us"], ev["total_device_us"]
    self_mem, total_mem, self_dmem = ev["self_mem"], ev["total_mem"], ev["self_device_mem"]
    shapes, modules, sources = ev["shapes"], ev["module"], ev["source"]
    starts, durs, depths, by_correlation, allocations = rows.starts, rows.durs, rows.depths, rows.by_correlation, rows.allocations
    origin_by_stack: dict[tuple[str, ...], OpOrigin] = {}  # thousands of ops share a handful of stacks
    open_rows: list[int] = []
    open_ends: list[int] = []
    thread: int | str | None = None

    def close_until(t: int | None) -> None:
        while open_rows and (t is None or t >= open_ends[-1]):
            i = open_rows.pop()
            open_ends.pop()
            if open_rows:
                total_mem[open_rows[-1]] += total_mem[i]

    for r in host:
        start = r.start_ns
        if r.thread != thread:
            close_until(None)
            thread = r.thread
        close_until(start)
        if r.kind == MEMORY:
            allocations.setdefault(r.device, []).append(r)
            if open_rows:
                i = open_rows[-1]
                if r.device == "CPU":
                    self_mem[i] += r.nbytes
                    total_mem[i] += r.nbytes
                else:
                    self_dmem[i] += r.nbytes
            continue
        dur = r.dur_ns
        i = len(names)
        names.append(r.name)
        threads.append(f"thread {thread}")
        self_us.append(dur / 1000.0)
        total_us.append(dur / 1000.0)
        self_dev.append(0.0)
        total_dev.append(0.0)
        self_mem.append(0)
        total_mem.append(0)
        self_dmem.append(0)
        shapes.append(r.shapes)
        origin = origin_by_stack.get(r.stack)
        if origin is None:
            origin = origin_by_stack[r.stack] = origin_of(r.stack, user_files)
        modules.append(origin.module)
        sources.append(origin.source)
        starts.append(start)
        durs.append(dur)
        depths.append(len(open_rows))
        if r.correlation:
            by_correlation[r.correlation] = i
        if open_rows:
            self_us[open_rows[-1]] -= dur / 1000.0
        open_rows.append(i)
        open_ends.append(start + dur)
    close_until(None)


def _add_device_ops(rows: _Rows, device_ops: list[TraceRecord]) -> None:
    """Kernels and copies as rows of their own (device time only), on their stream's lane."""
    ev = rows.ev
    for r in device_ops:
        ev["name"].append(r.name)
        ev["thread"].append(r.thread)
        ev["self_us"].append(0.0)
        ev["total_us"].append(0.0)
        ev["self_device_us"].append(r.dur_ns / 1000.0)
        ev["total_device_us"].append(r.dur_ns / 1000.0)
        ev["self_mem"].append(0)
        ev["total_mem"].append(0)
        ev["self_device_mem"].append(0)
        ev["shapes"].append("")
        ev["module"].append("")
        ev["source"].append("")
        rows.starts.append(r.start_ns)
        rows.durs.append(r.dur_ns)
        rows.depths.append(0)


def _attribute_device(device_ops: list[TraceRecord], by_correlation: dict[int, int], ev: dict[str, list[Any]]) -> None:
    for r in device_ops:
        i = by_correlation.get(r.linked_correlation)
        if i is not None:
            ev["self_device_us"][i] += r.dur_ns / 1000.0


def _roll_up_device(ev: dict[str, list[Any]], depths: list[int], starts: list[int], durs: list[int], threads: list[str]) -> None:
    """Totals of device time: own kernels plus every descendant's (parents come before children)."""
    total = ev["total_device_us"]
    own = ev["self_device_us"]
    if not any(own):
        return
    for i in range(len(total)):
        total[i] = own[i]
    open_: list[int] = []
    order = range(len(total))
    parent = [-1] * len(total)
    for i in order:
        while open_ and (threads[open_[-1]] != threads[i] or starts[i] >= starts[open_[-1]] + durs[open_[-1]]):
            open_.pop()
        parent[i] = open_[-1] if open_ else -1
        open_.append(i)
    for i in reversed(order):
        if parent[i] >= 0:
            total[parent[i]] += total[i]


def _timeline(ev: dict[str, list[Any]], starts: list[int], durs: list[int], depths: list[int], origin: int, cap: int) -> Timeline:
    n = len(starts)
    dur = np.asarray(durs, dtype=np.float64)
    if n > cap > 0:
        keep = np.argpartition(-dur, cap - 1)[:cap]
    elif cap <= 0:
        keep = np.zeros(0, dtype=np.int64)
    else:
        keep = np.arange(n)
    keep = np.sort(keep)
    lanes: list[str] = []
    lane_index: dict[str, int] = {}
    lane = np.empty(len(keep), dtype=np.int32)
    threads = ev["thread"]
    for j, i in enumerate(keep.tolist()):
        label = threads[i]
        k = lane_index.get(label)
        if k is None:
            k = lane_index[label] = len(lanes)
            lanes.append(label)
        lane[j] = k
    # subtract in integers: epoch nanoseconds lose ~0.25 us in float64
    start = (np.asarray(starts, dtype=np.int64)[keep] - origin).astype(np.float64) / 1000.0 if n else np.zeros(0)
    span = max((s + d for s, d in zip(starts, durs)), default=origin) - origin
    return Timeline(
        lanes=lanes,
        start_us=start,
        dur_us=dur[keep] / 1000.0 if n else np.zeros(0),
        lane=lane,
        depth=np.asarray(depths, dtype=np.int32)[keep] if n else np.zeros(0, np.int32),
        names=[ev["name"][i] for i in keep.tolist()],
        total=n,
        span_us=span / 1000.0,
    )


def _memory_curve(device: str, events: list[TraceRecord], origin: int) -> MemoryCurve:
    # by time; at one instant frees before allocations, so a peak is not overstated
    events.sort(key=lambda r: (r.start_ns, r.nbytes))
    t = (np.fromiter((r.start_ns for r in events), dtype=np.int64, count=len(events)) - origin).astype(np.float64) / 1000.0
    allocated = np.cumsum(np.fromiter((r.nbytes for r in events), dtype=np.int64, count=len(events)))
    return MemoryCurve(device=device, t_us=t, allocated=allocated)
