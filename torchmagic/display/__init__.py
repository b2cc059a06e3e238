"""Widgets, plots and text for training runs. Imports ipywidgets and bokeh only when used."""

from __future__ import annotations

from collections.abc import Callable

from torchmagic.core.monitor import Snapshot


def make_display(mode: str, *, title: str = "", histograms: bool = False) -> Callable[[Snapshot], None] | None:
    """The refresh callback for ``mode``: "auto", "widgets", "lab", "text" or "none"."""
    from torchmagic.display import frontend

    if mode == "auto":
        mode = "widgets" if frontend.in_kernel() else "text"
    if mode == "widgets":
        mode = "lab" if frontend.has_lab_extension() else "stock"
    if mode in ("lab", "stock"):
        from torchmagic.display.dashboard import LiveDashboard

        return LiveDashboard(title, histograms=histograms, transport="lab" if mode == "lab" else "widgets")
    if mode == "text":
        from torchmagic.display.text import TextProgress

        return TextProgress()
    return None
