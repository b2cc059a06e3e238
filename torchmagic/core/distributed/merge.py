"""Many ranks into one view: the live per-step aggregate, stragglers, and the final result.

The live aggregate has one row per step (what the single-process dashboard draws): the mean of
the loss and of logged metrics over ranks (with equal shards, the loss of the whole batch),
the slowest rank's times, the sum of throughputs, and p0/p50/p100 columns across ranks. A step
enters it only once every running rank has reported it, so the rows only ever grow. Memory is
sampled here, from each rank's latest reading, at most twice a second: the largest rank's value,
p0/p50/p100 across ranks, and each rank's own series (``RankView.memory_history``), all on the
kernel's clock so that the ranks share one time axis. The final :class:`RunResult` keeps every
rank's rows instead, with a ``rank`` column.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchmagic.core.alerts import Alert, AlertBook
from torchmagic.core.distributed import columns, protocol
from torchmagic.core.distributed.protocol import Payload, Store
from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import RunResult

STRAGGLER_FACTOR = 1.3
STRAGGLER_WINDOW = 20  # steps
STRAGGLER_FLOOR = 1e-3  # seconds: below this a ratio is timer noise
SPREAD_COLUMNS = ("loss", "step_time", "local_time", "samples_per_s")  # get _p0/_p50/_p100 columns across ranks
MEMORY_SPREAD = ("rss", "cuda_allocated")  # memory kept by rank, with _p0/_p50/_p100 columns across ranks
MEMORY_INTERVAL = 0.5  # seconds between memory samples
_REDUCERS: dict[str, Callable[[list[Any]], Any]] = {
    "time": max,
    "step_time": max,  # the step takes as long as its slowest rank
    "local_time": max,
    "samples_per_s": sum,  # the job's throughput
}


@dataclass
class RankView:
    """What the kernel holds of one rank: its history rows so far and its latest vitals."""

    rank: int
    columns: dict[str, list[Any]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    step: int = 0
    status: str = "running"
    elapsed: float = 0.0
    fraction: float | None = None
    eta: float | None = None
    samples_per_s: float | None = None
    total_steps: int | None = None
    memory: dict[str, float | None] = field(default_factory=dict)  # the latest reading the rank sent
    # MEMORY_SPREAD keys by sample of the aggregate's memory table (its "time" rows), None where unknown
    memory_history: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.columns.get("step", []))

    def value(self, name: str, step: int) -> Any:
        """The rank's value of ``name`` at ``step`` (rows are steps 1, 2, ... in order)."""
        steps = self.columns.get("step", [])
        if step > len(steps) or steps[step - 1] != step:
            return None
        column = self.columns.get(name)
        return column[step - 1] if column is not None else None


@dataclass
class DistributedSnapshot(Snapshot):
    """A :class:`Snapshot` whose ``result`` aggregates all ranks per step, with each rank's own view."""

    ranks: dict[int, RankView] = field(default_factory=dict)


