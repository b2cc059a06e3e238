"""What ranks and the kernel write into torch.distributed's store, and how it is encoded.

Everything goes through a ``Store`` (``TCPStore`` or a ``PrefixStore`` over one). Values are
JSON, never pickle: the store listens without authentication, so nothing read from it may run
code when decoded. Weights use ``torch.load(weights_only=True)`` for the same reason.

The libuv ``TCPStore`` drops the connection on a value over 8 MiB, so anything that can grow
(final results, weights) is written as :func:`put_blob` chunks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

# torch.distributed re-exports these from torch._C without listing them as public for type checkers
from torch.distributed import PrefixStore, Store, TCPStore  # type: ignore[attr-defined]

from torchmagic.core.alerts import Alert
from torchmagic.core.distributed import columns
from torchmagic.core.result import LayerInfo, LayerRow, RunResult

__all__ = ["PrefixStore", "Store", "TCPStore"]  # for the other modules of the package

CHUNK_BYTES = 4 << 20  # half the libuv store's 8 MiB message limit
LIVE_ROWS = 256  # history rows per live payload at most; the rest follows at the next refresh
LIVE_ALERTS = 20
ERROR_CHARS = 64_000  # the tail of a traceback kept in the store

STOP = "stop"  # set by the kernel on the first Ctrl-C
STOP_STEP = "stop/step"  # the step every rank stops after; the first rank to see STOP claims it
ERRORS = "errors"  # a counter: how many ranks reported an error (bumped last, when all is written)
ERROR_SEQ = "errors/seq"  # numbers the failures in the order they happened
WEIGHTS = "weights"  # rank 0's final state: a blob, or "file:<name>" in the kernel's private directory


def state_key(rank: int) -> str:
    return f"rank{rank}/state"


def ack_key(rank: int) -> str:
    return f"rank{rank}/ack"


def result_key(rank: int) -> str:
    return f"rank{rank}/result"


def error_key(rank: int) -> str:
    return f"rank{rank}/error"


def error_order_key(n: int) -> str:
    return f"error/{n}"  # holds the rank that was the n-th to fail


# ----------------------------------------------------------------- blobs
def set_bytes(store: Store, key: str, data: bytes) -> None:
    store.set(key, data)  # type: ignore[arg-type]  # the stub says str; the binding takes bytes as they are


def put_blob(store: Store, key: str, data: bytes) -> None:
    """Write ``data`` in chunks under ``key/<i>``; ``key`` (the count) is written last, so its
    presence means the whole blob is there."""
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    for i, chunk in enumerate(chunks):
        set_bytes(store, f"{key}/{i}", chunk)
    store.set(key, str(len(chunks)))


def has_key(store: Store, key: str) -> bool:
    return bool(store.check([key]))


def get_blob(store: Store, key: str, *, delete: bool = True) -> bytes:
    count = int(store.get(key))
    parts = [bytes(store.get(f"{key}/{i}")) for i in range(count)]
    if delete:  # the kernel's store keeps every value in memory until deleted
        for i in range(count):
            store.delete_key(f"{key}/{i}")
        store.delete_key(key)
    return b"".join(parts)


# ----------------------------------------------------------------- results
def result_to_json(result: RunResult) -> bytes:
    d = {
        "status": result.status,
        "steps": result.steps,
        "skipped_steps": result.skipped_steps,
        "elapsed": result.elapsed,
        "error": result.error,
        "alerts": [dataclasses.asdict(a) for a in result.alerts],
        "layers": [dataclasses.asdict(info) for info in result.layers],
        "columns": columns.plain(result.columns),
        "memory": columns.plain(result.memory),
        "histograms": result.histograms,
        "total_steps": result.total_steps,
        "layer_rows": [list(row) for row in result.layer_rows],
        "layer_rows_dropped": result.layer_rows_dropped,
    }
    return json.dumps(d, default=repr, separators=(",", ":")).encode()


def result_from_json(data: bytes) -> RunResult:
    d = json.loads(data)
    return RunResult(
        status=str(d["status"]),
        steps=int(d["steps"]),
        skipped_steps=int(d["skipped_steps"]),
        elapsed=float(d["elapsed"]),
        error=d["error"],
        alerts=[Alert(**a) for a in d["alerts"]],
        layers=[LayerInfo(**info) for info in d["layers"]],
        columns=columns.build(d["columns"]),
        memory=columns.build(d["memory"], memory=True),
        histograms=dict(d["histograms"]),
        total_steps=d["total_steps"],
        layer_rows=[LayerRow(int(s), str(n), str(k), float(v)) for s, n, k, v in d["layer_rows"]],
        layer_rows_dropped=int(d["layer_rows_dropped"]),
    )


# ----------------------------------------------------------------- live payloads
def compact(value: Any) -> Any:
    """Six significant digits: what a curve needs, about half the bytes of ``repr``."""
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return float(f"{value:.6g}")
    return value


@dataclass
class Payload:
    """One rank's refresh: the history rows the kernel has not acknowledged, and its vitals."""

    rank: int
    start: int  # index of the first row in ``rows`` in the rank's history
    rows: dict[str, list[Any]]
    alerts_start: int
    alerts: list[list[Any]]  # [kind, step, message, module, count]
    step: int
    status: str = "running"
    elapsed: float = 0.0
    fraction: float | None = None
    eta: float | None = None
    samples_per_s: float | None = None
    total_steps: int | None = None
    memory: dict[str, float | None] = field(default_factory=dict)  # the latest sample

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), default=repr, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Payload:
        d = json.loads(data)
        return cls(**d)

    @property
    def row_count(self) -> int:
        return len(self.rows.get("step", []))


def make_payload(result: RunResult, rank: int, acked_rows: int, acked_alerts: int, *, upto: int, **vitals: Any) -> Payload:
    """Rows ``acked_rows`` up to ``upto`` (at most ``LIVE_ROWS``), alerts from ``acked_alerts``."""
    cols = result.columns
    stop = min(columns.row_count(cols), upto, acked_rows + LIVE_ROWS)
    rows = {name: [compact(v) for v in values[acked_rows:stop]] for name, values in cols.items()}
    alerts = [[a.kind, a.step, a.message, a.module, a.count] for a in result.alerts[acked_alerts : acked_alerts + LIVE_ALERTS]]
    memory = {k: (v[-1] if v else None) for k, v in result.memory.items() if k not in ("time", "step")}
    return Payload(
        rank, acked_rows, rows, acked_alerts, alerts, result.steps, total_steps=result.total_steps, memory=memory, **vitals
    )


def parse_ack(value: bytes) -> tuple[int, int]:
    rows, alerts = value.split()
    return int(rows), int(alerts)


def format_ack(rows: int, alerts: int) -> str:
    return f"{rows} {alerts}"
