"""HTML for the dashboard's sections and for the frozen snapshot. Every user string is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from torchmagic.core.distributed import DistributedSnapshot
from torchmagic.core.formatting import duration, nbytes, number, rate
from torchmagic.core.monitor import Snapshot
from torchmagic.core.naming import MODEL_LABEL
from torchmagic.core.result import RunResult
from torchmagic.display import chart_specs as specs
from torchmagic.display import histograms as hist_charts
from torchmagic.display import optimizer_curves, series, svg
from torchmagic.display.chart_specs import TRACKED_LAYERS
from torchmagic.display.series import ema

STATUS_COLORS = {"running": "#1f77b4", "completed": "#2ca02c", "interrupted": "#ff7f0e", "failed": "#d62728"}
ALERT_ICONS = {
    "nonfinite": "NaN",
    "warning": "warn",
    "exploding_grad": "grad",
    "vanishing_grad": "grad",
    "oom": "OOM",
    "error": "err",
}
MESSAGE_CHARS = 300  # an alert or error shown is cut here: a warning's text is the user's, of any length
# Table cells: two classes and two types, to outrank JupyterLab's right-aligned
# `:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td` (text left, numbers right).
STYLE = """<style>
.tm-dash{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;color:var(--jp-ui-font-color1,#222)}
.tm-dash table{border-collapse:collapse;font-size:11px;margin:4px 0}
.tm-dash table td:not(.num),.tm-dash table th:not(.num),
.tm-dash table td.num,.tm-dash table th.num{padding:1px 6px;text-align:left;border-bottom:1px solid #eee;white-space:nowrap}
.tm-dash table td.num,.tm-dash table th.num{text-align:right;font-variant-numeric:tabular-nums}
.tm-dash .tm-changed{color:#d62728;font-weight:600}
.tm-dash .tm-alert{margin:2px 0;padding:2px 6px;border-left:3px solid #d62728;background:rgba(214,39,40,.06)}
.tm-dash .tm-alert.tm-warning{border-color:#ff7f0e;background:rgba(255,127,14,.06)}
.tm-dash .tm-badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-weight:600}
.tm-dash .tm-kv{display:inline-block;margin-right:14px}
.tm-dash .tm-charts svg{margin:2px 6px 2px 0}
</style>"""


def _last(values: Any) -> Any:
    if hasattr(values, "last"):
        return values.last  # history columns know it in O(1)
    return next((v for v in reversed(values) if v is not None), None)


def header(snap: Snapshot, status: str | None = None) -> str:
    r = snap.result
    status = status or r.status
    cols = r.columns
    loss = _last(cols.get("loss", []))
    lr = _last(cols.get("lr", []))
    elapsed = _last(cols.get("time", [])) if status == "running" else r.elapsed
    mem = r.memory
    parts = [
        f'<span class="tm-badge" style="background:{STATUS_COLORS.get(status, "#777")}">{escape(status)}</span>',
        _kv("step", f"{r.steps}" + (f" / ~{r.total_steps}" if r.total_steps else "")),
        _kv("loss", optimizer_curves.loss_text(r) or number(loss)),
        _kv("lr", number(lr, 3)),
        _kv("elapsed", duration(elapsed)),
    ]
    # A finished run has no live rate: its last measured one, else nothing rather than "throughput ?".
    throughput = snap.samples_per_s if snap.samples_per_s is not None else _last(cols.get("samples_per_s", []))
    if throughput is not None and math.isfinite(throughput):
        parts.insert(4, _kv("throughput", rate(throughput)))
    if snap.eta is not None and status == "running":
        parts.append(_kv("ETA", duration(snap.eta)))
    if r.skipped_steps:
        parts.append(_kv("skipped", str(r.skipped_steps)))
    if mem.get("rss"):
        parts.append(_kv("RSS", nbytes(_last(mem["rss"]))))
    if mem.get("cuda_allocated"):
        parts.append(_kv("CUDA", f"{nbytes(_last(mem['cuda_allocated']))} (peak {nbytes(_last(mem.get('cuda_peak', [])))})"))
    return " ".join(parts)


def _kv(key: str, value: str) -> str:
    return f'<span class="tm-kv"><b>{escape(key)}</b> {escape(value)}</span>'


def progress_label(snap: Snapshot) -> str:
    r = snap.result
    if snap.fraction is None:
        return f"step {r.steps}"
    eta = f" · ETA {duration(snap.eta)}" if snap.eta is not None and not snap.final else ""  # none once finished
    return f"{snap.fraction * 100:.0f}% · step {r.steps}" + (f"/~{r.total_steps}" if r.total_steps else "") + eta


def alerts(result: RunResult) -> str:
    if not result.alerts:
        return ""
    rows = []
    for a in result.alerts[:20]:
        cls = "tm-alert tm-warning" if a.kind == "warning" else "tm-alert"
        where = f" in <code>{escape(a.module)}</code>" if a.module else ""
        count = f" ×{a.count}" if a.count > 1 else ""
        rows.append(
            f'<div class="{cls}"><b>{escape(ALERT_ICONS.get(a.kind, a.kind))}</b> step {a.step}{where}: '
            f"{escape(_clip(a.message))}{count}</div>"
        )
    more = f"<div>… and {len(result.alerts) - 20} more</div>" if len(result.alerts) > 20 else ""
    return "".join(rows) + more


def layers(result: RunResult, colors: dict[str, str] | None = None, limit: int = 40) -> str:
    """The live shape table: each module's last input/output, shape changes, activation stats."""
    if not result.layers:
        return ""
    colors = colors or {}
    head = (
        "<tr><th>module</th><th>type</th><th>input</th><th>output</th><th class=num>act mean</th><th class=num>act std</th>"
        "<th class=num>zeros</th><th class=num>grad norm</th><th class=num>update/weight</th></tr>"
    )
    rows = []
    for info in result.layers[:limit]:
        changed = info.shape_changes > 0
        cls = ' class="tm-changed"' if changed else ""
        note = f' title="shape changed {info.shape_changes}× (last at step {info.last_change_step})"' if changed else ""
        swatch = f'<span style="color:{colors[info.name]}">■</span> ' if info.name in colors else ""
        name = info.name if info.name else MODEL_LABEL
        rows.append(
            f"<tr><td>{swatch}<code>{escape(name)}</code></td><td>{escape(info.type)}</td>"
            f"<td{cls}{note}>{escape(info.input)}</td><td{cls}{note}>{escape(info.output)}</td>"
            f"<td class=num>{number(info.act_mean, 3)}</td><td class=num>{number(info.act_std, 3)}</td>"
            f"<td class=num>{_percent(info.act_zeros)}</td><td class=num>{number(info.grad_norm, 3)}</td>"
            f"<td class=num>{number(info.update_ratio, 2)}</td></tr>"
        )
    more = f"<tr><td colspan=9>… {len(result.layers) - limit} more modules</td></tr>" if len(result.layers) > limit else ""
    legend = (
        "<div>shapes in <span class='tm-changed'>red</span> changed between steps (hover for when)</div>"
        if any(i.shape_changes for i in result.layers)
        else ""
    )
    summary = f"<summary>layers ({len(result.layers)})</summary>"
    return f"<details open>{summary}{legend}<table>{head}{''.join(rows)}{more}</table></details>"


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"


def _error(result: RunResult) -> str:
    """The exception that ended a failed run, its first line."""
    if not result.error:
        return ""
    first = result.error.strip().splitlines()[0] if result.error.strip() else result.error
    return f'<div class="tm-alert"><b>{escape(ALERT_ICONS["error"])}</b> {escape(_clip(first))}</div>'


def _percent(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if 0 < x < 0.005 or 0.995 < x < 1:  # never round a non-zero share to 0%, nor a partial one to 100%
        return "<1%" if x < 0.5 else ">99%"
    return f"{x * 100:.0f}%"


def snapshot_html(result: RunResult, snap: Snapshot | None = None, histograms: Sequence[str] | None = None) -> str:
    """The frozen dashboard: header, static charts, alerts and layer table; no scripts. ``histograms``:
    the patterns choosing the parameters whose gradient histograms are drawn (none: the first ones)."""
    snap = snap or Snapshot(result, None, None, None, final=True)
    cols = result.columns
    steps = cols.get("step", [])
    data, tracked = chart_data(result)
    charts = [chart_svg(spec, data[spec.source], tracked) for spec in specs.STEP_CHARTS if data[spec.source] is not None]
    if optimizer_curves.several(result):  # a curve per optimizer, not their losses in one zig-zag
        charts[:2] = optimizer_curves.optimizer_charts(result)
    mem = result.memory
    ranks = snap.ranks if isinstance(snap, DistributedSnapshot) and len(snap.ranks) > 1 else None
    if ranks:
        charts.extend(rank_charts(cols, ranks, mem))
    for name in specs.logged_columns(cols, isinstance(snap, DistributedSnapshot)):
        charts.append(chart_svg(specs.logged(name), {"x": steps, "y": cols[name]}))
    return (
        f'{STYLE}<div class="tm-dash"><div>{header(snap, result.status)}</div>'
        f'<div>{_error(result)}{alerts(result)}</div><div class="tm-charts">{"".join(charts)}</div>'
        f"{hist_charts.section_html(result.histograms, histograms or ())}{layers(result)}"
        f'<div style="color:#888">torchmagic · {escape(result.summary())}</div></div>'
    )


def _chart(title: str, xs: Sequence[Any], lines: dict[str, Sequence[Any]], **kw: Any) -> str:
    """A frozen chart drawn by rank, with the axis titles of its live twin (:func:`chart_specs.axis_titles`)."""
    x_title, y_title = specs.axis_titles(title)
    return svg.line_chart(title, xs, lines, x_title=x_title, y_title=y_title, **kw)


Columns = dict[str, Sequence[Any]]


def chart_svg(spec: specs.Chart, columns: Columns, tracked: Sequence[str] = ()) -> str:
    """The frozen twin of the live plot of ``spec``: its lines with data, a line per layer in ``tracked``."""
    series: dict[str, Sequence[Any]] = {}
    colors: list[str] = []
    for line in spec.lines:
        if line.column in columns:
            series[line.label] = columns[line.column]
            colors.append(line.color)
    if spec.layers is not None:
        for i, name in enumerate(tracked):
            series[name] = columns.get(f"{spec.layers}{i}", [])
            colors.append(spec.layer_color(i))
    return svg.line_chart(
        spec.title,
        columns.get(spec.x, []),
        series,
        log_y=spec.log_y,
        colors=colors,
        legend=spec.legend or (spec.layers is not None and bool(tracked)),  # the layers named, as the layer table does
        x_title=spec.x_title,
        y_title=spec.y_title,
        markers_up_to=spec.markers_up_to,
        y_from_zero=spec.y_from_zero,
        note_constant=spec.note_constant,
    )


def chart_data(result: RunResult) -> tuple[dict[str, Columns | None], list[str]]:
    """The columns of each chart source (:class:`chart_specs.Chart`) from a finished run, None for a
    source with nothing to draw, and the layers drawn by name (the first TRACKED_LAYERS with a gradient norm)."""
    cols = result.columns
    steps, norms, losses = cols.get("step", []), cols.get("grad_norm", []), cols.get("loss", [])
    data: dict[str, Columns | None] = {
        "steps": {
            "x": steps,
            "loss": losses,
            "loss_smooth": ema(losses).values,
            "lr": cols.get("lr", []),
            "rate": ema(cols.get("samples_per_s", [])).values,
        }
    }
    tracked: list[str] = []
    by_stat: dict[str, dict[str, dict[int, float]]] = {"grad_norm": {}, "act_std": {}}
    for step, name, stat, value in result.layer_rows:
        if stat == "grad_norm" and name not in tracked and len(tracked) < TRACKED_LAYERS:
            tracked.append(name)
        if stat in by_stat:
            by_stat[stat].setdefault(name, {})[step] = value
    scheduled = sorted({step for values in by_stat["grad_norm"].values() for step in values})
    grads: Columns = {
        "x": list(steps) if not scheduled else scheduled,
        "gn": list(norms) if not scheduled else [norms[s - 1] if s <= len(norms) else None for s in scheduled],
    }
    grads.update((f"g{i}", [by_stat["grad_norm"].get(name, {}).get(s) for s in scheduled]) for i, name in enumerate(tracked))
    data["grads"] = grads
    act_steps = sorted({step for values in by_stat["act_std"].values() for step in values})
    acts: Columns = {"x": act_steps}
    acts.update((f"a{i}", [by_stat["act_std"].get(name, {}).get(s) for s in act_steps]) for i, name in enumerate(tracked))
    data["acts"] = acts if act_steps else None
    mem = result.memory
    present = [line.column for line in specs.MEMORY.lines if line.column in mem]
    mib = {k: [None if v is None else v / 2**20 for v in mem[k]] for k in present}
    data["memory"] = {"t": mem["time"], **mib} if mem.get("time") else None
    return data, tracked


def rank_charts(cols: Any, ranks: Any, memory: Any = None) -> list[str]:
    """Loss, time, throughput and memory by rank, as the live dashboard draws them: a line per rank,
    or the p0-p100 band and the p50 line beyond ``series.MAX_RANK_LINES`` ranks."""
    curves = series.rank_curves(cols, ranks, 0, len(cols.get("step", ())))
    titles = {"l": "loss by rank", "t": series.rank_time_title(cols), "r": "throughput by rank (samples/s, smoothed)"}
    charts = [_by_rank(title, curves, "x", key, ranks) for key, title in titles.items()]
    if memory is not None and memory.get("time"):
        keys = series.rank_memory_keys(ranks)
        mib = {
            name: values if name == "t" else [None if v is None else v / 2**20 for v in values]
            for name, values in series.rank_memory_columns(memory, ranks, keys).items()
        }
        titles = {"m": "RSS by rank (MiB)", "c": "CUDA allocated by rank (MiB)"}  # over seconds, as the live ones
        charts.extend(_by_rank(titles[key], mib, "t", key, ranks) for key in keys)
    return charts


def _by_rank(title: str, curves: dict[str, Any], x: str, key: str, ranks: Any) -> str:
    labels = series.rank_labels(ranks)
    if labels:
        return _chart(title, curves[x], {label: curves[f"{key}{i}"] for i, label in enumerate(labels)})
    band = (curves[f"{key}_p0"], curves[f"{key}_p100"])
    return _chart(title, curves[x], {"p50": curves[f"{key}_p50"]}, band=band)


def html(result: RunResult) -> str:
    """A finished run shown in a notebook: the frozen dashboard."""
    return snapshot_html(result)


def text(result: RunResult) -> str:
    return repr(result)
