"""A live chart's note on a constant series — ``lr 0.05 (constant)`` under the line's left end — as
its frozen twin writes and places it (:func:`torchmagic.display.svg.constant_note`).

The kernel reads each refresh's new rows, so deciding costs only those rows, and nothing once the
series has varied; the note changes (one property patch) when what it says changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from bokeh.models import Label
from bokeh.plotting import figure

from torchmagic.display import svg

LABEL_NAME = "tm-constant-note"


def add_label(fig: figure, color: str) -> Label:
    """An empty note on ``fig``, in its plot area, ``svg.NOTE_INSET`` px from the left, under its value."""
    label = Label(
        name=LABEL_NAME,
        x=svg.NOTE_INSET,
        x_units="screen",
        y=0,
        text="",
        text_font_size=f"{svg.NOTE_PX}px",
        text_color=color,
        text_baseline="top",
        y_offset=-svg.NOTE_GAP,
    )
    fig.add_layout(label)
    return label


def shown(fig: Any) -> bool:
    """Whether ``fig`` has a note that is in use (the stock view's SVG then writes it too)."""
    return any(getattr(r, "name", None) == LABEL_NAME and r.visible for r in getattr(fig, "center", ()))


class ConstantNote:
    """The note of the series ``name``: shown while every finite value read so far is the same."""

    def __init__(self, label: Label, name: str) -> None:
        self.label, self.name = label, name
        self.value: float | None = None
        self.varies = False

    def read(self, values: Sequence[float | None] | np.ndarray) -> None:
        if self.varies:
            return
        arr = np.asarray(values, dtype=np.float64)  # None -> nan
        arr = arr[np.isfinite(arr)]
        if not arr.size:
            return
        if self.value is None:
            self.value = float(arr[0])
        self.varies = bool((arr != self.value).any())
        text = "" if self.varies else svg.constant_note(self.name, self.value)
        if self.label.text != text:
            self.label.update(text=text, y=self.value)

    def drop(self) -> None:
        """No note any more: the chart now draws other series (a curve per optimizer)."""
        self.varies = True
        self.label.update(text="", visible=False)
