"""One forked rank: join the process group through the kernel's store, run the cell under a
monitor, hand back the result (and, on rank 0, the weights), and report a failure.

Runs only in a child of :func:`~torchmagic.core.distributed.launch.run_distributed`; the child
ends with ``os._exit`` (see ``launch``), so nothing of the parent's (atexit, pytest) runs here.
"""

from __future__ import annotations

import io
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from torchmagic.core.distributed import protocol
from torchmagic.core.distributed.protocol import PrefixStore, Store, TCPStore
from torchmagic.core.distributed.rank import RankPublisher, StepBoundary
from torchmagic.core.monitor import TrainingMonitor

WEIGHTS_IN_STORE = 16 << 20  # bytes; larger states go through a file (see write_weights)
PG_PREFIX = "pg"


@dataclass
class WorkerSpec:
    """What a forked worker needs; it inherits the objects themselves through ``fork``."""

    rank: int
    world_size: int
    port: int
    backend: str  # "gloo" or "nccl"
    timeout: timedelta
    weights_dir: str
    threads: int
    models: list[torch.nn.Module] = field(default_factory=list)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    monitor_options: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"


def run_worker(spec: WorkerSpec, run_cell: Callable[[], object]) -> int:
    """The whole life of a rank; returns its exit code."""
    _set_env(spec)
    torch.set_num_threads(spec.threads)
    store = TCPStore(spec.host, spec.port, None, False, timeout=spec.timeout)
    error: str | None = None
    monitor: TrainingMonitor | None = None
    try:
        _join(spec, store)
        monitor, error = _train(spec, store, run_cell)
        if error is None and spec.rank == 0:
            write_weights(store, spec)
    except BaseException:  # noqa: BLE001 - a rank reports every failure, SystemExit included
        error = traceback.format_exc()
    if monitor is not None:
        if error is not None and monitor.result.status != "failed":
            monitor.result.status, monitor.result.error = "failed", error.strip().splitlines()[-1]
        protocol.put_blob(store, protocol.result_key(spec.rank), protocol.result_to_json(monitor.result))
    if error is not None:
        report_error(store, spec.rank, error)
        return 1  # no destroy_process_group: the peers may be stuck in a collective
    dist.destroy_process_group()
    return 0


def _set_env(spec: WorkerSpec) -> None:
    """What torchrun would set, for code that reads it; MASTER_PORT is left out on purpose: the
    group already exists, and a library hosting a store there would collide with the kernel's."""
    os.environ.update(
        RANK=str(spec.rank),
        LOCAL_RANK=str(spec.rank),
        WORLD_SIZE=str(spec.world_size),
        LOCAL_WORLD_SIZE=str(spec.world_size),
    )


def _join(spec: WorkerSpec, store: Store) -> None:
    """Initialise the default process group on a prefix of the kernel's store; NCCL: one GPU per rank."""
    kwargs: dict[str, Any] = {}
    if spec.backend == "nccl":
        device = torch.device("cuda", spec.rank)
        torch.cuda.set_device(device)
        for model in spec.models:
            model.to(device)
        kwargs["device_id"] = device
    dist.init_process_group(
        spec.backend,
        store=PrefixStore(PG_PREFIX, store),
        rank=spec.rank,
        world_size=spec.world_size,
        timeout=spec.timeout,
        **kwargs,
    )


def _train(spec: WorkerSpec, store: Store, run_cell: Callable[[], object]) -> tuple[TrainingMonitor, str | None]:
    boundary: list[StepBoundary] = []
    publisher = RankPublisher(store, spec.rank, lambda: boundary[0] if boundary else None)
    options = {k: v for k, v in spec.monitor_options.items() if k not in ("on_refresh", "catch_sigint")}
    monitor = TrainingMonitor(spec.models, spec.optimizers, catch_sigint=False, on_refresh=[publisher], **options)
    boundary.append(StepBoundary(monitor, store))
    try:
        with monitor, boundary[0]:
            run_cell()
    except KeyboardInterrupt:  # TrainingStopped: the agreed stop; the monitor says "interrupted"
        return monitor, None
    except BaseException as exc:  # noqa: BLE001
        tb = exc.__traceback__
        # from the cell down: this frame is the engine's, not the user's
        return monitor, "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))
    return monitor, None


def report_error(store: Store, rank: int, text: str) -> None:
    """The traceback under ``rank<r>/error``, its place in the order of failures (the kernel
    reports the first), and only then the counter the kernel watches."""
    store.set(protocol.error_key(rank), text[-protocol.ERROR_CHARS :])
    n = store.add(protocol.ERROR_SEQ, 1)
    store.set(protocol.error_order_key(n), str(rank))
    store.add(protocol.ERRORS, 1)


def write_weights(store: Store, spec: WorkerSpec) -> None:
    """Rank 0's final model and optimizer states, moved to the CPU (the kernel never touches CUDA).

    Small states go through the store: no disk, nothing to clean up. The store keeps a value in
    the kernel's memory until read and chunks it at 4 MiB, so beyond ``WEIGHTS_IN_STORE`` a file
    in the kernel's private (0700) directory is cheaper; only its name goes through the store."""
    state = {
        "models": [_to_cpu(m.state_dict()) for m in spec.models],
        "optimizers": [_to_cpu(o.state_dict()) for o in spec.optimizers],
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    if len(data) <= WEIGHTS_IN_STORE:
        protocol.put_blob(store, protocol.WEIGHTS, data)
        return
    path = os.path.join(spec.weights_dir, "rank0.pt")
    with open(path, "wb") as f:
        f.write(data)
    store.set(protocol.WEIGHTS, f"file:{os.path.basename(path)}")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value
