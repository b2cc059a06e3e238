"""The plain Python API behind the magics: usable from scripts and IDEs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from torchmagic.core.interrupt import TrainingStopped
from torchmagic.core.monitor import Snapshot, TrainingMonitor, active_monitor
from torchmagic.core.result import RunResult
from torchmagic.core.runs import set_last_run
from torchmagic.validation import TRAIN_DISPLAYS as TRAIN_DISPLAYS  # re-exported: the magic's --display choices
from torchmagic.validation import train_options

if TYPE_CHECKING:
    from torchmagic.core.distributed.torchrun import TorchrunEnv


class TrainingRun:
    """``with torchmagic.train(model, optimizer) as run:`` — records the loop inside the block.

    ``run.result`` (also ``torchmagic.last_run()``) holds status, steps, history and alerts.
    The first Ctrl-C stops after the current step by raising ``TrainingStopped`` (a
    ``KeyboardInterrupt``) out of the block; a second one stops at once. Runs do not nest.
    Bad options raise ``TypeError`` or ``ValueError`` naming the argument
    (:mod:`torchmagic.validation`).

    With ``nproc=N`` the loop runs on N ranks forked from this process: ``run.run(loop)``, not
    a ``with`` block (see :meth:`run`). Under ``torchrun`` the ``with`` block works on every rank:
    rank 0 shows all ranks, the others stay silent.
    """

    def __init__(
        self,
        models: torch.nn.Module | Sequence[torch.nn.Module] | None,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None,
        *,
        model_names: Sequence[str] = (),
        every: int | None = None,
        histograms: bool | str | Sequence[str] = False,
        total: int | None = None,
        display: str = "auto",
        refresh: float = 4.0,
        title: str = "",
        nproc: int | None = None,
        timeout: float = 600.0,
    ) -> None:
        options = train_options(
            models,
            optimizers,
            every=every,
            histograms=histograms,
            total=total,
            display=display,
            refresh=refresh,
            nproc=nproc,
            timeout=timeout,
        )
        self.display_mode = options.display
        # what the dashboard draws: the parameters matching these patterns, else the first ones (True)
        self._histograms_shown: bool | tuple[str, ...] = options.histogram_patterns or options.histograms
        self.title = title
        self.nproc = options.nproc
        self.timeout = options.timeout
        # the monitor's options, for this process's monitor and for each rank's
        self._monitor_options: dict[str, Any] = dict(
            model_names=model_names,
            every=options.every,
            histograms=options.histograms,
            total=options.total,
            refresh_interval=1.0 / options.refresh,
        )
        self.monitor = TrainingMonitor(options.models, options.optimizers, **self._monitor_options)
        self.view: Any = None
        self._ranks_result: RunResult | None = None

    @property
    def result(self) -> RunResult:
        """The run's result; after ``run(loop)`` with ``nproc``, every rank's rows (a ``rank`` column)."""
        return self._ranks_result if self._ranks_result is not None else self.monitor.result

    def __enter__(self) -> TrainingRun:
        if self.nproc is not None:
            raise TypeError("torchmagic.train(..., nproc=N) runs a function on N processes: use .run(loop), not a with block")
        _refuse_nesting()
        from torchmagic.display import make_display
        from torchmagic.display.kernel_status import run_hook

        env = _torchrun_env()
        silent = env is not None and env.rank != 0  # rank 0 speaks for every rank
        self.view = make_display("none" if silent else self.display_mode, title=self.title, histograms=self._histograms_shown)
        if env is not None:
            from torchmagic.core.distributed.torchrun import RankZeroView

            self.monitor.on_refresh.append(RankZeroView(env, self.view))
        elif self.view is not None:
            self.monitor.on_refresh.append(self.view)
        status_hook = None if silent else run_hook(self.title)  # the lab extension's side panel, where one listens
        if status_hook is not None:
            self.monitor.on_refresh.append(status_hook)
        try:
            self.monitor.start()
        except BaseException:
            self._close_view()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        try:
            self.monitor.stop(exc)
        finally:
            self._close_view()
            set_last_run(self.monitor.result)
        return False

    def run(self, loop: Callable[[], object]) -> RunResult:
        """Run ``loop()`` under the monitor and return the result.

        Without ``nproc`` it is ``with run: loop()``. With ``nproc=N``, ``loop`` runs on N ranks
        forked from this process, ``torch.distributed`` initialised in each (gloo on CPU, NCCL
        with one GPU per rank); the live display shows all ranks, the result holds every rank's
        rows (a ``rank`` column), and the models and optimizers get rank 0's final state.
        Ctrl-C stops every rank after the same step and raises ``TrainingStopped``; a second
        one ends the ranks at once. A failing rank raises ``RankFailed`` with its traceback;
        an impossible run (``nproc`` beyond this machine, CUDA already initialised here)
        raises ``DistributedError`` before anything starts.
        """
        __tracebackhide__ = True
        if self.nproc is None:
            with self:
                loop()
            return self.result
        _refuse_nesting()
        from torchmagic.core.distributed import RankFailed, run_distributed
        from torchmagic.display.kernel_status import run_hook

        status_hook = run_hook(self.title)
        callbacks = [c for c in (self._show, status_hook) if c is not None]
        try:
            self._ranks_result = run_distributed(
                loop,
                nproc=self.nproc,
                models=self.monitor.models,
                optimizers=self.monitor.optimizers,
                monitor_options=self._monitor_options,
                on_refresh=callbacks,
                timeout=self.timeout,
            )
        except RankFailed as failure:
            self._ranks_result = failure.result
            raise
        finally:
            self._close_view()
            if self._ranks_result is not None:  # none when the run could not start
                set_last_run(self._ranks_result)
        result = self._ranks_result
        if result.status == "interrupted":
            raise TrainingStopped(f"training stopped after step {result.steps}")
        return result

    def _show(self, snap: Snapshot) -> None:
        """The display of a distributed run, made at its first snapshot: a run refused before it
        starts leaves no empty dashboard behind."""
        if self.view is None:
            from torchmagic.display import make_display

            self.view = make_display(self.display_mode, title=self.title, histograms=self._histograms_shown) or _silent
        self.view(snap)

    def _close_view(self) -> None:
        freeze = getattr(self.view, "freeze", None)
        if freeze is not None and not getattr(self.view, "frozen", True):
            freeze(self.result)


def _silent(snap: Snapshot) -> None:
    """The display of ``display="none"``."""


def _refuse_nesting() -> None:
    if active_monitor() is not None:
        # Two monitors would both hook every module and count every step twice.
        raise RuntimeError("torchmagic.train: a run is already in progress here; runs cannot be nested")


def _torchrun_env() -> TorchrunEnv | None:
    """The launcher's environment when this process is one rank of several (torchrun), else None."""
    if os.environ.get("WORLD_SIZE", "") in ("", "1"):
        return None
    from torchmagic.core.distributed.torchrun import torchrun_env

    return torchrun_env()


