"""The live dashboard: bokeh plots plus HTML sections, refreshed from monitor snapshots.

Two ways to reach the browser:

* ``lab`` — the lab extension's ``DashboardView``: each refresh is ONE custom widget message
  carrying every section, the progress and all curve points as float32 buffers;
* ``stock`` — stock ipywidgets + jupyter_bokeh (for front ends without the extension): the
  same content, more messages, so it refreshes less often.

When the run ends a static HTML snapshot (SVG charts) is shown: it is what a saved notebook,
nbconvert's HTML and headless runs keep, and it keeps the notebook small. With the lab transport
the finished live view stays above it, interactive (zoom, hover), and the snapshot is its *twin*: an
output of its own that the lab extension's CSS hides in a cell where the live view is rendered,
and shows wherever it is not (the widgets closed, the kernel gone, a reopened notebook). The
widgets of the last KEPT_INTERACTIVE finished dashboards stay open; an older one is closed when a
newer one finishes, and all of them at the kernel's exit. With the stock transport the live output
is replaced by the snapshot and its widgets closed at once.
"""

from __future__ import annotations

import atexit
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ipywidgets
import numpy as np
from IPython.display import HTML, display
from jupyter_bokeh import BokehModel

from torchmagic.core.distributed import DistributedSnapshot
from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import RunResult
from torchmagic.display import figures, panels, protocol
from torchmagic.display.histogram_curves import HistogramCurves
from torchmagic.display.logged_curves import LoggedCurves
from torchmagic.display.optimizer_curves import OptimizerCurves
from torchmagic.display.rank_curves import RankCurves
from torchmagic.display.series import Columns, Decimator, SeriesBatch, UpdateKind, as_float32, ema, halve
from torchmagic.display.stock_view import StockView
from torchmagic.display.svg import PALETTE
from torchmagic.display.widget import DashboardWidget

LAYER_TABLE_INTERVAL = 2.0  # seconds between redraws of the (larger) layer table
STOCK_INTERVAL = 2.0  # the stock transport sends more messages per refresh: refresh less often
TRANSPORTS = ("lab", "stock")
# The most new points one refresh streams per curve, so the bytes a second stay bounded whatever the
# step rate: a tight loop makes thousands of steps a second, and a plot a few hundred pixels wide
# shows no more than this many a refresh anyway.
POINTS_PER_REFRESH = 32
LAYER_POINTS_PER_REFRESH = 16
STEP_CURVES = ("x", "loss", "loss_smooth", "lr", "rate")
POINTS_KEPT = 8000  # points per curve the dashboard keeps (then halved): its memory is bounded on any run
MEMORY_CURVES = ("rss", "cuda_allocated", "cuda_reserved")
KEPT_INTERACTIVE = 3  # finished dashboards whose live view stays open (their widgets hold at most ~1000 points a curve)
TWIN_CLASS = "tm-dash-twin"  # the static snapshot next to a live view (see labextension/style/base.css)


class SourceUpdate(NamedTuple):
    """New points for one bokeh source: appended (``stream``, keeping ``rollover`` at most) or replacing all."""

    kind: UpdateKind
    source: Any  # a ColumnDataSource of the figures
    columns: Columns
    rollover: int | None = None

    @classmethod
    def of(cls, batch: SeriesBatch, source: Any) -> SourceUpdate:
        return cls(batch.kind, source, batch.columns)


