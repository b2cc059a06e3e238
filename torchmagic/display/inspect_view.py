"""``%tensor_inspect`` results as static HTML (escaped text, inline SVG, PNG data URIs) and as text.

No scripts and no downloads: the output survives notebook export and reads the same offline.
"""

from __future__ import annotations

from torchmagic.core.inspect_result import Finding, InspectResult
from torchmagic.display.tensor_view import tensor_html, tensor_text
from torchmagic.display.trace_view import cell_html, cell_text, finding_html, module_html, module_text

# Table cells: two classes and two types, to outrank JupyterLab's right-aligned
# `:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td` (text left, numbers right).
STYLE = """<style>
.tm-insp{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;color:var(--jp-ui-font-color1,#222)}
.tm-insp table{border-collapse:collapse;font-size:11px;margin:4px 0}
.tm-insp table td:not(.num),.tm-insp table th:not(.num),
.tm-insp table td.num,.tm-insp table th.num{padding:1px 6px;text-align:left;border-bottom:1px solid #eee;white-space:nowrap}
.tm-insp table td.num,.tm-insp table th.num{text-align:right;font-variant-numeric:tabular-nums}
.tm-insp .tm-kv{display:inline-block;margin-right:14px}
.tm-insp .tm-bad{color:#d62728;font-weight:600}
.tm-insp .tm-note{color:#777}
.tm-insp .tm-finding{margin:3px 0;padding:3px 6px;border-left:3px solid #d62728;background:rgba(214,39,40,.06)}
.tm-insp .tm-finding.tm-broadcast{border-color:#ff7f0e;background:rgba(255,127,14,.06)}
.tm-insp .tm-views>div{display:inline-block;vertical-align:top;margin:2px 10px 2px 0}
.tm-insp img{image-rendering:pixelated}
</style>"""


def html(result: InspectResult) -> str:
    body = {"tensor": tensor_html, "module": module_html, "cell": cell_html}[result.kind](result)
    return f'{STYLE}<div class="tm-insp">{body}</div>'


def explanation_html(finding: Finding) -> str:
    """What the notebook shows above the traceback of a failing cell."""
    return f'{STYLE}<div class="tm-insp">{finding_html(finding)}</div>'


def text(result: InspectResult) -> str:
    return {"tensor": tensor_text, "module": module_text, "cell": cell_text}[result.kind](result)


class Explanation:
    """A shape error's explanation, displayed above the traceback (HTML in a notebook, text elsewhere)."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding

    def _repr_html_(self) -> str:
        return explanation_html(self.finding)

    def __repr__(self) -> str:
        return self.finding.message