def _reduce(name: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if name in _REDUCERS:
        return _REDUCERS[name](present)
    if name.startswith("lr") or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return present[0]  # the same on every rank (lr), or not a number
    return sum(present) / len(present)


class LiveMerge:
    """Folds rank payloads into :class:`RankView` s and a per-step aggregate :class:`RunResult`."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.ranks = {r: RankView(r) for r in range(world_size)}
        self.result = RunResult(total_steps=None)
        self.alerts = AlertBook()
        self._next_step = 1
        self._stragglers: set[int] = set()  # named once each

    # ----------------------------------------------------------------- input
    def absorb(self, payload: Payload) -> tuple[int, int]:
        """Take a payload's new rows and alerts; returns the rank's (rows, alerts) now held."""
        view = self.ranks[payload.rank]
        skip = view.rows - payload.start
        if 0 <= skip < payload.row_count:
            n = view.rows
            for name, values in payload.rows.items():
                view.columns.setdefault(name, [None] * n).extend(values[skip:])
            for column in view.columns.values():
                column.extend([None] * (view.rows - len(column)))
        skip = len(view.alerts) - payload.alerts_start
        if skip >= 0:
            for kind, step, message, module, count in payload.alerts[skip:]:
                alert = Alert(kind, step, message, module, count)
                view.alerts.append(alert)
                self._add_rank_alert(payload.rank, alert)
        view.step, view.status, view.elapsed = payload.step, payload.status, payload.elapsed
        view.fraction, view.eta, view.samples_per_s = payload.fraction, payload.eta, payload.samples_per_s
        view.total_steps, view.memory = payload.total_steps, payload.memory
        return view.rows, len(view.alerts)

    def load(self, rank: int, result: RunResult) -> None:
        """A rank's whole final result in place of what came live (full precision, every row)."""
        view = self.ranks[rank]
        view.columns, view.alerts = columns.plain(result.columns), list(result.alerts)
        view.step, view.status, view.elapsed = result.steps, result.status, result.elapsed

    def finish(self, rank: int, status: str) -> None:
        """The rank has ended (its process exited): steps it never reached do not wait on it."""
        self.ranks[rank].status = status

    def _add_rank_alert(self, rank: int, alert: Alert) -> None:
        self.alerts.add(alert.kind, alert.step, f"rank {rank}: {alert.message}", alert.module, key=f"{rank}:{alert}", rank=rank)

    # ----------------------------------------------------------------- the aggregate
    def update(self, elapsed: float) -> None:
        """Append the steps every running rank has reported; check for stragglers; sample memory."""
        views = list(self.ranks.values())
        reached = [v.rows for v in views if v.status == "running"]
        last = min(reached) if reached else max((v.rows for v in views), default=0)
        while self._next_step <= last:
            self._append_step(self._next_step, [v for v in views if v.rows >= self._next_step])
            self._next_step += 1
        self.result.steps = max((v.step for v in views), default=0)
        self.result.elapsed = max((v.elapsed for v in views), default=0.0)
        totals = [v.total_steps for v in views if v.total_steps is not None]
        self.result.total_steps = max(totals) if totals else None
        self._sample_memory(elapsed)
        self._check_stragglers()
        self.result.alerts = self.alerts.alerts

    def _append_step(self, step: int, views: list[RankView]) -> None:
        names = list(dict.fromkeys(name for v in views for name in v.columns))
        row: dict[str, Any] = {}
        for name in names:
            values = [v.value(name, step) for v in views]
            row[name] = step if name == "step" else _reduce(name, values)
            if name in SPREAD_COLUMNS:
                row.update(_spread(name, values))
        columns.append_row(self.result.columns, row)

    def _check_stragglers(self) -> None:
        """A rank whose median step time over the last steps is well above the other ranks'.

        Under DDP every rank waits for the slowest in the gradient all-reduce, so whole step
        times are alike; ``local_time`` (data loading and forward, the part no rank waits for
        another) is what differs, when the worker measured it."""
        medians: dict[int, float] = {}
        what = "local_time" if all(v.columns.get("local_time") for v in self.ranks.values()) else "step_time"
        for r, view in self.ranks.items():
            recent = [x for x in view.columns.get(what, [])[-STRAGGLER_WINDOW:] if isinstance(x, (int, float))]
            if len(recent) >= STRAGGLER_WINDOW:
                medians[r] = statistics.median(recent)
        if len(medians) < 2:
            return
        for r, mine in medians.items():
            others = statistics.median([m for q, m in medians.items() if q != r])
            if r not in self._stragglers and mine > STRAGGLER_FACTOR * others and mine - others > STRAGGLER_FLOOR:
                self._stragglers.add(r)
                label = "data + forward time" if what == "local_time" else "step time"
                message = (
                    f"rank {r}: straggler, {label} {mine * 1e3:.1f} ms (median of the last {STRAGGLER_WINDOW} steps) "
                    f"is {mine / others:.1f}x the other ranks' {others * 1e3:.1f} ms"
                )
                self.alerts.add("straggler", self.ranks[r].step, message, key=f"straggler:{r}", rank=r)

    def snapshot(self, final: bool = False) -> DistributedSnapshot:
        views = self.ranks.values()
        fractions = [v.fraction for v in views if v.fraction is not None]
        etas = [v.eta for v in views if v.eta is not None]
        rates = [v.samples_per_s for v in views if v.samples_per_s]
        return DistributedSnapshot(
            self.result,
            min(fractions) if fractions else None,
            max(etas) if etas else None,
            sum(rates) if rates else None,
            final,
            ranks=dict(self.ranks),
        )

    def _sample_memory(self, elapsed: float) -> None:
        """At most two rows a second: the largest rank's reading of each key (what runs out first),
        the spread across ranks, and each rank's own reading into its ``memory_history``."""
        mem = self.result.memory
        keys = sorted({k for v in self.ranks.values() for k in v.memory})
        times = mem.get("time")
        last = times[-1] if times else None
        if not keys or (last is not None and elapsed - last < MEMORY_INTERVAL):
            return
        n = columns.row_count(mem, "time")
        row: dict[str, Any] = {"time": elapsed, "step": self.result.steps}
        for key in keys:
            values = [v.memory.get(key) for v in self.ranks.values()]
            present = [x for x in values if isinstance(x, (int, float))]
            row[key] = max(present) if present else None
            if key in MEMORY_SPREAD:
                row.update(_spread(key, values))
        columns.append_row(mem, row, key="time")
        for view in self.ranks.values():
            for key in {*view.memory_history, *(k for k in keys if k in MEMORY_SPREAD)}:
                history = view.memory_history.setdefault(key, [])
                history.extend([None] * (n - len(history)))
                value = view.memory.get(key)
                history.append(value if isinstance(value, (int, float)) else None)

    def adopt_memory(self, other: LiveMerge) -> None:
        """The memory ``other`` sampled while the ranks ran (a merge of final results has none)."""
        self.result.memory = other.result.memory
        for rank, view in self.ranks.items():
            view.memory_history = other.ranks[rank].memory_history


def _spread(name: str, values: list[Any]) -> dict[str, Any]:
    """``name``'s p0/p50/p100 columns across ranks (None where no rank has a number)."""
    present = sorted(x for x in values if isinstance(x, (int, float)) and not isinstance(x, bool))
    return {
        f"{name}_p0": present[0] if present else None,
        f"{name}_p50": statistics.median(present) if present else None,
        f"{name}_p100": present[-1] if present else None,
    }


class Collector:
    """Reads every rank's latest payload from the store into a :class:`LiveMerge` and acknowledges
    the rows taken, so each rank's next payload starts after them."""

    def __init__(self, store: Store, live: LiveMerge) -> None:
        self.store = store
        self.live = live
        self._present: set[int] = set()  # ranks whose state key exists (a missing key would block a get)
        self._acks: dict[int, tuple[int, int]] = {}
        self.polls = 0
        self.bytes_read = 0  # payload bytes this side has read from the store (the traffic benchmark)

    def poll(self) -> None:
        for rank in self.live.ranks:
            if rank not in self._present and protocol.has_key(self.store, protocol.state_key(rank)):
                self._present.add(rank)
        ranks = sorted(self._present)
        values = self.store.multi_get([protocol.state_key(r) for r in ranks]) if ranks else []
        self.polls += 1
        self.bytes_read += sum(len(v) for v in values)
        for value in values:
            if not value:
                continue
            payload = Payload.decode(bytes(value))
            ack = self.live.absorb(payload)
            if self._acks.get(payload.rank) != ack:
                self._acks[payload.rank] = ack
                self.store.set(protocol.ack_key(payload.rank), protocol.format_ack(*ack))

    def finished(self) -> bool:
        """Every rank's last payload was a final one."""
        return all(view.status != "running" for view in self.live.ranks.values())


# ----------------------------------------------------------------- the final result
_STATUS_ORDER = ("failed", "interrupted", "running", "completed")


def merge_results(results: dict[int, RunResult], extra_alerts: Sequence[Alert] = ()) -> RunResult:
    """One result from every rank's: a row per rank and step (``rank`` column), alerts named by
    rank, rank 0's layers and histograms; steps, elapsed time and total the largest of any rank."""
    ranks = sorted(results)
    merged = RunResult(total_steps=None)
    history = {r: columns.plain(results[r].columns) for r in ranks}
    names = list(dict.fromkeys(["step", "rank", *(n for r in ranks for n in history[r])]))
    order = sorted((step, r, i) for r in ranks for i, step in enumerate(history[r].get("step", [])))
    rows = {name: [r if name == "rank" else _at(history[r], name, i) for _, r, i in order] for name in names}
    merged.columns = columns.build(rows, ("step", "rank")) if order else merged.columns
    memory = {r: columns.plain(results[r].memory) for r in ranks}
    names = list(dict.fromkeys(["time", "step", "rank", *(n for r in ranks for n in memory[r])]))
    samples = [(r, i) for r in ranks for i in range(len(memory[r].get("time", [])))]
    rows = {name: [r if name == "rank" else _at(memory[r], name, i) for r, i in samples] for name in names}
    merged.memory = columns.build(rows, ("step", "rank"), memory=True) if samples else merged.memory
    statuses = {results[r].status for r in ranks}
    merged.status = next((s for s in _STATUS_ORDER if s in statuses), "completed")
    merged.steps = max((results[r].steps for r in ranks), default=0)
    merged.skipped_steps = max((results[r].skipped_steps for r in ranks), default=0)
    merged.elapsed = max((results[r].elapsed for r in ranks), default=0.0)
    totals = [t for r in ranks if (t := results[r].total_steps) is not None]
    merged.total_steps = max(totals) if totals else None
    errors = [f"rank {r}: {results[r].error}" for r in ranks if results[r].error]
    merged.error = "; ".join(errors) or None
    alerts = [
        Alert(a.kind, a.step, f"rank {r}: {a.message}", a.module, a.count, {**a.details, "rank": r})
        for r in ranks
        for a in results[r].alerts
    ]
    merged.alerts = sorted([*alerts, *extra_alerts], key=lambda a: a.step)
    if ranks:
        first = results[ranks[0]]
        merged.layers, merged.histograms = first.layers, first.histograms
        merged.layer_rows, merged.layer_rows_dropped = first.layer_rows, first.layer_rows_dropped
    return merged


def _at(cols: columns.Plain, name: str, i: int) -> Any:
    column = cols.get(name)
    return column[i] if column is not None and i < len(column) else None


def view_result(view: RankView, status: str) -> RunResult:
    """A rank's result rebuilt from what the kernel holds live, for a rank that never sent one."""
    return RunResult(
        status=status,
        steps=view.step,
        elapsed=view.elapsed,
        alerts=list(view.alerts),
        columns=columns.build(view.columns) if view.columns else RunResult().columns,
        total_steps=None,
    )
