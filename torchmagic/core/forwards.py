"""Forward-hook bookkeeping: which forward is a root, the shape table, and the tensors kept until
``backward()`` for locating a non-finite value (see :mod:`~torchmagic.core.finitecheck`).

:class:`ForwardHooks` sees module forwards in two ways. While it *watches* (the steps the
monitor chooses), PyTorch's global forward hooks run on every module call: roots are found, every
module's shapes traced, every call's inputs and outputs kept. Otherwise only each root that has
parameters (the models found on a watched step) is met, once per call, so every other module call
takes ``Module._call_impl``'s fast path; that one call per root forward still counts the batch,
notices a new input signature (and starts watching right there), and is where a requested stop
is honoured.

A root is met through its class's ``forward``, replaced for the run by one that calls the
monitor for the roots among its instances (see :class:`RootForwards`): a forward pre-hook of the
root's own would send the root's every call down ``_call_impl``'s general path, which costs more
(4 us a call on a tiny model on the CPU) than the rest of an unwatched step's monitoring. Where
the class cannot be used (it is also the class of one of the root's submodules, the instance has
a ``forward`` of its own, a TorchScript module), the root gets a pre-hook instead.

Under ``torch.compile`` (``module.compile()`` compiles ``_call_impl``, hooks and ``forward``
included) the callbacks run outside the graph (:mod:`~torchmagic.core.compiled`).
"""

from __future__ import annotations

import functools
import math
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as nn_module
from torch.utils.hooks import RemovableHandle

from torchmagic.core import shapes
from torchmagic.core.attachments import Attachments
from torchmagic.core.compiled import eager_only, frame_callback, outside_graph, tracing
from torchmagic.core.finitecheck import ROOTS_KEPT as ROOTS_KEPT  # re-exported: the bound tests check
from torchmagic.core.finitecheck import KeptOutputs, parameter_norms
from torchmagic.core.interrupt import StopRequest
from torchmagic.core.naming import ModuleNames
from torchmagic.core.result import LayerInfo
from torchmagic.core.stepstate import NamedTensors


class ShapeTable:
    """One :class:`LayerInfo` per module traced, noting when its input or output signature changes."""

    def __init__(self, names: ModuleNames) -> None:
        self.names = names
        self.layers: dict[int, LayerInfo] = {}
        self._signatures: dict[int, tuple[shapes.Signature, shapes.Signature]] = {}
        self.root_signatures: dict[int, Any] = {}  # id(root) -> its last input's signature

    def root_changed(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the root's input signature differs from its last forward (a short last batch,
        a new sequence length); cheap, as it looks at the root's own arguments only."""
        sig: Any
        if not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor):  # model(x): the usual call, per step
            sig = (args[0].shape, args[0].dtype)
        else:
            sig = tuple((a.shape, a.dtype) if isinstance(a, torch.Tensor) else shapes.signature(a) for a in args)
            sig = (None, sig, shapes.signature(kwargs))  # never equal to the usual call's (shape, dtype)
        key = id(module)
        changed = bool(self.root_signatures.get(key) != sig)  # the fast path of ForwardHooks compares the same
        self.root_signatures[key] = sig
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


RootCall = Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any]], None]


class RootForwards:
    """The roots met through their class's ``forward``: one replacement per class, restored with
    the run's other attachments, that calls ``before(module, args, kwargs)`` for the roots among
    its instances and goes straight to the original for every other instance (copies of the model,
    an EMA twin). Calls through ``super().forward`` of a subclass's own ``forward`` are not met."""

    def __init__(self) -> None:
        self._roots: dict[type, dict[int, RootCall]] = {}
        self._attachments: Attachments | None = None

    def bind(self, attachments: Attachments) -> None:
        self._attachments = attachments
        self._roots = {}

    @staticmethod
    def usable(module: torch.nn.Module) -> bool:
        """Whether ``module`` is called through its class's plain Python ``forward``, and no
        submodule shares its class (their calls would pass through the replacement too)."""
        cls = type(module)
        if "forward" in module.__dict__ or isinstance(module, torch.jit.ScriptModule):
            return False
        if cls.__call__ is not torch.nn.Module.__call__ or cls._call_impl is not torch.nn.Module._call_impl:
            return False
        if not isinstance(cls.forward, types.FunctionType):
            return False
        return not any(type(m) is cls for m in module.modules() if m is not module)

    def add(self, module: torch.nn.Module, before: RootCall) -> bool:
        """Meet ``module``'s calls from now on; False when it cannot be (see :meth:`usable`)."""
        if self._attachments is None or not self.usable(module):
            return False
        cls = type(module)
        roots = self._roots.get(cls)
        if roots is None:
            roots = self._roots[cls] = {}
            self._attachments.patch(cls, "forward", _met_forward(cls.forward, roots))
            self._attachments.callback(roots.clear)  # removed before the class's forward is put back
        roots[id(module)] = before
        return True


