"""What ``%tensor_inspect`` returns: one result type for a tensor, a module or a cell.

Plain data only (numbers, strings, small numpy arrays), so a result can be kept, compared and
displayed long after the tensor or model it describes has changed. Tables become pandas
DataFrames on first access; pandas is imported there, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class TensorCard:
    """What a tensor is, without looking at its values."""

    shape: Any  # tuple of ints; a list of tuples for a nested tensor
    dtype: str
    device: str
    layout: str
    strides: tuple[int, ...] | None
    contiguous: bool | None
    numel: int
    nbytes: int | None  # numel × element size; None where the layout hides it
    storage_bytes: int | None  # what the storage actually holds (smaller for expanded views)
    requires_grad: bool
    grad_fn: str | None
    has_grad: bool
    kind: str  # "dense", "meta", "fake", "sparse", "nested" or "quantized"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class View:
    """A picture of the values chosen by shape: image, heatmap, slices or per-channel table."""

    kind: str  # "image", "heatmap", "channels"
    title: str
    data: Any  # uint8 HxWxC image, float 2-D array, or a list of per-channel row dicts
    note: str = ""


@dataclass
class OpRecord:
    """A torch operation a cell ran (identical calls on one line are folded into ``count``)."""

    line: int | None
    module: str | None
    op: str
    inputs: str
    outputs: str
    count: int = 1


@dataclass
class Finding:
    """Something the cell did that deserves a look: a shape error or a meaning-changing broadcast."""

    kind: str  # "shape_error", "op_error" (an op failed for another reason) or "broadcast"
    message: str
    line: int | None = None
    module: str | None = None
    module_config: str | None = None
    op: str | None = None
    shapes: list[Any] = field(default_factory=list)


@dataclass
class InspectResult:
    """The record of one ``%tensor_inspect``: ``.stats`` for a tensor, ``.trace`` for a module, ``.ops`` for a cell."""

    kind: str  # "tensor", "module" or "cell"
    name: str
    card: TensorCard | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # why some part could not be shown
    histogram: tuple[np.ndarray, np.ndarray] | None = None  # (counts, edges) of a bounded sample
    sample_size: int = 0
    views: list[View] = field(default_factory=list)
    module_type: str | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    trace_rows: list[dict[str, Any]] = field(default_factory=list)
    flops: int | None = None
    output: str | None = None
    ops: list[OpRecord] = field(default_factory=list)
    ops_dropped: int = 0
    findings: list[Finding] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def trace(self) -> pd.DataFrame:
        """One row per module call: module, type, input_shapes, output_shapes, params, flops, input, output."""
        import pandas as pd

        columns = ["module", "type", "depth", "input_shapes", "output_shapes", "params", "flops", "input", "output"]
        return pd.DataFrame(self.trace_rows, columns=columns)

    @property
    def params(self) -> pd.DataFrame:
        """Parameters and buffers: name, kind, shape, dtype, device, count, bytes, trainable."""
        import pandas as pd

        columns = ["name", "kind", "shape", "dtype", "device", "count", "bytes", "trainable"]
        return pd.DataFrame(self.parameters, columns=columns)

    @property
    def ops_table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([vars(o) for o in self.ops], columns=["line", "module", "op", "inputs", "outputs", "count"])

    def summary(self) -> str:
        """One line; the notebook and terminal displays are in ``torchmagic.display.inspect_view``."""
        from torchmagic.core.formatting import number

        if self.kind == "tensor" and self.card is not None:
            shape = "×".join(str(d) for d in self.card.shape) if isinstance(self.card.shape, tuple) else "nested"
            if not self.stats:
                return f"tensor {self.name}: {self.card.dtype}[{shape}] on {self.card.device} ({self.note or 'no values'})"
            s = self.stats
            return (
                f"tensor {self.name}: {self.card.dtype}[{shape}] on {self.card.device} "
                f"min={number(s.get('min'))} max={number(s.get('max'))} mean={number(s.get('mean'))} "
                f"std={number(s.get('std'))} nan={s.get('nan', 0)} inf={s.get('posinf', 0) + s.get('neginf', 0)}"
            )
        if self.kind == "module":
            count = self.totals.get("params", 0)
            flops = f", {number(float(self.flops), 3)} FLOPs" if self.flops else ""
            return f"module {self.name}: {self.module_type}, {count:,} parameters, {len(self.trace_rows)} calls traced{flops}"
        errors = sum(1 for f in self.findings if f.kind == "shape_error")
        return (
            f"cell: {sum(o.count for o in self.ops)} torch ops on {len({o.line for o in self.ops})} lines, "
            f"{len(self.findings)} findings ({errors} shape errors)"
        )

    def __repr__(self) -> str:
        return f"<InspectResult {self.summary()}>"
