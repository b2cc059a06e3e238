"""What the dashboard's step charts share between the live (bokeh) and frozen (SVG) views, so a chart
and its frozen twin read the same: titles, the global norm's colour, the layers drawn by name, the logged values charted."""

from collections.abc import Iterable

from torchmagic.core.distributed.merge import SPREAD_COLUMNS
from torchmagic.display.series import SPREAD
from torchmagic.display.svg import PALETTE

LOSS = "loss"
LR = "learning rate"
THROUGHPUT = "throughput (samples/s, smoothed)"
GRAD_NORM = "grad norm (log scale): global (black), by layer"
MEMORY = "memory (MiB)"
ACTIVATION_STD = "activation std by layer"
GLOBAL_NORM_COLOR = "#222"
TRACKED_LAYERS = 8  # layers drawn by name in the per-layer charts: the first with a gradient norm
# Line colours by series, the same in both views.
RAW_LOSS_COLOR = "#9ecae1"
SERIES_COLORS = {"loss_smooth": 0, "lr": 1, "rate": 2, "cuda_allocated": 3, "rss": 4, "cuda_reserved": 5}  # PALETTE index


def color(series_name: str) -> str:
    """A step series' line colour, in both views."""
    return PALETTE[SERIES_COLORS[series_name]]


# Axis titles (x, y) by chart title, in both views; a log axis says so. Charts not named here
# (logged values, a parameter's histograms) run over steps and are titled by what they draw.
STEP_AXIS = "step"
TIME_AXIS = "seconds"
GRAD_NORM_AXIS = "grad norm (log)"
AXIS_TITLES = {
    LOSS: (STEP_AXIS, "loss"),
    LR: (STEP_AXIS, "lr"),
    THROUGHPUT: (STEP_AXIS, "samples/s"),
    GRAD_NORM: (STEP_AXIS, GRAD_NORM_AXIS),
    MEMORY: (TIME_AXIS, "MiB"),
    ACTIVATION_STD: (STEP_AXIS, "std"),
    "loss by rank": (STEP_AXIS, "loss"),
    "step time by rank (ms)": (STEP_AXIS, "ms"),
    "data + forward time by rank (ms)": (STEP_AXIS, "ms"),
    "throughput by rank (samples/s, smoothed)": (STEP_AXIS, "samples/s"),
    "RSS by rank (MiB)": (TIME_AXIS, "MiB"),
    "CUDA allocated by rank (MiB)": (TIME_AXIS, "MiB"),
}


def axis_titles(chart_title: str, x: str | None = None) -> tuple[str, str]:
    """A chart's (x, y) axis titles; ``x`` overrides the x title (a by-rank memory chart: seconds)."""
    x_title, y_title = AXIS_TITLES.get(chart_title, (STEP_AXIS, ""))
    return x or x_title, y_title


# The user's logged values (``torchmagic.log``, a framework's eval_loss…): a chart each, titled by the
# column's name, for the first LOGGED_CHARTS of them; both views choose them with logged_columns().
LOGGED_CHARTS = 4
LOGGED_COLOR = 0  # PALETTE index
_BUILTIN_COLUMNS = {"step", "time", "loss", "lr", "grad_norm", "samples_per_s", "step_time", "optimizer", "iteration"}
# the aggregate of a distributed run: percentiles across ranks and the ranks' local time, drawn by rank
_RANK_COLUMNS = {"local_time", *(f"{c}_{q}" for c in SPREAD_COLUMNS for q in SPREAD)}


def logged_columns(columns: Iterable[str], distributed: bool = False) -> list[str]:
    """The history columns drawn as charts of logged values, in the order they first appeared."""
    aggregate = _RANK_COLUMNS if distributed else set()
    logged = [k for k in columns if k not in _BUILTIN_COLUMNS and k not in aggregate and not k.startswith("lr_")]
    return logged[:LOGGED_CHARTS]
