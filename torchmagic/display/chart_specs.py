"""The dashboard's charts, each described once and drawn twice: live by bokeh
(:mod:`torchmagic.display.figures`) and frozen as SVG (:mod:`torchmagic.display.panels`).

A :class:`Chart` says what a chart shows — its title, axis titles, scale, lines (column, legend label,
colour, style) and whether layers are drawn by name — and from which columns (``source``); each
view fills those columns its own way (the live one streams them, the frozen one reads the finished
run). Adding a line or a chart here adds it to both views.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from torchmagic.core.distributed.merge import SPREAD_COLUMNS
from torchmagic.display.series import SPREAD
from torchmagic.display.svg import PALETTE

STEP_AXIS = "step"
TIME_AXIS = "seconds"
TRACKED_LAYERS = 8  # layers drawn by name in the per-layer charts: the first with a gradient norm
GLOBAL_NORM_COLOR = "#222"
RAW_LOSS_COLOR = "#9ecae1"


@dataclass(frozen=True)
class Line:
    column: str  # the live source's field, the frozen data's key
    label: str  # the legend's entry, the frozen series' name
    color: str
    width: float = 1.0
    dash: str | None = None
    when_present: bool = False  # drawn once the run has it (CUDA memory on a CUDA run only)


@dataclass(frozen=True)
class Chart:
    title: str
    source: str  # "steps", "grads", "acts", "memory" or "logged" (a logged value's own): the columns it draws
    lines: tuple[Line, ...] = ()
    x: str = "x"  # the x column of its source
    x_title: str = STEP_AXIS
    y_title: str = ""
    log_y: bool = False
    y_from_zero: bool = False  # the y axis starts at 0 (a rate: its size matters, not only its changes)
    note_constant: bool = False  # a constant series says its value: "lr 0.05 (constant)"
    markers_up_to: int = 0  # a dot at each point while a series has at most this many (a value logged rarely)
    legend: bool = False
    layers: str | None = None  # column prefix of one line per tracked layer (g0 .. g7), named by the layer

    def layer_color(self, i: int) -> str:
        return PALETTE[i % len(PALETTE)]


LOSS = Chart(
    "loss",
    "steps",
    (Line("loss", "raw", RAW_LOSS_COLOR), Line("loss_smooth", "smoothed", PALETTE[0], width=2)),
    y_title="loss",
    legend=True,
)
LR = Chart("learning rate", "steps", (Line("lr", "lr", PALETTE[1]),), y_title="lr", y_from_zero=True, note_constant=True)
THROUGHPUT = Chart("throughput (samples/s, smoothed)", "steps", (Line("rate", "samples/s", PALETTE[2]),), y_title="samples/s")
GRAD_NORM = Chart(
    "grad norm (log scale): global (black), by layer",
    "grads",
    (Line("gn", "global", GLOBAL_NORM_COLOR, width=1.5),),
    y_title="grad norm (log)",
    log_y=True,
    layers="g",
)
MEMORY = Chart(
    "memory (MiB)",
    "memory",
    (
        Line("rss", "RSS", PALETTE[4]),
        Line("cuda_allocated", "CUDA allocated", PALETTE[3], when_present=True),
        Line("cuda_reserved", "CUDA reserved", PALETTE[5], dash="dashed", when_present=True),
    ),
    x="t",
    x_title=TIME_AXIS,
    y_title="MiB",
    legend=True,
)
ACTIVATION_STD = Chart("activation std by layer", "acts", y_title="std", layers="a")
# The grid's first charts, in this order in both views.
STEP_CHARTS = (LOSS, LR, THROUGHPUT, GRAD_NORM, MEMORY, ACTIVATION_STD)


# Axis titles (x, y) of the charts drawn by rank (distributed runs), in both views.
RANK_AXIS_TITLES = {
    "loss by rank": (STEP_AXIS, "loss"),
    "step time by rank (ms)": (STEP_AXIS, "ms"),
    "data + forward time by rank (ms)": (STEP_AXIS, "ms"),
    "throughput by rank (samples/s, smoothed)": (STEP_AXIS, "samples/s"),
    "RSS by rank (MiB)": (TIME_AXIS, "MiB"),
    "CUDA allocated by rank (MiB)": (TIME_AXIS, "MiB"),
}


def axis_titles(chart_title: str, x: str | None = None) -> tuple[str, str]:
    """The (x, y) axis titles of a chart not in STEP_CHARTS (by rank, a logged value: over steps, y
    untitled, its title says what it draws); ``x`` overrides the x title."""
    x_title, y_title = RANK_AXIS_TITLES.get(chart_title, (STEP_AXIS, ""))
    return x or x_title, y_title


# The user's logged values (``torchmagic.log``, a framework's eval_loss…): a chart each, titled by the
# column's name, for the first LOGGED_CHARTS of them; both views choose them with logged_columns().
LOGGED_CHARTS = 4
LOGGED_COLOR = PALETTE[0]
LOGGED_MARKERS_UP_TO = 60  # points: a dot at each while a logged value is sparse, the line alone once dense
_BUILTIN_COLUMNS = {"step", "time", "loss", "lr", "grad_norm", "samples_per_s", "step_time", "optimizer", "iteration"}
# the aggregate of a distributed run: percentiles across ranks and the ranks' local time, drawn by rank
_RANK_COLUMNS = {"local_time", *(f"{c}_{q}" for c in SPREAD_COLUMNS for q in SPREAD)}


def logged(name: str) -> Chart:
    """The chart of the logged value ``name``: titled by it, over steps, from the columns x (step) and y
    (its value) of the rows that have one."""
    line = Line("y", name, LOGGED_COLOR)
    return Chart(name, "logged", (line,), note_constant=True, markers_up_to=LOGGED_MARKERS_UP_TO)


def logged_columns(columns: Iterable[str], distributed: bool = False) -> list[str]:
    """The history columns drawn as charts of logged values, in the order they first appeared."""
    aggregate = _RANK_COLUMNS if distributed else set()
    logged = [k for k in columns if k not in _BUILTIN_COLUMNS and k not in aggregate and not k.startswith("lr_")]
    return logged[:LOGGED_CHARTS]
