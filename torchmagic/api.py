"""The plain Python API behind the magics: usable from scripts and IDEs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from torchmagic.core.monitor import TrainingMonitor, active_monitor
from torchmagic.core.result import RunResult
from torchmagic.core.runs import set_last_run

TRAIN_DISPLAYS = ("auto", "widgets", "stock", "text", "none")  # display= of train() and %%train --display


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


class TrainingRun:
    """``with torchmagic.train(model, optimizer) as run:`` — records the loop inside the block.

    ``run.result`` (also ``torchmagic.last_run()``) holds status, steps, history and alerts.
    The first Ctrl-C stops after the current step by raising ``TrainingStopped`` (a
    ``KeyboardInterrupt``) out of the block; a second one stops at once.
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        model_names: Sequence[str] = (),
        every: int = 10,
        histograms: bool = False,
        total: int | None = None,
        display: str = "auto",
        refresh: float = 4.0,
        title: str = "",
    ) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        if refresh <= 0:
            raise ValueError(f"refresh must be > 0 (Hz), got {refresh}")
        if display not in TRAIN_DISPLAYS:
            raise ValueError(f"display must be one of {', '.join(TRAIN_DISPLAYS)}; got {display!r}")
        self.display_mode = display
        self.title = title
        self.monitor = TrainingMonitor(
            models,
            optimizers,
            model_names=model_names,
            every=every,
            histograms=histograms,
            total=total,
            refresh_interval=1.0 / refresh,
        )
        self.view: Any = None

    @property
    def result(self) -> RunResult:
        return self.monitor.result

    def __enter__(self) -> TrainingRun:
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

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
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

    Args:
        model: a module or a list of modules (others the loop uses are found automatically).
        optimizer: an optimizer or a list; its steps are the steps.
        every: period of the costly statistics (per-layer norms, activations, histograms).
        histograms: record gradient histograms on those steps.
        total: how many ``backward()`` calls the loop makes, for progress and ETA.
        display: "auto" (dashboard in a notebook, text elsewhere), "widgets" (the dashboard),
            "stock" (the dashboard from stock ipywidgets + jupyter_bokeh, for front ends without
            the torchmagic extension; more messages, so it refreshes every 2 s), "text" or "none".
        refresh: display refreshes per second.
    """
    return TrainingRun(
        _as_list(model), _as_list(optimizer), every=every, histograms=histograms, total=total, display=display, refresh=refresh
    )


def log(**values: Any) -> None:
    """Record named scalars (numbers or 1-element tensors) for the current step of a run.

    Tensors stay on their device until the next refresh. Outside a run it does nothing.
    """
    monitor = active_monitor()
    if monitor is not None:
        monitor.log(values)
