"""What a training run leaves behind: ``torchmagic.last_run()`` returns one of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from torchmagic.core.alerts import Alert
from torchmagic.core.history import History

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class LayerInfo:
    name: str
    type: str
    input: str = ""
    output: str = ""
    shape_changes: int = 0
    last_change_step: int | None = None
    act_mean: float | None = None
    act_std: float | None = None
    act_zeros: float | None = None
    grad_norm: float | None = None
    update_ratio: float | None = None


class LayerRow(NamedTuple):
    """One scheduled per-layer statistic: a row of :attr:`RunResult.layer_stats`."""

    step: int
    name: str
    stat: str  # "grad_norm", "update_ratio", "act_mean", "act_std" or "act_zeros"
    value: float


@dataclass
class RunResult:
    """The record of one run: status, steps, per-step history, alerts, layers, memory."""

    status: str = "running"  # "running", "completed", "interrupted" or "failed"
    steps: int = 0
    skipped_steps: int = 0
    elapsed: float = 0.0
    error: str | None = None
    alerts: list[Alert] = field(default_factory=list)
    layers: list[LayerInfo] = field(default_factory=list)
    # one row per step, in typed columns (``columns["loss"][-1]``, ``.last``); ``history`` is the DataFrame
    columns: History = field(default_factory=lambda: History(("step", "optimizer", "iteration")))
    memory: History = field(default_factory=History)  # one row per memory sample; None where one lacked the key
    histograms: dict[str, Any] = field(default_factory=dict)  # {"steps", "names", "counts", "edges"}
    total_steps: int | None = None
    # with several optimizers: their names, in order of first step; ``columns["optimizer"]`` indexes it
    optimizer_names: list[str] = field(default_factory=list)
    layer_rows: list[LayerRow] = field(default_factory=list, repr=False)
    layer_rows_dropped: int = 0  # oldest rows dropped to bound memory on very long runs

    @property
    def history(self) -> pd.DataFrame:
        """One row per optimizer step: step, time, loss, lr (lr_1… for more groups), logged metrics.
        With several optimizers also ``optimizer`` (the name of the one that stepped) and ``iteration``."""
        frame = self.columns.to_frame(index="step", empty=("step", "time", "loss", "lr"))
        if "optimizer" in frame:
            frame["optimizer"] = frame["optimizer"].map(dict(enumerate(self.optimizer_names)))
        return frame

    def optimizer_series(self, column: str = "loss") -> pd.DataFrame:
        """``column`` (loss, lr, grad_norm, …) of each optimizer: one column per optimizer name, one
        row per loop iteration (the mean where an optimizer stepped more than once in one). With a
        single optimizer, the column over steps."""
        history = self.history
        if "optimizer" not in history:
            return history[[column]] if column in history else history.iloc[:, :0]
        table = history.pivot_table(index="iteration", columns="optimizer", values=column, aggfunc="mean", sort=False)
        return table.reindex(columns=[n for n in self.optimizer_names if n in table.columns])

    @property
    def layer_stats(self) -> pd.DataFrame:
        """Scheduled per-layer statistics, long format: step, name, stat, value."""
        import pandas as pd

        return pd.DataFrame(self.layer_rows, columns=list(LayerRow._fields))

    @property
    def memory_history(self) -> pd.DataFrame:
        return self.memory.to_frame()

    @property
    def final_loss(self) -> float | None:
        loss = self.columns.get("loss")
        return None if loss is None else loss.last

    def summary(self) -> str:
        from torchmagic.core.formatting import duration

        parts = [f"{self.status}: {self.steps} steps in {duration(self.elapsed)}"]
        if self.final_loss is not None:
            parts.append(f"final loss {self.final_loss:.4g}")
        if self.skipped_steps:
            parts.append(f"{self.skipped_steps} skipped by GradScaler")
        if self.alerts:
            parts.append(f"{len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        lines = [f"<RunResult {self.summary()}>"]
        lines += [f"  {a}" for a in self.alerts[:10]]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)
