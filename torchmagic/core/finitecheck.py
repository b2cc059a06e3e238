"""What a non-finite loss is checked against: the tensors a watched forward kept, in the order to
blame them.

On a watched step every module call under autograd leaves two kinds of entries, in the order
they happen: when a call begins, its inputs, blamed on the *caller* (a value made between two
calls was made by the code of the module that made the calls); when it returns, its outputs,
blamed on the module itself. The first non-finite entry names where the value was made: a leaf
whose output is the first non-finite one; or, for ``torch.log`` in ``Net.forward``, the next
call's input, so ``Net``. A tensor met again later (a module's output is the next one's input)
keeps its first entry. Finiteness is read from max-abs norms, which, unlike L2 norms, cannot
overflow for finite values.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from torchmagic.core import devicestats, shapes
from torchmagic.core.naming import MODEL_LABEL, ModuleNames
from torchmagic.core.nonfinite import CODE_PREFIX, INPUT_PREFIX, PARAM_PREFIX
from torchmagic.core.stepstate import NamedTensors

OUTPUTS_KEPT = 4096  # leaf outputs kept per root forward (activation statistics, the bound of the entries)
ROOTS_KEPT = 4  # root forwards (model, loss, ...) whose outputs are kept until backward()

_LEAF, _CODE = 0, 1  # an entry blames a leaf's own computation, or a module's code around its submodules


@dataclass(slots=True)
class RootForward:
    """A root forward's input, the first output of each leaf (for activation statistics), and the
    entries of every call inside it (for locating a non-finite value)."""

    module: torch.nn.Module
    args: tuple[Any, ...]
    leaves: list[torch.nn.Module] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)  # outputs[i] came from leaves[i]
    entries: list[tuple[int, torch.nn.Module, torch.Tensor]] = field(default_factory=list)  # (kind, blamed, tensor)


def _floating(value: Any) -> list[torch.Tensor]:
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], torch.Tensor):  # module(x): most calls
        value = value[0]
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() or value.is_complex() else []
    return [t for t in shapes.tensors_in(value) if t.is_floating_point() or t.is_complex()]


class KeptOutputs:
    """The current micro-batch's kept tensors (references only; autograd keeps most alive anyway).

    On CPU they are checked only when the loss is non-finite. On other devices that check would
    synchronise, so one fused norm over them yields a "finite" vector that waits on the device and
    is read at the refresh, next to the loss it explains. Bounded to the last few root forwards,
    so a loop that runs forwards without backward() under autograd (validation without no_grad)
    does not keep activations alive.
    """

    def __init__(self, names: ModuleNames) -> None:
        self.names = names
        self.roots: deque[RootForward] = deque(maxlen=ROOTS_KEPT)  # while watching
        self.first_input: tuple[torch.nn.Module, tuple[Any, ...]] | None = None  # the micro-batch's, always

    def open_root(self, module: torch.nn.Module, args: tuple[Any, ...], *, watched: bool) -> None:
        if self.first_input is None:
            self.first_input = (module, args)
        if watched:
            self.roots.append(RootForward(module, args))

    def keep_input(self, caller: torch.nn.Module | None, args: tuple[Any, ...]) -> None:
        """A call inside the root forward begins: its inputs, blamed on the module that calls it."""
        if self.roots:
            root = self.roots[-1]
            if len(root.entries) < 2 * OUTPUTS_KEPT:
                blamed = root.module if caller is None else caller
                root.entries += [(_CODE, blamed, t) for t in _floating(args)]

    def keep_output(self, module: torch.nn.Module, output: Any, *, leaf: bool) -> None:
        """A call returned: its outputs, blamed on it; a leaf's first one is also an activation."""
        if not self.roots:
            return
        root = self.roots[-1]
        if len(root.entries) < 2 * OUTPUTS_KEPT:
            root.entries += [(_LEAF if leaf else _CODE, module, t) for t in _floating(output)]
        if leaf and len(root.outputs) < OUTPUTS_KEPT:
            first = output if isinstance(output, torch.Tensor) else shapes.first_tensor(output)
            if first is not None and (first.is_floating_point() or first.is_complex()):
                root.leaves.append(module)
                root.outputs.append(first)

    def clear(self) -> None:
        self.roots.clear()
        self.first_input = None

    def leaf_outputs(self) -> NamedTensors:
        """Every leaf's output, named; a module called many times (an RNN cell): its first call."""
        seen: set[int] = set()
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        for root in self.roots:
            for module, output in zip(root.leaves, root.outputs):
                if id(module) not in seen:
                    seen.add(id(module))
                    names.append(self.names.label(module))
                    tensors.append(output)
        return NamedTensors(names, tensors)

    def finite_norms(self) -> NamedTensors:
        """One fused max-abs norm per kept tensor: non-finite exactly where a tensor holds NaN/Inf."""
        return norms_of(self._tensors())

    def _tensors(self) -> NamedTensors:
        """The micro-batch's input and every watched call's entries in the order they happened, each
        tensor once, named for an alert."""
        names: list[str] = []
        tensors: list[torch.Tensor] = []
        seen: set[int] = set()

        def add(name: str, t: torch.Tensor) -> None:
            if id(t) not in seen:
                seen.add(id(t))
                names.append(name)
                tensors.append(t)

        def add_input(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            for t in _floating(args):
                add(f"{INPUT_PREFIX}{self.names.label(module)}>", t)

        if self.first_input is not None:
            add_input(*self.first_input)
        for root in self.roots:
            add_input(root.module, root.args)
            for kind, module, t in root.entries:
                label = self.names.label(module) or MODEL_LABEL
                add(label if kind == _LEAF else f"{CODE_PREFIX}{label} in {type(module).__name__}.forward>", t)
        return NamedTensors(names, tensors)


def parameter_norms(roots: list[torch.nn.Module], names_of: Callable[[list[torch.Tensor]], list[str]]) -> NamedTensors:
    """One max-abs norm per parameter of the roots, named ``<parameter NAME>``."""
    params: list[torch.Tensor] = list({id(p): p for root in roots for p in root.parameters()}.values())
    names = [f"{PARAM_PREFIX}{n}>" for n in names_of(params)]
    return norms_of(NamedTensors(names, [p.detach() for p in params]))


def norms_of(named: NamedTensors) -> NamedTensors:
    """One fused max-abs norm per tensor (finite exactly when the tensor is), named as given."""
    if not named.tensors:
        return NamedTensors(named.names, [])
    with torch.no_grad():
        return NamedTensors(named.names, devicestats.max_abs(named.tensors))
