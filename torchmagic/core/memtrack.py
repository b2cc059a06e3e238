"""Per-cell memory attribution: RSS and CUDA deltas and peaks, and memory held per module.

Peak RSS during a cell comes from the kernel's own high-water mark where Linux lets a process
reset it (``/proc/self/clear_refs``, value 5; ``VmHWM`` in ``/proc/self/status``): exact, no
thread, no cost while the cell runs. ``resource.getrusage`` cannot do this job: its maximum RSS
is the process's lifetime maximum, so once one cell peaked high no later cell's peak is seen.
Where the reset is unavailable (not Linux, or /proc read-only) a sampling thread reads the RSS
every few milliseconds while the recorded cell runs only; ``stop()`` ends and joins it.

CUDA numbers are read only when this process already initialised CUDA; the CUDA peak resets
torch's peak counter of the current device at the start of a recorded cell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.modules import module as nn_module

from torchmagic.core.memory import process_rss

SAMPLE_INTERVAL_S = 0.002
STRATEGIES = ("auto", "hwm", "sampling")

# The process's peak RSS as it was before the high-water mark was last reset.
_folded_peak = 0


def _read_hwm() -> int | None:
    """The kernel's high-water mark of this process's RSS, in bytes (Linux), or None."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Resets the high-water mark to the current RSS; False where the system does not allow it."""
    global _folded_peak
    before = _read_hwm()
    if before is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    _folded_peak = max(_folded_peak, before)
    return True


def process_peak_rss() -> int:
    """The highest RSS this process has had, in bytes (survives the per-cell resets)."""
    hwm = _read_hwm()
    if hwm is not None:
        return max(_folded_peak, hwm)
    import resource
    import sys

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(_folded_peak, maxrss if sys.platform == "darwin" else maxrss * 1024)


class PeakRss:
    """The peak RSS between ``start()`` and ``stop()``: the kernel's high-water mark, or sampling."""

    def __init__(self, strategy: str = "auto", interval: float = SAMPLE_INTERVAL_S) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        self.strategy = strategy
        self.interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._peak = process_rss()
        if self.strategy in ("auto", "hwm") and _reset_hwm():
            self.strategy = "hwm"
            return
        if self.strategy == "hwm":
            raise RuntimeError("this system does not let a process reset its RSS high-water mark")
        self.strategy = "sampling"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="torchmagic-rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = process_rss()
            if rss > self._peak:
                self._peak = rss

    def stop(self) -> int:
        """Ends the measurement (joins the sampling thread) and returns the peak in bytes."""
        rss = process_rss()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.strategy == "hwm":
            hwm = _read_hwm()
            if hwm is not None:
                self._peak = max(self._peak, hwm)
        self._peak = max(self._peak, rss)
        return self._peak

    @property
    def running(self) -> bool:
        return self._thread is not None


@dataclass
class ModuleMemory:
    """Memory one module's forward held, over the sampled forwards of a cell (bytes)."""

    name: str
    calls: int = 0  # sampled forwards
    held: int = 0  # largest over the sampled forwards: outputs + tensors saved for backward
    cuda_delta: int | None = None  # largest growth of CUDA allocated memory across the forward


@dataclass
class CellMemory:
    """What one cell did to memory (sizes in bytes; ``*_peak`` are absolute highs)."""

    cell: int | None = None
    code: str = ""
    duration: float = 0.0
    rss_start: int = 0
    rss_delta: int = 0
    rss_peak: int = 0
    peak_method: str = ""  # "hwm" or "sampling"
    cuda_start: int | None = None
    cuda_delta: int | None = None
    cuda_peak: int | None = None
    modules: list[ModuleMemory] = field(default_factory=list)  # held, largest first
    forwards: int = 0  # root forwards seen (with --by-module)
    sampled_forwards: int = 0

    def row(self) -> dict[str, Any]:
        """One row of ``memory_history()``."""
        top = self.modules[0].name if self.modules else None
        return {
            "cell": self.cell,
            "code": self.code,
            "duration": self.duration,
            "rss_delta": self.rss_delta,
            "rss_peak": self.rss_peak,
            "cuda_delta": self.cuda_delta,
            "cuda_peak": self.cuda_peak,
            "top_module": top,
        }


