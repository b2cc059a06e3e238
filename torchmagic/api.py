"""The plain Python API behind the magics: usable from scripts and IDEs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from torchmagic.core.monitor import TrainingMonitor, active_monitor
from torchmagic.core.result import RunResult
from torchmagic.core.runs import set_last_run
from torchmagic.validation import TRAIN_DISPLAYS as TRAIN_DISPLAYS  # re-exported: the magic's --display choices
from torchmagic.validation import train_options


class TrainingRun:
    """``with torchmagic.train(model, optimizer) as run:`` — records the loop inside the block.

    ``run.result`` (also ``torchmagic.last_run()``) holds status, steps, history and alerts.
    The first Ctrl-C stops after the current step by raising ``TrainingStopped`` (a
    ``KeyboardInterrupt``) out of the block; a second one stops at once. Runs do not nest.
    Bad options raise ``TypeError`` or ``ValueError`` naming the argument
    (:mod:`torchmagic.validation`).
    """

    def __init__(
        self,
        models: torch.nn.Module | Sequence[torch.nn.Module] | None,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None,
        *,
        model_names: Sequence[str] = (),
        every: int = 10,
        histograms: bool = False,
        total: int | None = None,
        display: str = "auto",
        refresh: float = 4.0,
        title: str = "",
    ) -> None:
        options = train_options(
            models, optimizers, every=every, histograms=histograms, total=total, display=display, refresh=refresh
        )
        self.display_mode = options.display
        self.title = title
        self.monitor = TrainingMonitor(
            options.models,
            options.optimizers,
            model_names=model_names,
            every=options.every,
            histograms=options.histograms,
            total=options.total,
            refresh_interval=1.0 / options.refresh,
        )
        self.view: Any = None

    @property
    def result(self) -> RunResult:
        return self.monitor.result

    def __enter__(self) -> TrainingRun:
        if active_monitor() is not None:
            # Two monitors would both hook every module and count every step twice.
            raise RuntimeError("torchmagic.train: a run is already in progress here; runs cannot be nested")
        from torchmagic.display import make_display

        self.view = make_display(self.display_mode, title=self.title, histograms=self.monitor.histograms)
        if self.view is not None:
            self.monitor.on_refresh.append(self.view)
        from torchmagic.display.kernel_status import run_hook

        status_hook = run_hook(self.title)  # the lab extension's side panel, where one listens
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

    def _close_view(self) -> None:
        freeze = getattr(self.view, "freeze", None)
        if freeze is not None and not getattr(self.view, "frozen", True):
            freeze(self.monitor.result)


def train(
    model: Any = None,
    optimizer: Any = None,
    *,
    every: int = 10,
    histograms: bool = False,
    total: int | None = None,
    display: str = "auto",
    refresh: float = 4.0,
) -> TrainingRun:
    """Watch the training loop in a ``with`` block.

    Bad arguments raise ``TypeError`` or ``ValueError`` naming the argument, before anything is attached.

    Args:
        model: a module or a list of modules (others the loop uses are found automatically).
        optimizer: an optimizer or a list; its steps are the steps.
        every: period of the costly statistics (per-layer norms, activations, histograms).
        histograms: record gradient histograms on those steps.
        total: how many ``backward()`` calls the loop makes, for progress and ETA.
        display: "auto" (dashboard in a notebook, text elsewhere), "widgets" (the dashboard),
            "stock" (the dashboard from stock ipywidgets + jupyter_bokeh, for front ends without
            the torchmagic extension; more messages, so it refreshes every 2 s), "text" or "none".
        refresh: display refreshes per second, 0.01 to 30.
    """
    return TrainingRun(model, optimizer, every=every, histograms=histograms, total=total, display=display, refresh=refresh)


def log(**values: Any) -> None:
    """Record named scalars (numbers or 1-element tensors) for the current step of a run.

    Tensors stay on their device until the next refresh. Outside a run it does nothing.
    """
    monitor = active_monitor()
    if monitor is not None:
        monitor.log(values)
