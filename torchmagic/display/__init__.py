"""Widgets, plots and text for training runs. Imports ipywidgets and bokeh only when used."""

from __future__ import annotations

from collections.abc import Callable

from torchmagic.core.monitor import Snapshot

DISPLAY_MODES = ("auto", "widgets", "stock", "lab", "text", "none")


def make_display(mode: str, *, title: str = "", histograms: bool = False) -> Callable[[Snapshot], None] | None:
    """The refresh callback for ``mode``: "auto", "widgets", "stock", "lab", "text" or "none".

    "widgets" is the dashboard: through the lab extension where it is there ("lab"), else through
    stock ipywidgets + jupyter_bokeh ("stock"), the two transports of ``LiveDashboard``.
    """
    from torchmagic.display import frontend

    if mode not in DISPLAY_MODES:
        raise ValueError(f"display mode must be one of {', '.join(DISPLAY_MODES)}; got {mode!r}")
    if mode == "auto":
        mode = "widgets" if frontend.in_kernel() else "text"
    if mode == "widgets":
        mode = "lab" if frontend.has_lab_extension() else "stock"
    if mode in ("lab", "stock"):
        from torchmagic.display.dashboard import LiveDashboard

        return LiveDashboard(title, histograms=histograms, transport=mode)
    if mode == "text":
        from torchmagic.display.text import TextProgress

        return TextProgress()
    return None