@dataclass
class _Frame:
    module: torch.nn.Module
    sampled: bool
    inputs: set[int] = field(default_factory=set)  # storage pointers of inputs and own parameters
    stop: set[int] = field(default_factory=set)  # ids of the inputs' grad_fns: where its graph ends
    cuda_before: int | None = None


def _storages(value: Any, out: dict[int, int], depth: int = 0) -> None:
    """Storage pointer -> bytes of the tensors in a (nested) output."""
    if isinstance(value, torch.Tensor):
        try:
            storage = value.untyped_storage()
            if storage.device.type != "meta":
                out[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # sparse, nested, functional wrappers
            pass
    elif depth < 3 and isinstance(value, (list, tuple)):
        for item in value:
            _storages(item, out, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            _storages(item, out, depth + 1)


MAX_GRAPH_NODES = 20_000  # bounds the walk of one module's autograd graph


def _saved_names(node_type: type) -> list[str]:
    names = _SAVED_NAMES.get(node_type)
    if names is None:
        names = [n for n in dir(node_type) if n.startswith("_saved_")]
        if hasattr(node_type, "saved_tensors"):  # autograd.Function written in Python
            names.append("saved_tensors")
        _SAVED_NAMES[node_type] = names
    return names


_SAVED_NAMES: dict[type, list[str]] = {}


def _tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if depth < 3 and isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item, depth + 1)]
    if depth < 3 and isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item, depth + 1)]
    return []


def _saved_for_backward(outputs: Any, stop: set[int], out: dict[int, int]) -> None:
    """Storages autograd saved between ``outputs`` and the nodes in ``stop`` (ids of grad_fns)."""
    pending = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    seen = set(stop)
    while pending and len(seen) < MAX_GRAPH_NODES:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in _saved_names(type(node)):
            try:
                value = getattr(node, name)
            except (RuntimeError, AttributeError):  # freed by a backward already
                continue
            for tensor in _tensors(value):
                if not (tensor.is_leaf and tensor.requires_grad):  # parameters are not held by a forward
                    _storages(tensor, out)
        pending.extend(next_node for next_node, _ in node.next_functions)


