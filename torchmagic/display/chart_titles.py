"""What the dashboard's step charts share between the live (bokeh) and frozen (SVG) views, so a chart
and its frozen twin read the same: titles, the global norm's colour, the layers drawn by name, the logged values charted."""

from collections.abc import Iterable

from torchmagic.core.distributed.merge import SPREAD_COLUMNS
from torchmagic.display.series import SPREAD

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
