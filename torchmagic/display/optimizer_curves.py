"""Loss and learning rate by optimizer, for loops with several (a GAN's D and G, one per layer).

The history has a row per optimizer step; drawn as one curve, the losses of the optimizers would
alternate in a zig-zag. Once a second optimizer stepped, the loss and learning-rate charts draw a
curve per optimizer over the loop's iterations instead (the core's ``iteration`` column): the
loss smoothed, the mean over an optimizer's steps of the iteration (five critic steps per
generator step make one point each), the learning rate as it ended the iteration. An iteration is
drawn once complete: when a later one began, or the run ended.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torchmagic.core.formatting import number
from torchmagic.core.result import RunResult
from torchmagic.display import chart_specs as specs
from torchmagic.display import svg
from torchmagic.display.series import Decimator, SeriesBatch, ema, halve

MAX_OPTIMIZER_LINES = 8  # curves drawn; the history keeps every optimizer
POINTS_KEPT = 8000  # points per curve held for the browser (then halved)
LOSS_TITLE, LR_TITLE = "loss by optimizer (smoothed)", "learning rate by optimizer"  # live and frozen


def several(result: RunResult) -> bool:
    return len(result.optimizer_names) > 1 and "optimizer" in result.columns


def loss_text(result: RunResult) -> str | None:
    """``opt_d 1.39 · opt_g 0.71``: the latest loss of each optimizer, or None with a single one."""
    if not several(result):
        return None
    names = result.optimizer_names[:MAX_OPTIMIZER_LINES]
    cols = result.columns
    window = 4 * len(result.optimizer_names) + 8  # enough rows back to meet every optimizer
    optimizers, losses = cols["optimizer"][-window:], cols["loss"][-window:] if "loss" in cols else []
    latest: dict[int, float] = {}
    for index, loss in zip(reversed(optimizers), reversed(losses)):
        if index is not None and loss is not None and int(index) not in latest:
            latest[int(index)] = float(loss)
    return " · ".join(f"{name} {number(latest.get(i))}" for i, name in enumerate(names))


def iteration_rows(cols: Mapping[str, Any], lines: int, start: int, stop: int) -> dict[int, dict[str, float]]:
    """Rows ``start..stop`` (whole iterations) by iteration: ``{iteration: {"l0": the mean loss of the
    first optimizer's steps in it, "r0": its last lr, …}}`` for the first ``lines`` optimizers."""
    its, opts = cols["iteration"][start:stop], cols["optimizer"][start:stop]
    losses, lrs = _rows(cols.get("loss"), start, stop), _rows(cols.get("lr"), start, stop)
    out: dict[int, dict[str, float]] = {}
    sums: dict[tuple[int, int], list[float]] = {}
    for it, opt, loss, lr in zip(its, opts, losses, lrs):
        if it is None or opt is None or opt >= lines:
            continue
        row = out.setdefault(int(it), {})
        if loss is not None:
            total = sums.setdefault((int(it), int(opt)), [0.0, 0.0])
            total[0], total[1] = total[0] + loss, total[1] + 1
            row[f"l{int(opt)}"] = total[0] / total[1]
        if lr is not None:
            row[f"r{int(opt)}"] = float(lr)
    return out


class OptimizerCurves:
    """The live dashboard's curves by optimizer: replaces the loss and lr lines once a second optimizer stepped."""

    def __init__(self, figs: Any) -> None:
        self.figs = figs
        self.source: Any = None  # x (iteration), s0.. (smoothed loss), r0.. (lr), one pair per optimizer
        self._lines = 0
        self._rows_seen = 0
        self._ema: dict[str, float | None] = {}
        self._points: dict[str, list[float | None]] = {}
        self._decimator = Decimator(1000)

    def batch(self, result: RunResult, final: bool) -> tuple[SeriesBatch, Any] | None:
        """New points for the curves by optimizer (drawing them first, the first time), or None."""
        if self.source is None:
            if not several(result):
                return None
            self._draw(result.optimizer_names)
        cols = result.columns
        stop = len(cols.get("step", ()))
        if not final:  # the open iteration waits for the next refresh
            its = cols["iteration"]
            last = its.last if hasattr(its, "last") else None
            while stop > self._rows_seen and its[stop - 1] == last:
                stop -= 1
        if stop > self._rows_seen:
            self._append(iteration_rows(cols, self._lines, self._rows_seen, stop))
            self._rows_seen = stop
        if len(self._points["x"]) > POINTS_KEPT:
            halve(self._points, "x")
            self._decimator.restart()
        with warnings.catch_warnings():  # a bucket of a curve with no values yet: "Mean of empty slice"
            warnings.simplefilter("ignore", RuntimeWarning)
            batch = self._decimator.take(dict(self._points), "x")
        return None if batch is None else (batch, self.source)

    def _append(self, rows: dict[int, dict[str, float]]) -> None:
        points = self._points
        for it in sorted(rows):
            row = rows[it]
            points["x"].append(float(it))
            for i in range(self._lines):
                loss = row.get(f"l{i}")
                smoothed, self._ema[f"s{i}"] = ema([loss], start=self._ema.get(f"s{i}"))
                points[f"s{i}"].append(smoothed[0] if loss is not None else None)
                points[f"r{i}"].append(row.get(f"r{i}"))

    def _draw(self, names: Sequence[str]) -> None:
        from bokeh.models import ColumnDataSource

        self._lines = min(len(names), MAX_OPTIMIZER_LINES)
        keys = ["x", *(f"{k}{i}" for i in range(self._lines) for k in "sr")]
        self._points = {k: [] for k in keys}
        self.source = ColumnDataSource({k: [] for k in keys}, name="tm-optimizers")
        for y, title in (("loss", LOSS_TITLE), ("lr", LR_TITLE)):
            fig = _figure_drawing(self.figs, y)
            if fig is None:
                continue
            fig.renderers = [r for r in fig.renderers if getattr(r, "data_source", None) is not self.figs.steps]
            for legend in fig.legend:
                legend.items = []
            fig.title.text = title
            if y == "lr":  # the frozen chart by optimizer has no note: which one would it name?
                self.figs.notes["lr"].drop()
            fig.xaxis.axis_label = "iteration"
            for i in range(self._lines):
                key = f"{'s' if y == 'loss' else 'r'}{i}"
                color = svg.PALETTE[i % len(svg.PALETTE)]
                fig.line("x", key, source=self.source, color=color, line_width=2 if y == "loss" else 1.5, legend_label=names[i])
            fig.legend.label_text_font_size = "9px"
            fig.legend.location = "top_right"
            fig.legend.spacing, fig.legend.padding = 0, 2


def _figure_drawing(figs: Any, column: str) -> Any:
    """The dashboard figure with a line of ``column`` from the steps source."""
    for child in getattr(figs.layout, "children", []):
        fig = child[0] if isinstance(child, tuple) else child
        for r in getattr(fig, "renderers", []):
            if getattr(r, "data_source", None) is figs.steps and getattr(r.glyph, "y", None) == column:
                return fig
    return None


def optimizer_charts(result: RunResult) -> list[str]:
    """The frozen snapshot's loss (smoothed) and learning rate by optimizer, over iterations."""
    cols = result.columns
    names = result.optimizer_names[:MAX_OPTIMIZER_LINES]
    rows = iteration_rows(cols, len(names), 0, len(cols.get("step", ())))
    xs = sorted(rows)
    losses = {name: ema([rows[it].get(f"l{i}") for it in xs]).values for i, name in enumerate(names)}
    lrs = {name: [rows[it].get(f"r{i}") for it in xs] for i, name in enumerate(names)}
    return [
        svg.line_chart(LOSS_TITLE, xs, losses, legend=True, x_title="iteration", y_title="loss"),
        svg.line_chart(LR_TITLE, xs, lrs, legend=True, x_title="iteration", y_title="lr", y_from_zero=specs.LR.y_from_zero),
    ]


def _rows(column: Any, start: int, stop: int) -> list[Any]:
    values = list(column[start:stop]) if column is not None else []
    return values + [None] * (stop - start - len(values))
