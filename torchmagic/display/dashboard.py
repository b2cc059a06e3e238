"""The live dashboard: bokeh plots plus HTML sections, refreshed from monitor snapshots.

Two ways to reach the browser:

* ``lab`` — the lab extension's ``DashboardView``: each refresh is ONE custom widget message
  carrying every section, the progress and all curve points as float32 buffers;
* ``stock`` — stock ipywidgets + jupyter_bokeh (for front ends without the extension): the
  same content, more messages, so it refreshes less often.

When the run ends the live output is replaced by a static HTML snapshot (SVG charts), which
stays visible in a saved notebook, in nbconvert's HTML and in headless runs, and keeps the
notebook small; the widgets are then closed.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import ipywidgets
import numpy as np
from IPython.display import HTML, display
from jupyter_bokeh import BokehModel

from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import RunResult
from torchmagic.display import figures, panels, protocol
from torchmagic.display.series import Columns, Decimator, SeriesBatch, UpdateKind, ema
from torchmagic.display.svg import PALETTE
from torchmagic.display.widget import DashboardWidget

HIST_ROLLOVER_SNAPSHOTS = 64
LAYER_TABLE_INTERVAL = 2.0  # seconds between redraws of the (larger) layer table
STOCK_INTERVAL = 2.0  # the stock transport sends more messages per refresh: refresh less often
TRANSPORTS = ("lab", "stock")


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

    def __init__(self, title: str = "", *, histograms: bool = False, transport: str = "lab") -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
        self.transport = transport
        self.figs = figures.build(histograms)
        self.plot = BokehModel(self.figs.layout)
        self._steps = Decimator(2000)
        self._memory = Decimator(1000)
        self._layer_dec = Decimator(1000)
        self._ema: list[float | None] = []
        self._ema_last: float | None = None
        self._tracked: list[str] = []
        self._layer_cols: dict[str, list[float | None]] = {"x": []}
        self._layer_rows_seen = 0
        self._hist_last_step = 0
        self._sections: dict[str, str] = {}
        self._alerts_version = (0, 0)  # (number of alerts, sum of their counts) last drawn
        self._layers_at = 0.0
        self._last_send = 0.0
        self.messages_sent = 0
        if transport == "lab":
            self.widget: ipywidgets.Widget = DashboardWidget(plot=self.plot, title=title)
            self._children: list[ipywidgets.Widget] = [self.widget, self.plot]
        else:
            self._html = {name: ipywidgets.HTML() for name in protocol.SECTIONS}
            self._bar = ipywidgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="", layout={"width": "60%"})
            self._bar_label = ipywidgets.Label()
            row = ipywidgets.HBox([self._bar, self._bar_label])
            self.widget = ipywidgets.VBox(
                [self._html["header"], row, self._html["alerts"], self.plot, self._html["layers"], self._html["footer"]]
            )
            self._children = [self.widget, row, self._bar, self._bar_label, self.plot, *self._html.values()]
        self._handle = display(self.widget, display_id=True)
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
        updates = self._source_updates(snap.result)
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
        if r.alerts and (len(r.alerts), sum(a.count for a in r.alerts)) != self._alerts_version:
            self._alerts_version = (len(r.alerts), sum(a.count for a in r.alerts))
            fresh["alerts"] = f"<div class='tm-dash'>{panels.alerts(r)}</div>"
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

    def _source_updates(self, r: RunResult) -> list[SourceUpdate]:
        """An update for every source with something new."""
        out: list[SourceUpdate] = []
        cols = r.columns
        losses = cols.get("loss", [])
        smoothed, self._ema_last = ema(losses[len(self._ema) :], start=self._ema_last)
        self._ema.extend(smoothed)
        step_cols = {
            "x": cols.get("step", []),
            "loss": losses,
            "loss_smooth": self._ema,
            "lr": cols.get("lr", []),
            "rate": cols.get("samples_per_s", []),
        }
        batch = self._steps.take({k: v if v else [None] * len(step_cols["x"]) for k, v in step_cols.items()}, "x")
        if batch is not None:
            out.append(SourceUpdate.of(batch, self.figs.steps))
        mem = r.memory
        if mem.get("time"):
            n = len(mem["time"])
            mem_cols = {"t": mem["time"]}
            for key in ("rss", "cuda_allocated", "cuda_reserved"):
                mem_cols[key] = mem.get(key) or [None] * n
            batch = self._memory.take(mem_cols, "t")
            if batch is not None:
                for key in ("rss", "cuda_allocated", "cuda_reserved"):
                    batch.columns[key] = batch.columns[key] / np.float32(2**20)
                out.append(SourceUpdate.of(batch, self.figs.memory))
        self._collect_layer_rows(r)
        batch = self._layer_dec.take(self._layer_cols, "x")
        if batch is not None:
            out.append(SourceUpdate.of(batch, self.figs.layers))
        hist = self._histogram_update(r)
        if hist is not None:
            out.append(hist)
        return out

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
        global_norms = r.columns.get("grad_norm", [])
        for step in sorted(by_step):
            values = by_step[step]
            n = len(self._layer_cols["x"])
            self._layer_cols["x"].append(step)
            self._layer_cols.setdefault("gn", [None] * n).append(global_norms[step - 1] if step <= len(global_norms) else None)
            for i in range(figures.TRACKED_LAYERS):
                for prefix in ("g", "a"):
                    col = self._layer_cols.setdefault(f"{prefix}{i}", [None] * n)
                    col.append(values.get(f"{prefix}{i}"))

    def _histogram_update(self, r: RunResult) -> SourceUpdate | None:
        h = r.histograms
        if self.figs.hist is None or not h or not h["steps"] or h["steps"][-1] <= self._hist_last_step:
            return None
        step, counts = h["steps"][-1], h["counts"][-1][: figures.TRACKED_LAYERS]
        width = step - self._hist_last_step if self._hist_last_step else max(1, step)
        self._hist_last_step = step
        bins = len(counts[0]) if counts else 0
        ys = [k + (b + 0.5) / bins for k in range(len(counts)) for b in range(bins)]
        values = np.log1p(np.asarray(counts, dtype=np.float32)).reshape(-1)
        columns = {
            "x": np.full(len(ys), step - width / 2, dtype=np.float32),
            "y": np.asarray(ys, dtype=np.float32),
            "w": np.full(len(ys), width, dtype=np.float32),
            "v": values,
        }
        return SourceUpdate("stream", self.figs.hist, columns, HIST_ROLLOVER_SNAPSHOTS * len(ys))

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
        for name, html in sections.items():
            self._html[name].value = html
        fraction = progress["fraction"]
        self._bar.bar_style = "" if fraction is not None else "info"
        self._bar.value = fraction if fraction is not None else 1.0
        self._bar_label.value = progress["label"]
        for update in updates:
            data = {name: _nan_to_none(arr) for name, arr in update.columns.items()}
            if update.kind == "stream":
                update.source.stream(data, update.rollover)
            else:
                update.source.data = data

    # ------------------------------------------------------------------ end
    def freeze(self, result: RunResult, snap: Snapshot | None = None) -> None:
        """Replace the live output with the static snapshot and close every widget."""
        if self.frozen:
            return
        self.frozen = True
        try:
            self._handle.update(HTML(panels.snapshot_html(result, snap)))
        finally:
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


def _nan_to_none(arr: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in arr.tolist()]