def train(
    model: Any = None,
    optimizer: Any = None,
    *,
    every: int | None = None,
    histograms: bool | str | Sequence[str] = False,
    total: int | None = None,
    display: str = "auto",
    refresh: float = 4.0,
    nproc: int | None = None,
) -> TrainingRun:
    """Watch the training loop in a ``with`` block (or, with ``nproc``, run it: ``.run(loop)``).

    Bad arguments raise ``TypeError`` or ``ValueError`` naming the argument, before anything is attached.

    Args:
        model: a module or a list of modules (others the loop uses are found automatically).
        optimizer: an optimizer or a list; its steps are the steps.
        every: period of the costly statistics (per-layer norms, activations, histograms): steps 1,
            N, 2N, ...; 0: never. Default: every 10 steps, thinned (20, 40, ...) for loops so fast
            that they would come more than 20 times a second.
        histograms: record gradient histograms on those steps: True shows the first 8 parameters;
            glob patterns on parameter names choose which (``"encoder.*,fc"`` or ``["fc", "encoder.*"]``;
            a module's name stands for its parameters).
        total: how many ``backward()`` calls the loop makes, for progress and ETA.
        display: "auto" (dashboard in a notebook, text elsewhere), "widgets" (the dashboard),
            "stock" (the dashboard from stock ipywidgets + jupyter_bokeh, for front ends without
            the torchmagic extension; more messages, so it refreshes every 2 s), "text" or "none".
        refresh: display refreshes per second, 0.01 to 30.
        nproc: run the loop on this many ranks forked from this process, with ``torch.distributed``
            initialised in each: ``torchmagic.train(model, opt, nproc=4).run(loop)``. The models
            and optimizers get rank 0's final state.
    """
    return TrainingRun(
        model, optimizer, every=every, histograms=histograms, total=total, display=display, refresh=refresh, nproc=nproc
    )


def log(**values: Any) -> None:
    """Record named scalars (numbers or 1-element tensors) for the current step of a run.

    Tensors stay on their device until the next refresh. Outside a run it does nothing.
    """
    monitor = active_monitor()
    if monitor is not None:
        monitor.log(values)
