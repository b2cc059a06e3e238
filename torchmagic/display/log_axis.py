"""The live charts' log axes ticked and labelled as the frozen ones: :func:`axes.log_ticks` and
:func:`axes.log_label`, the same rule in JavaScript, which BokehJS runs on every redraw (a pan or a
zoom changes the range). BokehJS's own LogTicker gives two ticks over less than a decade (1 and
5 times a step only), and up to ten decades, labels crowding, over a wide range.
"""

from __future__ import annotations

import json
from typing import Any

from torchmagic.display import axes

MOST = 6

# axes.log_ticks (with axes._steps_inside); `cb_data` holds the axis's start and end (real values).
LOG_TICKS_JS = f"""
const most = {MOST}, mantissaSets = {json.dumps(axes.LOG_MANTISSAS)}, everies = {json.dumps(axes.LOG_EVERY)};
const lo = Math.min(cb_data.start, cb_data.end), hi = Math.max(cb_data.start, cb_data.end);
if (!(Number.isFinite(lo) && Number.isFinite(hi) && 0 < lo && lo < hi)) {{ return []; }}
const timesDecade = (m, d) => (d >= 0 ? m * 10 ** d : m / 10 ** -d);
const inside = (t) => lo * (1 - 1e-9) <= t && t <= hi * (1 + 1e-9);
if (hi < 2 * lo) {{
  const magnitude = 10 ** Math.floor(Math.log10((hi - lo) / most));
  let fallback = [];
  for (const m of [1, 2, 2.5, 5, 10, 20]) {{
    const step = m * magnitude;
    const first = Math.ceil(lo / step - 1e-9), last = Math.floor(hi / step + 1e-9);
    if (last - first + 1 > most) {{ continue; }}
    const steps = [];
    for (let k = first; k <= last; k++) {{
      const t = Number((k * step).toFixed(12));
      if (lo <= t && t <= hi) {{ steps.push(t); }}
    }}
    if (steps.length >= 4) {{ fallback = steps; break; }}
    if (fallback.length === 0) {{ fallback = steps; }}
  }}
  if (fallback.length >= 2) {{ return fallback; }}
}}
const first = Math.floor(Math.log10(lo)), last = Math.ceil(Math.log10(hi));
for (const mantissas of mantissaSets) {{
  const ticks = [];
  for (let d = first; d <= last; d++) {{
    for (const m of mantissas) {{
      const t = timesDecade(m, d);
      if (inside(t)) {{ ticks.push(t); }}
    }}
  }}
  if (ticks.length <= most) {{ return ticks; }}
}}
for (const every of everies) {{
  const ticks = [];
  for (let d = first; d <= last; d++) {{
    const t = timesDecade(1, d);
    if (d % every === 0 && inside(t)) {{ ticks.push(t); }}
  }}
  if (ticks.length <= most) {{ return ticks; }}
}}
return [lo, hi];
"""

# axes.log_label: "0.001" .. "1000", else "3e-05", "1e+04".
LOG_LABEL_JS = """
if (tick === 0 || !Number.isFinite(tick)) { return tick === 0 ? "0" : String(tick); }
const trim = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\\.$/, "") : s);
const [mantissa, exponent] = tick.toExponential(5).split("e");
const e = Number(exponent);
if (-3 <= e && e < 4) { return trim(tick.toFixed(Math.max(0, 5 - e))); }
return trim(mantissa) + "e" + (e < 0 ? "-" : "+") + String(Math.abs(e)).padStart(2, "0");
"""


def apply(fig: Any) -> None:
    """Ticks and labels of ``fig``'s (log) y axis as the frozen chart draws them."""
    from bokeh.models import CustomJSTicker, CustomJSTickFormatter

    fig.yaxis.ticker = CustomJSTicker(major_code=LOG_TICKS_JS)
    fig.yaxis.formatter = CustomJSTickFormatter(code=LOG_LABEL_JS)