class ModuleMemoryHooks:
    """Global forward hooks that measure what each module's forward holds, on sampled passes.

    Sampling is by whole root forward (the outermost module call): passes 0, every, 2*every…
    are measured, so nesting stays exact. On a measured pass each module is credited with the
    tensors it returns and the tensors autograd saved for backward between its inputs and its
    outputs (read from the graph's ``_saved_*`` attributes after the forward, so autograd runs
    exactly as without us), minus its inputs and parameters, and minus what a submodule was
    already credited with. With CUDA in use, also the growth of allocated memory across its
    forward. An unmeasured pass costs two global hook calls per module.
    """

    def __init__(self, every: int = 1, names: Callable[[torch.nn.Module], str | None] | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self._names = names
        self._name_cache: dict[int, str] = {}
        self._keep: list[torch.nn.Module] = []
        self.stats: dict[str, ModuleMemory] = {}
        self.forwards = 0
        self.sampled = 0
        self._stack: list[_Frame] = []
        self._credited: set[int] = set()
        self._handles: list[Any] = []

    def attach(self) -> None:
        self._handles = [
            nn_module.register_module_forward_pre_hook(self._pre),
            nn_module.register_module_forward_hook(self._post, always_call=True),
        ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack.clear()

    def _name(self, module: torch.nn.Module, root: torch.nn.Module) -> str:
        name = self._name_cache.get(id(module))
        if name is not None:
            return name
        prefix = (self._names(root) if self._names else None) or type(root).__name__
        self._keep.append(root)
        for sub_name, sub in root.named_modules(remove_duplicate=False):
            self._name_cache.setdefault(id(sub), f"{prefix}.{sub_name}" if sub_name else prefix)
        return self._name_cache.setdefault(id(module), type(module).__name__)

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not self._stack:
            sampled = self.forwards % self.every == 0
            self.forwards += 1
            if sampled:
                self.sampled += 1
                self._credited = set()
        else:
            sampled = self._stack[0].sampled
        frame = _Frame(module, sampled)
        if sampled:
            inputs: dict[int, int] = {}
            _storages(args, inputs)
            _storages([*module._parameters.values(), *module._buffers.values()], inputs)
            frame.inputs = set(inputs)
            frame.stop = {id(t.grad_fn) for t in _tensors(args) if t.grad_fn is not None}
            if torch.cuda.is_initialized():
                frame.cuda_before = torch.cuda.memory_allocated()
        self._stack.append(frame)

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self._stack or self._stack[-1].module is not module:
            return  # a forward that began before the hooks were attached
        frame = self._stack.pop()
        if not frame.sampled:
            return
        held: dict[int, int] = {}
        if torch.is_grad_enabled():
            _saved_for_backward(output, frame.stop, held)
        _storages(output, held)
        for ptr in frame.inputs | self._credited:
            held.pop(ptr, None)
        self._credited.update(held)  # a parent does not count its children's tensors again
        root = self._stack[0].module if self._stack else module
        name = self._name(module, root)
        stat = self.stats.get(name) or self.stats.setdefault(name, ModuleMemory(name))
        stat.calls += 1
        stat.held = max(stat.held, sum(held.values()))
        if frame.cuda_before is not None:
            delta = torch.cuda.memory_allocated() - frame.cuda_before
            stat.cuda_delta = delta if stat.cuda_delta is None else max(stat.cuda_delta, delta)

    def top(self, n: int | None = None) -> list[ModuleMemory]:
        ranked = sorted(self.stats.values(), key=lambda s: (s.held, s.cuda_delta or 0), reverse=True)
        return ranked if n is None else ranked[:n]


class CellMemoryTracker:
    """Measures one cell: ``start()`` before it runs, ``stop()`` after (always, even on error)."""

    def __init__(
        self,
        *,
        by_module: bool = False,
        every: int = 1,
        top: int = 10,
        strategy: str = "auto",
        names: Callable[[torch.nn.Module], str | None] | None = None,
    ) -> None:
        self.peak = PeakRss(strategy)
        self.hooks = ModuleMemoryHooks(every, names) if by_module else None
        self.top_n = top
        self.result = CellMemory()
        self._t0 = 0.0
        self.active = False

    def start(self, cell: int | None = None, code: str = "") -> None:
        r = self.result
        r.cell, r.code = cell, _first_line(code)
        if torch.cuda.is_initialized():
            r.cuda_start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        self.peak.start()
        r.rss_start = process_rss()
        if self.hooks is not None:
            self.hooks.attach()
        self.active = True
        self._t0 = time.perf_counter()

    def stop(self) -> CellMemory:
        if not self.active:
            return self.result
        self.active = False
        r = self.result
        r.duration = time.perf_counter() - self._t0
        if self.hooks is not None:
            self.hooks.detach()
            r.modules = self.hooks.top(self.top_n)
            r.forwards, r.sampled_forwards = self.hooks.forwards, self.hooks.sampled
        rss = process_rss()
        r.rss_peak = max(self.peak.stop(), r.rss_start, rss)
        r.rss_delta = rss - r.rss_start
        r.peak_method = self.peak.strategy
        if torch.cuda.is_initialized():
            start = r.cuda_start or 0
            r.cuda_delta = torch.cuda.memory_allocated() - start
            r.cuda_peak = torch.cuda.max_memory_allocated()
        return r


def _first_line(code: str) -> str:
    for line in code.splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""


# --------------------------------------------------------------------------- the history

_history: list[CellMemory] = []
_recording = False


def set_recording(on: bool) -> None:
    """Whether every cell is being recorded (``%memory on``); shown in the side panel."""
    global _recording
    _recording = on


def recording() -> bool:
    return _recording


def record(cell: CellMemory) -> None:
    _history.append(cell)


def history() -> list[CellMemory]:
    return list(_history)


def clear_history() -> None:
    _history.clear()


HISTORY_COLUMNS = ["cell", "code", "duration", "rss_delta", "rss_peak", "cuda_delta", "cuda_peak", "top_module"]


def memory_history() -> Any:
    """The cells recorded by ``%memory on`` and ``%%memory``: a DataFrame, one row per cell.

    Sizes are in bytes: ``rss_delta`` (RSS at the end minus at the start), ``rss_peak`` (the
    highest RSS during the cell), and with CUDA in use ``cuda_delta`` and ``cuda_peak``
    (allocated bytes). ``top_module`` names the module whose forward held the most, with
    ``--by-module``.
    """
    import pandas as pd

    rows = [c.row() for c in _history]
    columns = list(HISTORY_COLUMNS)
    if not any(r["cuda_delta"] is not None for r in rows):
        columns = [c for c in columns if not c.startswith("cuda_")]
    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)