class LiveDashboard:
    """A monitor ``on_refresh`` callback that draws the run and freezes it at the end."""

    def __init__(self, title: str = "", *, histograms: bool | Sequence[str] = False, transport: str = "lab") -> None:
        """``histograms``: draw the gradient histograms of the first parameters (True) or of those
        matching these glob patterns."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
        self.transport = transport
        self.figs = figures.build(bool(histograms))
        patterns = () if isinstance(histograms, bool) else tuple(histograms)
        self._hists = HistogramCurves(self.figs, patterns) if histograms else None
        # The stock view sends no BokehModel: front ends without the extension may load BokehJS from a CDN or not at all.
        self.plot = BokehModel(self.figs.layout) if transport == "lab" else None
        # Points each curve keeps in the browser: more than a plot is wide, and few enough that a
        # replace (the whole curve again, each time the decimation doubles) stays under 20 KB.
        self._steps = Decimator(1000)
        self._memory = Decimator(1000)
        self._layer_dec = Decimator(500)
        self._rows_seen = 0  # rows of the run's history already thinned into _points
        self._points: dict[str, list[float]] = {name: [] for name in STEP_CURVES}
        self._ranks: RankCurves | None = None  # distributed runs: the curves by rank
        self._by_optimizer = OptimizerCurves(self.figs)  # several optimizers: loss and lr by optimizer
        self._logged = LoggedCurves(self.figs, POINTS_PER_REFRESH)  # the user's logged values, a chart each
        self._ema_last: float | None = None
        self._tracked: list[str] = []
        self._layer_cols: dict[str, list[float | None]] = {"x": []}
        self._layer_rows_seen = 0
        self._rate_last: float | None = None  # where the smoothed throughput stands
        self._sections: dict[str, str] = {}
        self._alerts_version = (0, 0, 0)  # alerts, their counts, their message lengths last drawn (revised in place)
        self._layers_at = 0.0
        self._last_send = 0.0
        self.messages_sent = 0
        if transport == "lab":
            self.widget: ipywidgets.Widget = DashboardWidget(plot=self.plot, title=title)
            self._children: list[ipywidgets.Widget] = [self.widget, self.plot]
        else:
            self._stock = StockView(self.figs)
            self.widget = self._stock.widget
            self._children = self._stock.children
        self._handle = _show(self.widget)
        self.frozen = False

    # ------------------------------------------------------------------ refresh
    def __call__(self, snap: Snapshot) -> None:
        if self.frozen:
            return
        now = time.monotonic()
        if not snap.final and self.transport == "stock" and now - self._last_send < STOCK_INTERVAL:
            return
        self._last_send = now
        sections = self._changed_sections(snap, now)
        updates = self._source_updates(snap.result, snap.ranks if isinstance(snap, DistributedSnapshot) else None, snap.final)
        progress = {"fraction": snap.fraction, "label": panels.progress_label(snap)}
        if self.transport == "lab":
            self._send_lab(sections, progress, updates)
        else:
            self._apply_stock(sections, progress, updates)
        if snap.final:
            self.freeze(snap.result, snap)

    def _changed_sections(self, snap: Snapshot, now: float) -> dict[str, str]:
        r = snap.result
        fresh = {"header": f"<div class='tm-dash'>{panels.header(snap, 'running' if not snap.final else r.status)}</div>"}
        note = self._hists.note_html() if self._hists is not None else ""  # about the histograms chosen
        version = (len(r.alerts), sum(a.count for a in r.alerts), sum(len(a.message) for a in r.alerts), len(note))
        if (r.alerts or note) and version != self._alerts_version:
            self._alerts_version = version
            fresh["alerts"] = f"<div class='tm-dash'>{panels.alerts(r)}{note}</div>"
        if now - self._layers_at >= LAYER_TABLE_INTERVAL or snap.final:
            self._layers_at = now
            colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(self._tracked)}
            fresh["layers"] = f"<div class='tm-dash'>{panels.layers(r, colors)}</div>"
        if "footer" not in self._sections:
            fresh["footer"] = (
                f"{panels.STYLE}<div class='tm-dash' style='color:#888'>Ctrl-C or the kernel's "
                "stop button stops after the current step</div>"
            )  # the style travels once
        changed = {k: v for k, v in fresh.items() if self._sections.get(k) != v}
        self._sections.update(changed)
        return changed

    def _source_updates(self, r: RunResult, ranks: Mapping[int, Any] | None = None, final: bool = False) -> list[SourceUpdate]:
        """An update for every source with something new."""
        out: list[SourceUpdate] = []
        if ranks and len(ranks) > 1 and self._ranks is None and (len(r.columns.get("step", ())) >= 2 or final):
            self._add_rank_curves(r.columns, ranks)
        self._thin_new_steps(r.columns, ranks)
        if len(self._points["x"]) > POINTS_KEPT:
            halve(self._points, "x")
            self._steps.restart()
        curves: dict[str, Sequence[float | None]] = dict(self._points)
        batch = _take(self._steps, curves, "x")
        if batch is not None:
            out.append(SourceUpdate.of(batch, self.figs.steps))
        by_optimizer = self._by_optimizer.batch(r, final)
        if by_optimizer is not None:
            out.append(SourceUpdate.of(*by_optimizer))
        if self._ranks is not None and ranks:
            out.extend(SourceUpdate.of(batch, source) for batch, source in self._ranks.batches(r.memory, ranks))
        out.extend(SourceUpdate.of(batch, source) for batch, source in self._logged.batches(r.columns, ranks is not None, final))
        mem = r.memory
        if mem.get("time"):
            mem_cols: dict[str, Sequence[float | None]] = {"t": mem["time"]}
            mem_cols.update((key, mem[key]) for key in MEMORY_CURVES if mem.get(key))
            if mem.get("cuda_allocated") and mem["cuda_allocated"][-1] is not None:
                figures.show_cuda_memory(self.figs)  # the CUDA curves only where the run uses CUDA
            batch = _take(self._memory, mem_cols, "t")
            if batch is not None:
                points = len(batch.columns["t"])
                for key in MEMORY_CURVES:  # a series the run lacks (CUDA on a CPU run): gaps, as many as the batch
                    values = batch.columns.get(key)
                    batch.columns[key] = values / np.float32(2**20) if values is not None else np.full(points, np.nan, np.float32)
                out.append(SourceUpdate.of(batch, self.figs.memory))
        self._collect_layer_rows(r)
        if len(self._layer_cols["x"]) > POINTS_KEPT:
            halve(self._layer_cols, "x")
            self._layer_dec.restart()
        layer_curves: dict[str, Sequence[float | None]] = dict(self._layer_cols)
        batch = _take(self._layer_dec, layer_curves, "x")
        if batch is not None:
            out.append(SourceUpdate.of(batch, self.figs.layers))
        if self._hists is not None:
            out.extend(SourceUpdate("stream", source, columns, rollover) for source, columns, rollover in self._hists.updates(r))
        return out

    def _add_rank_curves(self, cols: Mapping[str, Any], ranks: Mapping[int, Any]) -> None:
        """The plots by rank, added at the first refresh with two steps (by then a rank that times its
        data and forward has sent that time, and a rank on CUDA its CUDA memory), and the rows the
        dashboard has already thinned."""
        self._ranks = RankCurves(self.figs, cols, ranks, POINTS_PER_REFRESH)
        self._ranks.append(cols, ranks, 0, self._rows_seen, thin(self._rows_seen, self._ranks.limit))

    def _thin_new_steps(self, cols: Mapping[str, Any], ranks: Mapping[int, Any] | None = None) -> None:
        """Append the history rows since the last refresh to ``_points`` (and to the curves by rank, the
        same rows), at most POINTS_PER_REFRESH of them."""
        start, stop = self._rows_seen, len(cols.get("step", ()))
        if stop <= start:
            return
        self._rows_seen = stop
        loss = _column(cols, "loss", start, stop)
        smoothed, self._ema_last = ema(loss.tolist(), start=self._ema_last)  # over every step, before thinning
        new = {
            "x": _column(cols, "step", start, stop),
            "loss": loss,
            "loss_smooth": as_float32(smoothed),
            "lr": _column(cols, "lr", start, stop),
            "rate": self._smoothed_rate(cols, start, stop),
        }
        self.figs.notes["lr"].read(new["lr"])  # every row, not only the points kept
        keep = thin(stop - start, POINTS_PER_REFRESH, extremes=loss)
        for name, values in new.items():
            self._points[name].extend(values[keep].tolist())
        if self._ranks is not None and ranks:  # the same rows, fewer of them where there are many curves
            limit = self._ranks.limit
            self._ranks.append(cols, ranks, start, stop, keep if limit >= POINTS_PER_REFRESH else thin(stop - start, limit))

    def _smoothed_rate(self, cols: Mapping[str, Any], start: int, stop: int) -> np.ndarray:
        """samples/s of each step is noisy (data loading, GC): smoothed like the loss, over every step."""
        smoothed, self._rate_last = ema(_column(cols, "samples_per_s", start, stop).tolist(), start=self._rate_last)
        return as_float32(smoothed)

    def _collect_layer_rows(self, r: RunResult) -> None:
        rows = r.layer_rows
        start = max(0, self._layer_rows_seen - r.layer_rows_dropped)
        if start >= len(rows):
            return
        self._layer_rows_seen = r.layer_rows_dropped + len(rows)
        by_step: dict[int, dict[str, float]] = {}
        for step, name, stat, value in rows[start:]:
            if stat == "grad_norm" and name not in self._tracked and len(self._tracked) < figures.TRACKED_LAYERS:
                self._tracked.append(name)
            if name in self._tracked and stat in ("grad_norm", "act_std"):
                i = self._tracked.index(name)
                by_step.setdefault(step, {})[("g" if stat == "grad_norm" else "a") + str(i)] = value
        global_norms: Sequence[float | None] = r.columns.get("grad_norm", [])
        steps = sorted(by_step)
        for step in (steps[i] for i in thin(len(steps), LAYER_POINTS_PER_REFRESH)):
            values = by_step[step]
            n = len(self._layer_cols["x"])
            self._layer_cols["x"].append(step)
            self._layer_cols.setdefault("gn", [None] * n).append(global_norms[step - 1] if step <= len(global_norms) else None)
            for i in range(figures.TRACKED_LAYERS):
                for prefix in ("g", "a"):
                    col = self._layer_cols.setdefault(f"{prefix}{i}", [None] * n)
                    col.append(values.get(f"{prefix}{i}"))

    # ------------------------------------------------------------------ transports
    def _send_lab(self, sections: dict[str, str], progress: dict[str, Any], updates: list[SourceUpdate]) -> None:
        buffers: list[bytes] = []
        streams: list[protocol.ColumnBatch] = []
        replace: list[protocol.ColumnBatch] = []
        for update in updates:
            index = {}
            for name, arr in update.columns.items():
                index[name] = len(buffers)
                buffers.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
            batch: protocol.ColumnBatch = {"source": update.source.id, "columns": index, "rollover": update.rollover}
            (streams if update.kind == "stream" else replace).append(batch)
        message: protocol.RefreshMessage = {
            "kind": protocol.REFRESH,
            "sections": sections,
            "progress": progress,
            "streams": streams,
            "replace": replace,
        }  # type: ignore[typeddict-item]
        self.widget.send_refresh(message, buffers)  # type: ignore[attr-defined]
        self.messages_sent += 1

    def _apply_stock(self, sections: dict[str, str], progress: dict[str, Any], updates: list[SourceUpdate]) -> None:
        self._stock.apply(sections, progress, updates)

    # ------------------------------------------------------------------ end
    def freeze(self, result: RunResult, snap: Snapshot | None = None) -> None:
        """Replace the live output with the static snapshot and close every widget."""
        if self.frozen:
            return
        self.frozen = True
        kept = False
        try:
            if self._handle is not None:  # None outside IPython: no output to replace
                patterns = self._hists.patterns if self._hists is not None else None
                snapshot = panels.snapshot_html(result, snap, histograms=patterns)
                if self.transport == "lab":
                    display(HTML(f"<div class='{TWIN_CLASS}'>{snapshot}</div>"))  # type: ignore[no-untyped-call]
                    kept = True
                else:
                    self._handle.update(HTML(snapshot))
        finally:
            if kept:
                _keep_interactive(self)
            else:
                self.close()

    def close(self) -> None:
        for w in self._children:
            try:
                w.close()
            except Exception:  # noqa: BLE001 - closing is best effort; the comm may be gone
                pass
        # BokehModel.close() raises KeyError when called again (its __del__ does): detaching the
        # layout from its document makes that second call a no-op.
        document = self.figs.layout.document
        if document is not None:
            document.remove_root(self.figs.layout)


_interactive: list[LiveDashboard] = []  # finished dashboards still open, oldest first


def _keep_interactive(dashboard: LiveDashboard) -> None:
    """Keep ``dashboard``'s widgets open; close the oldest beyond KEPT_INTERACTIVE (their twins then show)."""
    if not _interactive:
        atexit.register(close_interactive)
    _interactive.append(dashboard)
    while len(_interactive) > KEPT_INTERACTIVE:
        _interactive.pop(0).close()


