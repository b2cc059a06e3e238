"""Run ``torch.profiler`` around code or around N optimizer steps, and read the trace once.

``ProfileSession`` is a context manager: CPU activity always, CUDA activity when CUDA is
available (synchronised at start, at each step and at the end so device times are complete).
With ``steps`` it follows a ``torch.profiler.schedule`` stepped by a global optimizer step
post-hook, so an unchanged training loop is profiled over its steps. Whatever way the code
ends (completed, exception, Ctrl-C) the profiler is stopped, the hook removed, and a
``ProfileResult`` built from what was collected.

The trace is read straight from the profiler's kineto events (``kineto_results.events()``):
one pass over a list, about 10x faster than building ``prof.events()`` FunctionEvents, which is
what makes a 50k-event profile show in about a second.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from torchmagic.core import tbexport
from torchmagic.core.attachments import Attachments
from torchmagic.core.profile_result import MemoryCurve, ProfileResult, Timeline, empty_op_events, set_last_profile

TIMELINE_EVENTS = 5000

CPU_OP, DEVICE_OP, MEMORY = 0, 1, 2
# Frames of library code: a source-line grouping points at the first frame outside them.
LIBRARY_PREFIXES = ("torch/", "torchmagic/", "IPython/", "ipykernel/", "<built-in", "<frozen", "nn.Module: ")


class ProfilerBusy(RuntimeError):
    """Another torch profiler is already running in this process."""


class ProfileSession:
    """Profile the code run inside ``with``; ``result`` holds the ``ProfileResult`` afterwards.

    Keyword-only options follow ``torch.profiler.profile``: ``record_shapes``,
    ``profile_memory``, ``with_stack``, ``with_modules`` (which also records Python stacks:
    for eager modules that is where the module names live). ``steps`` (with ``wait`` and
    ``warmup``) profiles that many optimizer steps. ``trace_path`` or ``logdir`` choose where
    the Chrome trace goes (a temporary file by default); ``timeline_events`` caps the events
    kept for the timeline (the longest are kept); ``user_files`` maps file names of the profiled
    code to labels ("cell") so its frames read as "cell:3 <module>" in the source-line grouping.
    """

    def __init__(
        self,
        *,
        steps: int | None = None,
        wait: int = 0,
        warmup: int = 0,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        with_modules: bool = False,
        trace_path: str | None = None,
        logdir: str | None = None,
        run_name: str | None = None,
        timeline_events: int = TIMELINE_EVENTS,
        user_files: dict[str, str] | None = None,
    ) -> None:
        if steps is not None and steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if wait < 0 or warmup < 0:
            raise ValueError("wait and warmup must be 0 or more")
        self.steps, self.wait, self.warmup = steps, wait, warmup
        self.options = dict(
            record_shapes=record_shapes,
            profile_memory=profile_memory,
            with_stack=with_stack,
            with_modules=with_modules,
            steps=steps,
            wait=wait,
            warmup=warmup,
        )
        self.trace_path, self.logdir, self.run_name = trace_path, logdir, run_name
        self.timeline_events = timeline_events
        self.user_files = dict(user_files or {})
        self.steps_seen = 0
        self.collected = False
        self.result: ProfileResult | None = None
        self._prof: Any = None
        self._attachments = Attachments()
        self._t0 = 0.0
        self._cuda = False

    # ------------------------------------------------------------------ run
    def __enter__(self) -> ProfileSession:
        if torch.autograd.profiler._is_profiler_enabled:
            raise ProfilerBusy("another torch profiler is already running; stop it first")
        from torch.profiler import ProfilerActivity, profile, schedule

        self._cuda = torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self._cuda else [])
        stacks = bool(self.options["with_stack"] or self.options["with_modules"])
        plan = None
        if self.steps:
            with warnings.catch_warnings():  # "won't be using warmup": --warmup 0 is the user's choice
                warnings.simplefilter("ignore", UserWarning)
                plan = schedule(wait=self.wait, warmup=self.warmup, active=self.steps, repeat=1)
        self._prof = profile(
            activities=activities,
            schedule=plan,
            on_trace_ready=self._on_trace_ready,
            record_shapes=bool(self.options["record_shapes"]),
            profile_memory=bool(self.options["profile_memory"]),
            with_stack=stacks,
            with_modules=bool(self.options["with_modules"]),
            # Without the verbose config torch 2.x records Python frames but attaches no stack
            # to ops (neither in the trace nor in FunctionEvents).
            experimental_config=torch._C._profiler._ExperimentalConfig(verbose=True) if stacks else None,
        )
        if self.steps:
            from torch.optim.optimizer import register_optimizer_step_post_hook

            self._attachments.hook(register_optimizer_step_post_hook(self._on_step))
        self._sync()
        try:
            self._prof.start()
        except BaseException:
            self._attachments.detach()
            raise
        self._t0 = time.perf_counter()
        return self

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps_seen += 1
        if self.steps and self.steps_seen <= self.wait + self.warmup + self.steps:
            self._sync()
            self._prof.step()

    def _on_trace_ready(self, prof: Any) -> None:
        self.collected = True

    def _sync(self) -> None:
        if self._cuda and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        wall = time.perf_counter() - self._t0
        try:
            try:
                self._sync()
            except Exception:  # noqa: BLE001 - a failed device must not keep the profiler running
                pass
            try:
                self._prof.stop()
            except Exception:  # noqa: BLE001
                pass
        finally:
            self._attachments.detach()
            _force_profiler_off()
        status = "completed"
        if exc_type is not None:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        self.result = self._collect(status, wall, None if exc is None else f"{type(exc).__name__}: {exc}")
        set_last_profile(self.result)
        return False

    # ------------------------------------------------------------------ collect
    def _collect(self, status: str, wall: float, error: str | None) -> ProfileResult:
        t = time.perf_counter()
        kineto = getattr(getattr(self._prof, "profiler", None), "kineto_results", None)
        result = ProfileResult(status=status, error=error, options=dict(self.options), wall_s=wall)
        result.steps_seen = self.steps_seen
        if self.steps:
            result.steps_profiled = max(0, min(self.steps_seen - self.wait - self.warmup, self.steps))
        if kineto is None:
            result.status = status if status != "completed" else "empty"
            result.analysis_s = time.perf_counter() - t
            return result
        records = extract(kineto.events(), shapes=bool(self.options["record_shapes"]), stacks=_stacks(self.options))
        analyse(records, result, timeline_events=self.timeline_events, user_files=self.user_files)
        self._export(result)
        result.analysis_s = time.perf_counter() - t
        return result

    def _export(self, result: ProfileResult) -> None:
        """Write the Chrome trace once: into the TensorBoard run when there is a logdir."""
        if self.logdir is not None:
            run_dir, path = tbexport.write_run(self._prof.export_chrome_trace, self.logdir, self.run_name)
            result.logdir, result.run_dir, result.trace_path = os.path.abspath(self.logdir), run_dir, path
            if self.trace_path:
                import shutil

                shutil.copyfile(path, self.trace_path)
                result.trace_path = os.path.abspath(self.trace_path)
            return
        path = self.trace_path or default_trace_path()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._prof.export_chrome_trace(path)
        result.trace_path = os.path.abspath(path)


def _stacks(options: dict[str, Any]) -> bool:
    return bool(options.get("with_stack") or options.get("with_modules"))


def _force_profiler_off() -> None:
    """Belt and braces: a profiler stopped half-way (Ctrl-C inside stop) must not stay on."""
    if torch.autograd.profiler._is_profiler_enabled:
        try:
            torch.autograd.profiler._disable_profiler()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
        torch.autograd.profiler._is_profiler_enabled = False


def default_trace_path() -> str:
    folder = os.path.join(tempfile.gettempdir(), f"torchmagic-{os.getuid() if hasattr(os, 'getuid') else 'user'}-profiles")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(folder, f"profile-{stamp}-{os.getpid()}-{time.monotonic_ns() % 10**6}.pt.trace.json")


# ---------------------------------------------------------------------- trace analysis
Record = tuple  # (kind, name, thread, start_ns, dur_ns, correlation, linked_correlation, device, shapes, stack, nbytes)


def extract(events: Iterable[Any], *, shapes: bool, stacks: bool) -> list[Record]:
    """Kineto events as plain tuples; Python-function events are left out (stacks carry them)."""
    cpu = torch._C._autograd.DeviceType.CPU
    out: list[Record] = []
    append = out.append
    for e in events:
        is_python = getattr(e, "is_python_function", None)  # newer torch; older ones keep them apart
        if is_python is not None and is_python():
            continue
        name = e.name()
        dev = e.device_type()
        if name == "[memory]":
            device = "CPU" if dev == cpu else f"{str(dev).split('.')[-1].lower()}:{e.device_index()}"
            append((MEMORY, name, e.start_thread_id(), e.start_ns(), 0, 0, 0, device, "", (), e.nbytes()))
        elif dev == cpu:
            append(
                (
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
                (
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


def analyse(
    records: list[Record],
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
    user_files = user_files or {}
    sources: dict[tuple[str, ...], str] = {}
    if not records:
        return
    origin = min(r[3] for r in records)
    cpu_ops = sorted((r for r in records if r[0] != DEVICE_OP), key=lambda r: (r[2], r[3], r[0], -r[4]))
    device_ops = [r for r in records if r[0] == DEVICE_OP]

    ev = empty_op_events()
    names, threads, self_us, total_us = ev["name"], ev["thread"], ev["self_us"], ev["total_us"]
    self_dev, total_dev = ev["self_device_us"], ev["total_device_us"]
    self_mem, total_mem, self_dmem = ev["self_mem"], ev["total_mem"], ev["self_device_mem"]
    starts: list[int] = []
    durs: list[int] = []
    depths: list[int] = []
    by_corr: dict[int, int] = {}
    mem_points: dict[str, list[tuple[int, int]]] = {}
    stack: list[int] = []
    ends: list[int] = []
    thread: Any = None

    def close_until(t: int | None) -> None:
        while stack and (t is None or t >= ends[-1]):
            i = stack.pop()
            ends.pop()
            if stack:
                total_mem[stack[-1]] += total_mem[i]

    for r in cpu_ops:
        kind, name, tid, start, dur = r[0], r[1], r[2], r[3], r[4]
        if tid != thread:
            close_until(None)
            thread = tid
        close_until(start)
        if kind == MEMORY:
            mem_points.setdefault(r[7], []).append((start, r[10]))
            if stack:
                i = stack[-1]
                if r[7] == "CPU":
                    self_mem[i] += r[10]
                    total_mem[i] += r[10]
                else:
                    self_dmem[i] += r[10]
            continue
        i = len(names)
        names.append(name)
        threads.append(f"thread {tid}")
        self_us.append(dur / 1000.0)
        total_us.append(dur / 1000.0)
        self_dev.append(0.0)
        total_dev.append(0.0)
        self_mem.append(0)
        total_mem.append(0)
        self_dmem.append(0)
        ev["shapes"].append(r[8])
        ev["module"].append(_module(r[9]))
        src = sources.get(r[9])
        if src is None:
            src = sources[r[9]] = _source(r[9], user_files)
        ev["source"].append(src)
        starts.append(start)
        durs.append(dur)
        depths.append(len(stack))
        if r[5]:
            by_corr[r[5]] = i
        if stack:
            self_us[stack[-1]] -= dur / 1000.0
        stack.append(i)
        ends.append(start + dur)
    close_until(None)
    if device_ops:
        _attribute_device(device_ops, by_corr, ev)
    _roll_up_device(ev, depths, starts, durs, threads)

    for r in device_ops:
        names.append(r[1])
        threads.append(r[2])
        self_us.append(0.0)
        total_us.append(0.0)
        self_dev.append(r[4] / 1000.0)
        total_dev.append(r[4] / 1000.0)
        self_mem.append(0)
        total_mem.append(0)
        self_dmem.append(0)
        ev["shapes"].append("")
        ev["module"].append("")
        ev["source"].append("")
        starts.append(r[3])
        durs.append(r[4])
        depths.append(0)
    result.op_events = ev
    result.devices = sorted({r[7] for r in records})
    result.timeline = _timeline(ev, starts, durs, depths, origin, timeline_events)
    result.memory = [_memory_curve(dev, pts, origin) for dev, pts in sorted(mem_points.items())]


def _attribute_device(device_ops: list[Record], by_corr: dict[int, int], ev: dict[str, list[Any]]) -> None:
    for r in device_ops:
        i = by_corr.get(r[6])
        if i is not None:
            ev["self_device_us"][i] += r[4] / 1000.0


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


def _module(stack: Sequence[str]) -> str:
    for frame in stack:
        if frame.startswith("nn.Module: "):
            return frame[len("nn.Module: ") :]
    return ""


def _source(stack: Sequence[str], user_files: dict[str, str]) -> str:
    """The innermost frame of the profiled code, else the innermost frame outside libraries."""
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


def _memory_curve(device: str, points: list[tuple[int, int]], origin: int) -> MemoryCurve:
    points.sort()
    t = (np.fromiter((p[0] for p in points), dtype=np.int64, count=len(points)) - origin).astype(np.float64) / 1000.0
    allocated = np.cumsum(np.fromiter((p[1] for p in points), dtype=np.int64, count=len(points)))
    return MemoryCurve(device=device, t_us=t, allocated=allocated)
