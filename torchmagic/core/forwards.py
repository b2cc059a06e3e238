"""Forward-hook bookkeeping: which forward is a root, the shape table, and the leaf outputs kept
until ``backward()`` for locating a non-finite value.

:class:`ForwardHooks` is the only part of a run that runs on every module's forward. One call
installs all of it into the run's :class:`Attachments` (removed with the rest), and it tells the
monitor when a root forward (the outermost module call: the model, the loss, ...) begins.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.modules import module as nn_module

from torchmagic.core import devicestats, shapes
from torchmagic.core.attachments import Attachments
from torchmagic.core.naming import ModuleNames
from torchmagic.core.recording import INPUT_PREFIX
from torchmagic.core.result import LayerInfo
from torchmagic.core.stepstate import NamedRows, NamedTensors

OUTPUTS_KEPT = 4096  # leaf outputs kept per root forward, for locating a non-finite value
ROOTS_KEPT = 4  # root forwards (model, loss, ...) whose outputs are kept until backward()


@dataclass(slots=True)
class RootForward:
    """A root forward's input and the floating-point outputs of its leaf modules, in forward order."""

    module: torch.nn.Module
    args: tuple[Any, ...]
    leaves: list[torch.nn.Module] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)  # outputs[i] came from leaves[i]


class ShapeTable:
    """One :class:`LayerInfo` per module traced, noting when its input or output signature changes."""

    def __init__(self, names: ModuleNames) -> None:
        self.names = names
        self.layers: dict[int, LayerInfo] = {}
        self._signatures: dict[int, tuple[shapes.Signature, shapes.Signature]] = {}
        self._root_signatures: dict[int, Any] = {}

    def root_changed(self, module: torch.nn.Module, args: tuple[Any, ...]) -> bool:
        """Whether the root's input signature differs from its last forward (a short last batch,
        a new sequence length); cheap, as it looks at the root's own arguments only."""
        sig = tuple((a.shape, a.dtype) if isinstance(a, torch.Tensor) else shapes.signature(a) for a in args)
        key = id(module)
        changed = self._root_signatures.get(key) != sig
        self._root_signatures[key] = sig
        return changed

    def trace(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any, step: Callable[[], int]) -> None:
        key = id(module)
        sig = (shapes.signature(args), shapes.signature(output))
        info = self.layers.get(key)
        if info is None:
            info = self.layers[key] = LayerInfo(self.names.label(module), type(module).__name__)
        elif self._signatures.get(key) != sig:
            info.shape_changes += 1
            info.last_change_step = step()
        if self._signatures.get(key) != sig:
            self._signatures[key] = sig
            info.input, info.output = shapes.format_signature(sig[0]), shapes.format_signature(sig[1])


class KeptOutputs:
    """Leaf outputs of the current micro-batch (references only; autograd keeps most alive anyway).

    On CPU they are checked only when the loss is non-finite. On other devices that check would
    synchronise, so one fused norm over them yields a "finite" vector that waits on the device and
    is read at the refresh, next to the loss it explains. Bounded to the last few root forwards,
    so a loop that runs forwards without backward() under autograd (validation without no_grad)
    does not keep activations alive.
    """

    def __init__(self, names: ModuleNames) -> None:
        self.names = names
        self.roots: deque[RootForward] = deque(maxlen=ROOTS_KEPT)

    def open_root(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.roots.append(RootForward(module, args))

    def keep(self, module: torch.nn.Module, output: torch.Tensor) -> None:
        if self.roots:
            root = self.roots[-1]
            if len(root.outputs) < OUTPUTS_KEPT:
                root.leaves.append(module)
                root.outputs.append(output)

    def clear(self) -> None:
        self.roots.clear()

    def activation_summaries(self) -> list[NamedRows]:
        """Statistics of every leaf's output, in a few fused ops."""
        seen: set[int] = set()
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        for root in self.roots:
            for module, output in zip(root.leaves, root.outputs):
                if id(module) not in seen:  # a module called many times (an RNN cell): its first call
                    seen.add(id(module))
                    names.append(self.names.label(module))
                    tensors.append(output)
        groups = devicestats.activation_summaries(tensors) if tensors else []
        return [NamedRows([names[i] for i in group.indices], group.rows) for group in groups]

    def finite_norms(self) -> NamedTensors:
        """One fused norm over the kept tensors: non-finite exactly where a tensor holds NaN/Inf."""
        kept = self._tensors()
        if not kept.tensors:
            return NamedTensors(kept.names, [])
        with torch.no_grad():
            return NamedTensors(kept.names, list(torch._foreach_norm(kept.tensors)))

    def _tensors(self) -> NamedTensors:
        """The micro-batch's input and leaf outputs in forward order, named for an alert."""
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        for root in list(self.roots)[:1]:
            for t in shapes.tensors_in(root.args):
                if t.is_floating_point() or t.is_complex():
                    names.append(f"{INPUT_PREFIX}{self.names.label(root.module)}>")
                    tensors.append(t)
        for root in self.roots:
            names += [self.names.label(module) for module in root.leaves]
            tensors += root.outputs
        return NamedTensors(names, tensors)


class ForwardHooks:
    """The global forward hooks of a run.

    Before each root forward they call ``on_root(module, args)``: the monitor may stop the run
    there (by raising), and says what the forward records by calling :meth:`begin_root`.
    ``next_step()`` is the step a shape change is attributed to.
    """

    def __init__(
        self,
        names: ModuleNames,
        on_root: Callable[[torch.nn.Module, tuple[Any, ...]], None],
        next_step: Callable[[], int],
    ) -> None:
        self.names = names
        self.shapes = ShapeTable(names)
        self.kept = KeptOutputs(names)
        self.batch_counted = False  # the current micro-batch's samples are counted
        self._on_root = on_root
        self._next_step = next_step
        self._depth = 0
        self._tracing = False
        self._grad_forward = False

    def install(self, attachments: Attachments) -> None:
        attachments.hook(nn_module.register_module_forward_pre_hook(self._before_forward))
        attachments.hook(nn_module.register_module_forward_hook(self._after_forward, always_call=True))

    def begin_root(self, module: torch.nn.Module, args: tuple[Any, ...], *, grad: bool, trace_all: bool) -> int:
        """Set up a root forward; returns the samples it adds to the step (its batch size, for the
        first root forward under autograd of a micro-batch, else 0)."""
        self._grad_forward = grad
        # Shapes are traced for every module only when the root's input signature changes or on a
        # scheduled step: per-module signatures on every forward would cost more than the rest of
        # the monitor together.
        changed = self.shapes.root_changed(module, args)
        self._tracing = trace_all or changed
        if not grad:
            return 0
        samples = 0
        if not self.batch_counted:
            bs = shapes.batch_size(args, module)
            if bs:
                samples = bs
                self.batch_counted = True
        self.kept.open_root(module, args)
        return samples

    def _before_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True
        if self._depth == 0:
            self._on_root(module, args)
        self._depth += 1

    def _after_forward(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._tracing:
            self.shapes.trace(module, args, output, self._next_step)
        if not self._grad_forward or not self.names.is_leaf(module):
            return
        out = output if isinstance(output, torch.Tensor) else shapes.first_tensor(output)
        if out is None or not (out.is_floating_point() or out.is_complex()):
            return
        self.kept.keep(module, out)