def close_interactive() -> None:
    """Close the widgets of every finished dashboard still open (at the kernel's exit)."""
    while _interactive:
        _interactive.pop(0).close()
    atexit.unregister(close_interactive)


def _take(decimator: Decimator, columns: dict[str, Sequence[float | None]], x: str) -> SeriesBatch | None:
    # Averaging a bucket of a curve with no values yet (a layer slot not tracked) warns "Mean of empty
    # slice" from numpy despite errstate; inside a run that warning would become one of the run's alerts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return decimator.take(columns, x)


def _show(widget: ipywidgets.Widget) -> Any:
    """Display ``widget`` in a new output; its handle, or None outside IPython (where display() would print)."""
    from IPython.core.interactiveshell import InteractiveShell

    return display(widget, display_id=True) if InteractiveShell.initialized() else None  # type: ignore[no-untyped-call]


def thin(n: int, limit: int, extremes: np.ndarray | None = None) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` rows, in order: all of them when they fit, else the last
    row of each of equal buckets and, with ``extremes``, the rows of each bucket's lowest and highest
    finite value (a spike in the loss survives the thinning)."""
    if n <= limit:
        return np.arange(n)
    buckets = max(1, limit // 3 if extremes is not None else limit)
    bounds = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = set((bounds[1:] - 1).tolist())
    if extremes is not None:
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            finite = np.flatnonzero(np.isfinite(extremes[lo:hi]))
            if finite.size:
                values = extremes[lo:hi][finite]
                keep.update((lo + int(finite[values.argmin()]), lo + int(finite[values.argmax()])))
    return np.array(sorted(keep), dtype=np.int64)


def _column(cols: Mapping[str, Any], name: str, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of a history column as float32, NaN where the column is missing or short."""
    column = cols.get(name)
    values = as_float32(column[start:stop]) if column is not None else np.empty(0, np.float32)
    missing = stop - start - len(values)
    return np.concatenate([values, np.full(missing, np.nan, np.float32)]) if missing else values
