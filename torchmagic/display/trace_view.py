"""Module and cell results of ``%tensor_inspect`` shown, as HTML and text.

A module: its layer-by-layer trace and its parameter table. A cell: the torch ops it ran, by
source line, and its findings (shape errors, meaning-changing broadcasts).
"""

from __future__ import annotations

from html import escape

from torchmagic.core.formatting import nbytes, number
from torchmagic.core.inspect_result import Finding, InspectResult
from torchmagic.display.tensor_view import kv, shape_text


def finding_html(f: Finding) -> str:
    cls = "tm-finding tm-broadcast" if f.kind == "broadcast" else "tm-finding"
    label = {"shape_error": "shape error", "broadcast": "broadcast", "op_error": "error"}.get(f.kind, f.kind)
    if f.kind in ("shape_error", "op_error"):  # the message names the error and its line itself
        return f'<div class="{cls}">{escape(f.message)}</div>'
    where = f" line {f.line}" if f.line else ""
    return f'<div class="{cls}"><b>{escape(label)}</b>{escape(where)}: {escape(f.message)}</div>'


def _shapes_cell(value: str) -> str:
    return escape(value if len(value) <= 90 else value[:87] + "…")


def module_html(r: InspectResult) -> str:
    t = r.totals
    head = [
        kv("module", f"{r.name}: {r.module_type}"),
        kv("parameters", f"{t.get('params', 0):,}"),
        kv("trainable", f"{t.get('trainable', 0):,}"),
        kv("parameter memory", nbytes(t.get("param_bytes", 0))),
        kv("buffers", f"{t.get('buffers', 0):,} ({nbytes(t.get('buffer_bytes', 0))})"),
        kv("devices", ", ".join(t.get("devices", [])) or "–"),
    ]
    if r.flops is not None:
        head.append(kv("FLOPs", number(float(r.flops), 3)))
    if r.output:
        head.append(kv("output", r.output))
    parts = [f"<div>{''.join(head)}</div>"]
    if r.note:
        parts.append(f'<div class="tm-note">{escape(r.note)}</div>')
    if r.trace_rows:
        rows = []
        for row in r.trace_rows[:300]:
            indent = "&nbsp;&nbsp;" * row["depth"]
            name = row["module"] or "(root)"
            bad = ' class="tm-bad"' if row["output"] == "✗ raised" else ""
            flops = number(float(row["flops"]), 3) if row["flops"] else ""
            rows.append(
                f"<tr><td>{indent}<code>{escape(name)}</code></td><td>{escape(row['type'])}</td>"
                f"<td>{_shapes_cell(row['input'])}</td><td{bad}>{_shapes_cell(row['output'])}</td>"
                f"<td class='num'>{row['params']:,}</td><td class='num'>{flops}</td></tr>"
            )
        more = f"<tr><td colspan=6>… {len(r.trace_rows) - 300} more calls</td></tr>" if len(r.trace_rows) > 300 else ""
        parts.append(
            "<details open><summary>layer-by-layer trace</summary><table><tr><th>module</th><th>type</th>"
            "<th>input</th><th>output</th><th class='num'>params</th><th class='num'>FLOPs</th></tr>"
            + "".join(rows)
            + more
            + "</table></details>"
        )
    prow = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{p['kind']}</td>"
        f"<td>{escape(shape_text(p['shape']) if p['shape'] is not None else 'uninitialised')}</td>"
        f"<td>{escape(p['dtype'])}</td><td>{escape(p['device'])}</td><td class='num'>{p['count']:,}</td>"
        f"<td class='num'>{nbytes(p['bytes'])}</td><td>{'yes' if p['trainable'] else 'no'}</td></tr>"
        for p in r.parameters[:200]
    )
    parts.append(
        f"<details{' open' if not r.trace_rows else ''}><summary>parameters and buffers "
        f"({len(r.parameters)})</summary><table><tr><th>name</th><th>kind</th><th>shape</th><th>dtype</th>"
        f"<th>device</th><th class='num'>count</th><th class='num'>bytes</th><th>trainable</th></tr>{prow}</table></details>"
    )
    return "".join(parts)


def cell_html(r: InspectResult) -> str:
    parts = [f"<div>{kv('torch ops', str(sum(o.count for o in r.ops)))}{kv('distinct', str(len(r.ops)))}</div>"]
    parts += [finding_html(f) for f in r.findings]
    rows = []
    last = object()
    for o in r.ops[:400]:
        if o.line != last:
            src = r.source[o.line - 1].strip() if o.line and 0 < o.line <= len(r.source) else ""
            rows.append(
                f"<tr><td colspan=5 style='background:rgba(0,0,0,.03)'><b>line {o.line or '?'}</b> "
                f"<code>{escape(src[:120])}</code></td></tr>"
            )
            last = o.line
        count = f"×{o.count}" if o.count > 1 else ""
        rows.append(
            f"<tr><td><code>{escape(o.module or '')}</code></td><td>{escape(o.op)}</td>"
            f"<td>{_shapes_cell(o.inputs)}</td><td>{_shapes_cell(o.outputs)}</td><td>{count}</td></tr>"
        )
    if len(r.ops) > 400 or r.ops_dropped:
        rows.append(f"<tr><td colspan=5>… {max(len(r.ops) - 400, 0) + r.ops_dropped} more</td></tr>")
    parts.append(
        "<table><tr><th>module</th><th>op</th><th>inputs</th><th>outputs</th><th></th></tr>" + "".join(rows) + "</table>"
    )
    return "".join(parts)


def module_text(r: InspectResult) -> str:
    t = r.totals
    lines = [
        f"{r.name}: {r.module_type}  parameters={t.get('params', 0):,} (trainable {t.get('trainable', 0):,}, "
        f"{nbytes(t.get('param_bytes', 0))})  buffers={t.get('buffers', 0):,}"
        + (f"  FLOPs={number(float(r.flops), 3)}" if r.flops is not None else "")
    ]
    if r.note:
        lines.append(f"  ({r.note})")
    if r.trace_rows:
        width = min(40, max(len(row["module"] or "(root)") + 2 * row["depth"] for row in r.trace_rows) + 2)
        for row in r.trace_rows[:200]:
            name = ("  " * row["depth"] + (row["module"] or "(root)"))[:width]
            lines.append(f"  {name:<{width}} {row['type']:<18} {row['input']:<28} -> {row['output']}")
    else:
        for p in r.parameters[:50]:
            lines.append(
                f"  {p['name']:<30} {shape_text(p['shape']) if p['shape'] is not None else 'uninitialised':<18} "
                f"{p['dtype']:<5} {p['count']:>12,}  {'' if p['trainable'] else '(frozen)'}"
            )
    return "\n".join(lines)


def cell_text(r: InspectResult) -> str:
    lines = [r.summary()]
    lines += [f"  ! {f.message}" for f in r.findings]
    last = object()
    for o in r.ops[:200]:
        if o.line != last:
            src = r.source[o.line - 1].strip() if o.line and 0 < o.line <= len(r.source) else ""
            lines.append(f"line {o.line or '?'}: {src}")
            last = o.line
        where = f"[{o.module}] " if o.module else ""
        lines.append(f"    {where}{o.op}({o.inputs}) -> {o.outputs}" + (f"  ×{o.count}" if o.count > 1 else ""))
    return "\n".join(lines)