def _met_forward(original: Callable[..., Any], roots: dict[int, RootCall]) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        before = roots.get(id(module))
        if before is not None:
            if tracing() or frame_callback() is not None:  # inside torch.compile (core.compiled)
                outside_graph(before, module, args, kwargs)  # one clean graph break, before the forward's ops
            else:
                before(module, args, kwargs)
        return original(module, *args, **kwargs)

    return forward


class ForwardHooks:
    """The forward hooks of a run.

    Before each root forward they call ``on_root(module, args, kwargs)``: the monitor may stop the
    run there (by raising), and says what the forward records by calling :meth:`begin_root`.
    ``next_step()`` is the step a shape change is attributed to. Forwards that other threads run
    are not watched: the run belongs to the thread that started it.
    """

    def __init__(
        self,
        names: ModuleNames,
        on_root: Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any]], None],
        next_step: Callable[[], int],
        stop: StopRequest | None = None,
    ) -> None:
        self.names = names
        self.shapes = ShapeTable(names)
        self.kept = KeptOutputs(names)
        self.batch_counted = False  # the current micro-batch's samples are counted
        self.samples = 0  # counted since the monitor last took them (at each backward)
        self.watching = False  # the global hooks are installed
        self.in_backward = False  # set by the monitor: forwards run again inside backward() are not roots
        self.long_step_at = math.inf  # perf_counter() past which a root call asks for a refresh
        self.on_long_step: Callable[[], None] = lambda: None
        self._stop = stop or StopRequest()
        self._on_root = on_root
        self._next_step = next_step
        self._thread = threading.get_ident()
        self._global: list[RemovableHandle] = []
        self._root_hooks: dict[int, RemovableHandle | None] = {}  # None: met through its class (RootForwards)
        self._root_forwards = RootForwards()
        self._unhooked_roots: set[int] = set()  # roots without parameters (a loss module): no hook of their own
        self._depth = 0
        self._open: list[torch.nn.Module] = []  # the calls under way while watching, innermost last
        self._tracing = False
        self._grad_forward = False

    def install(self, attachments: Attachments) -> None:
        """Start watching; everything is removed with the run's other attachments."""
        self._thread = threading.get_ident()
        attachments.callback(self._remove_all)
        self._root_forwards.bind(attachments)
        self.watch()

    def watch(self, *, inside_root: bool = False) -> None:
        """See every module's forward until :meth:`unwatch`. ``inside_root``: called from a root's
        own pre-hook, whose forward is then under way (its global pre-hook did not run)."""
        if self.watching:
            return
        self._global = [
            nn_module.register_module_forward_pre_hook(eager_only(self._before_forward)),
            nn_module.register_module_forward_hook(eager_only(self._after_forward), always_call=True),
        ]
        self.watching = True
        self._depth = 1 if inside_root else 0

    def unwatch(self) -> None:
        if not self.watching:
            return
        for handle in self._global:
            handle.remove()
        self._global = []
        self.watching = False
        self._depth = 0
        self._open.clear()
        self._tracing = False

    def hook_root(self, module: torch.nn.Module) -> None:
        """Meet every forward of a root with parameters from now on (once): through its class, or
        a forward pre-hook of its own."""
        key = id(module)
        if key in self._root_hooks or key in self._unhooked_roots:
            return
        if next(iter(module.parameters()), None) is None:
            self._unhooked_roots.add(key)
            return
        # An RNN's batch is not its input's first dimension (batch_first): its forwards take the general path.
        hook = self._before_rnn_root if isinstance(module, torch.nn.RNNBase) else self._before_root
        if self._root_forwards.add(module, hook):
            self._root_hooks[key] = None
        else:
            self._root_hooks[key] = module.register_forward_pre_hook(eager_only(hook), with_kwargs=True)

    def finite_check(self, param_names: Callable[[list[torch.Tensor]], list[str]], *, after_alert: bool) -> NamedTensors:
        """Norms of what a non-finite loss may come from, in the order to blame them: the input and
        (when watched) every call's inputs and outputs as they happened; the parameters first on the
        step watched for an earlier alert (an update may have spread the value), last on an unwatched one."""
        kept = self.kept.finite_norms()
        if self.watching and not after_alert:
            return kept
        params = parameter_norms(self.names.roots, param_names)
        if self.watching:
            return NamedTensors(params.names + kept.names, params.tensors + kept.tensors)
        return NamedTensors(kept.names + params.names, kept.tensors + params.tensors)

    def _remove_all(self) -> None:
        self.unwatch()
        for handle in self._root_hooks.values():
            if handle is not None:
                handle.remove()
        self._root_hooks.clear()

    def begin_root(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], *, grad: bool, trace_all: bool
    ) -> None:
        """Set up a root forward: trace it if its input changed, count its batch (for the first root
        forward under autograd of a micro-batch), keep its input."""
        self._grad_forward = grad
        # Shapes are traced for every module only when the root's input signature changes or on a
        # scheduled step: per-module signatures on every forward would cost more than the rest of
        # the monitor together.
        changed = self.shapes.root_changed(module, args, kwargs)
        self._tracing = trace_all or changed
        if self._tracing and not self.watching:
            self.watch(inside_root=True)  # a new input shape: watch the rest of this step
        if not grad:
            return
        if not self.batch_counted:
            bs = shapes.batch_size(args, module) or (shapes.batch_size((kwargs,), module) if kwargs else None)
            if bs:
                self.samples += bs
                self.batch_counted = True
        self.kept.open_root(module, args, watched=self.watching)

    def _before_root(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        __tracebackhide__ = True
        if threading.get_ident() != self._thread:
            return  # another thread's forward
        if self.watching or self._stop.requested or self.in_backward or kwargs or len(args) != 1:
            if not self.watching or self._depth == 1:  # else a nested call of a module that is a root elsewhere
                self._on_root(module, args, kwargs)
            return
        # Every unwatched step comes here: ``model(x)`` with an input of the same shape as before
        # costs a few attribute reads; anything else takes the monitor's general path.
        x = args[0]
        last = self.shapes.root_signatures.get(id(module))
        if last is None or not isinstance(x, torch.Tensor) or not torch.is_grad_enabled():
            self._on_root(module, args, kwargs)
            return
        shape = x.shape
        if shape != last[0] or x.dtype is not last[1]:
            self._on_root(module, args, kwargs)
            return
        self._grad_forward, self._tracing = True, False
        if not self.batch_counted and shape:
            self.samples += shape[0]
            self.batch_counted = True
        kept = self.kept
        if kept.first_input is None:
            kept.first_input = (module, args)
        if time.perf_counter() >= self.long_step_at:
            self.on_long_step()

    def _before_rnn_root(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        __tracebackhide__ = True
        if threading.get_ident() == self._thread and (not self.watching or self._depth == 1):
            self._on_root(module, args, kwargs)

    def _before_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True
        if threading.get_ident() != self._thread:
            return
        if self._depth == 0 and id(module) not in self._root_hooks:  # hooked roots are begun by their own hook
            self._on_root(module, args, {})
        elif self._depth > 0 and self._grad_forward:  # a call inside a root: its inputs, blamed on its caller
            self.kept.keep_input(self._open[-1] if self._open else None, args)
        self._depth += 1
        self._open.append(module)

    def _after_forward(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        self._depth = max(0, self._depth - 1)
        if self._open:
            self._open.pop()
        if self._tracing:
            self.shapes.trace(module, args, output, self._next_step)
        if self._grad_forward:
            self.kept.keep_output(module, output, leaf=self.names.is_leaf(module))
