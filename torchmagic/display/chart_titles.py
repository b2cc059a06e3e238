"""What the dashboard's step charts share between the live (bokeh) and frozen (SVG) views, so a chart
and its frozen twin read the same: titles, the global norm's colour, the layers drawn by name."""

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
