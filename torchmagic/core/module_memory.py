"""Per-module attribution: the memory each module's forward held, measured by global forward hooks.

A module is credited with the tensors its forward returns and the tensors autograd saved for
backward between its inputs and its outputs, read from the finished graph, so autograd runs
exactly as without the hooks (see :class:`ModuleMemoryHooks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd.graph import Node
from torch.nn.modules import module as nn_module

from torchmagic.core.compiled import eager_only
from torchmagic.core.memory import cuda_in_use


@dataclass
class ModuleMemory:
    """Memory one module's forward held, over the sampled forwards of a cell (bytes)."""

    name: str
    calls: int = 0  # sampled forwards
    held: int = 0  # largest over the sampled forwards: outputs + tensors saved for backward
    cuda_delta: int | None = None  # largest growth of CUDA allocated memory across the forward


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
    pending: list[Node | None] = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
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
            nn_module.register_module_forward_pre_hook(eager_only(self._pre)),
            nn_module.register_module_forward_hook(eager_only(self._post), always_call=True),
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
            if cuda_in_use():
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
