"""``run_distributed``: fork N ranks from the kernel, watch them through one store, merge one result.

The kernel binds a listening socket on 127.0.0.1 (port 0) *before* forking and hands it to its
``TCPStore`` afterwards (``master_listen_fd``): the port is known to the children without a race,
no store thread exists when ``fork`` runs, and the store is reachable from this machine only (a
``TCPStore`` that binds its own port listens on every interface).

While the ranks run, the kernel polls the store at the refresh rate: payloads in, acknowledgements
out, one merged :class:`~torchmagic.core.distributed.merge.DistributedSnapshot` to the callbacks.
Ctrl-C: the first sets ``stop`` (ranks agree on the step, see ``rank.StepBoundary``); the second
kills the ranks. A rank that reports an error or dies ends the others (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from torchmagic.core.distributed import protocol
from torchmagic.core.distributed.errors import CudaInitializedError, DistributedError, RankFailed
from torchmagic.core.distributed.merge import Collector, LiveMerge, merge_results, view_result
from torchmagic.core.distributed.processes import Workers
from torchmagic.core.distributed.protocol import Store, TCPStore
from torchmagic.core.distributed.worker import WorkerSpec, run_worker
from torchmagic.core.monitor import Snapshot
from torchmagic.core.result import RunResult

MAX_NPROC = 64
RANKS_PER_CORE = 4  # on CPU: beyond this the ranks only wait on each other
TERMINATE_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def check_nproc(nproc: object, backend: str) -> int:
    """``nproc`` as a rank count, or a :class:`DistributedError` saying what is allowed here."""
    if isinstance(nproc, bool) or not isinstance(nproc, int):
        raise DistributedError(f"nproc must be a whole number of processes, got {nproc!r}")
    if backend == "nccl":
        gpus = torch.cuda.device_count()
        limit, why = gpus, f"NCCL takes one GPU per rank; this machine has {gpus}"
    else:
        limit = min(MAX_NPROC, max(8, RANKS_PER_CORE * (os.cpu_count() or 1)))
        why = f"at most {RANKS_PER_CORE} CPU ranks per core, {MAX_NPROC} in all"
    if not 1 <= nproc <= limit:
        raise DistributedError(f"nproc must be between 1 and {limit} here, got {nproc} ({why})")
    return nproc


def choose_backend(backend: str | None) -> str:
    if backend is None:
        # device_count() asks NVML, which (unlike is_available()) leaves CUDA usable in forked children
        return "nccl" if torch.cuda.device_count() > 0 else "gloo"
    if backend not in ("gloo", "nccl"):
        raise DistributedError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    return backend


def run_distributed(
    run_cell: Callable[[], object],
    *,
    nproc: int,
    models: Iterable[torch.nn.Module] = (),
    optimizers: Iterable[torch.optim.Optimizer] = (),
    monitor_options: dict[str, Any] | None = None,
    on_refresh: Iterable[Callable[[Snapshot], None]] = (),
    timeout: float = 600.0,
    backend: str | None = None,
) -> RunResult:
    """Run ``run_cell()`` on ``nproc`` ranks forked from this process; return the merged result.

    Each rank runs it under its own :class:`~torchmagic.core.monitor.TrainingMonitor`
    (``monitor_options`` are its keyword arguments) with ``torch.distributed`` initialised (gloo
    on CPU; NCCL with GPU ``rank`` when there are GPUs). ``on_refresh`` callbacks get merged
    snapshots here. After the run, ``models`` and ``optimizers`` hold rank 0's final state.

    Returns the result with status "completed" or "interrupted" (Ctrl-C: the caller decides
    whether to raise); raises :class:`RankFailed` when a rank fails, with its traceback.
    ``timeout`` (seconds) bounds collectives and store operations, so a hung rank ends the run.
    """
    __tracebackhide__ = True  # IPython: the rank's own traceback is in the message
    if not hasattr(os, "fork"):
        raise DistributedError("distributed runs fork the ranks from this process, and this platform has no os.fork")
    backend = choose_backend(backend)
    nproc = check_nproc(nproc, backend)
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        raise CudaInitializedError()
    if dist.is_available() and dist.is_initialized():
        raise DistributedError(
            "this process already has a torch.distributed process group; forked ranks would inherit it: "
            "call torch.distributed.destroy_process_group() first"
        )
    _warm_imports()
    options = dict(monitor_options or {})
    session = _Session(nproc, backend, timedelta(seconds=timeout), list(models), list(optimizers), options)
    return session.run(run_cell, list(on_refresh))


class _Session:
    def __init__(
        self,
        nproc: int,
        backend: str,
        timeout: timedelta,
        models: list[torch.nn.Module],
        optimizers: list[torch.optim.Optimizer],
        options: dict[str, Any],
    ) -> None:
        self.nproc = nproc
        self.backend = backend
        self.timeout = timeout
        self.models = models
        self.optimizers = optimizers
        self.options = options
        self.interval = float(options.get("refresh_interval", 0.25))
        self.workers = Workers()
        self.live = LiveMerge(nproc)
        self.store: TCPStore | None = None
        self.stop_requested = False
        self.killed = False
        self.collector: Collector | None = None

    def run(self, run_cell: Callable[[], object], callbacks: list[Callable[[Snapshot], None]]) -> RunResult:
        __tracebackhide__ = True
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        weights_dir = tempfile.mkdtemp(prefix="torchmagic-ranks-")  # 0700
        restore: Callable[[], None] | None = None
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(max(128, self.nproc))
            port = listener.getsockname()[1]
            spec = WorkerSpec(0, self.nproc, port, self.backend, self.timeout, weights_dir, self._threads())
            spec.models, spec.optimizers, spec.monitor_options = self.models, self.optimizers, self.options
            self.workers.start(self.nproc, lambda r: run_worker(_for_rank(spec, r), run_cell), (listener.fileno(),))
            self.store = _host_store(listener, port, self.timeout)
            restore = _install_sigint(self._on_sigint)
            started = time.perf_counter()
            failure = self._watch(callbacks, started)
            return self._finish(callbacks, failure, weights_dir)
        except BaseException as exc:
            self._close()
            _forget_locals(exc)
            raise
        finally:
            self._close()
            if listener.fileno() != -1:
                listener.close()
            if restore is not None:
                restore()
            shutil.rmtree(weights_dir, ignore_errors=True)

    def _close(self) -> None:
        """No worker left (killed and reaped), and no reference to the store left here: its server
        and port close with the last reference. Idempotent."""
        self.workers.kill()
        self.store = self.collector = None

    def _threads(self) -> int:
        """Each rank's share of the cores (torchrun sets one thread per rank): N ranks of all the
        cores' threads each only wait on one another."""
        return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // self.nproc))

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt  # the second Ctrl-C: kill the ranks now
        self.stop_requested = True
        if self.store is not None:
            self.store.set(protocol.STOP, "1")

    # ----------------------------------------------------------------- while the ranks run
    def _watch(self, callbacks: list[Callable[[Snapshot], None]], started: float) -> tuple[int, str] | None:
        """Poll until every rank has exited; returns (rank, details) of the first failure, if any."""
        try:
            while self.workers.running:
                ended = self.workers.reap()
                self._poll(time.perf_counter() - started)
                failure = self._failure(ended)
                if failure is not None:
                    self.workers.end(TERMINATE_GRACE)
                    return failure
                snap = self.live.snapshot()
                for callback in callbacks:
                    callback(snap)
                if self.workers.running:
                    time.sleep(self.interval)
        except KeyboardInterrupt:
            self.workers.kill()
            self.killed = True
        return None

    def _poll(self, elapsed: float) -> None:
        if self.collector is None:
            self.collector = Collector(self._store(), self.live)
        self.collector.poll()
        for rank, exit in self.workers.exits.items():
            if self.live.ranks[rank].status == "running":
                self.live.finish(rank, "completed" if exit.code == 0 else "failed")
        self.live.update(elapsed)

    def _failure(self, ended: list[int]) -> tuple[int, str] | None:
        store = self._store()
        failure: tuple[int, str] | None = None
        if store.add(protocol.ERRORS, 0) > 0:
            # the first failure whose report is complete (an earlier one may still be writing its number)
            count = store.add(protocol.ERROR_SEQ, 0)
            n = next(n for n in range(1, count + 1) if protocol.has_key(store, protocol.error_order_key(n)))
            rank = int(store.get(protocol.error_order_key(n)))
            failure = rank, bytes(store.get(protocol.error_key(rank))).decode(errors="replace")
        for rank in ended:
            exit = self.workers.exits[rank]
            if failure is None and exit.code != 0:
                failure = rank, f"rank {rank} {exit.describe()} without reporting an error (see its output above)"
        if failure is None:
            return None
        done = [r for r, e in self.workers.exits.items() if e.code == 0 and r != failure[0]]
        if done:  # a peer that left early makes the others' collectives fail: say so, it is the likely cause
            steps = ", ".join(f"rank {r} after step {self.live.ranks[r].step}" for r in sorted(done))
            note = f"ranks that had already finished the cell: {steps} (ranks must make the same collective calls)"
            failure = failure[0], f"{failure[1].rstrip()}\n{note}"
        return failure

    # ----------------------------------------------------------------- after
    def _finish(
        self, callbacks: list[Callable[[Snapshot], None]], failure: tuple[int, str] | None, weights_dir: str
    ) -> RunResult:
        __tracebackhide__ = True
        if failure is None and not self.killed and self._store().add(protocol.ERRORS, 0) > 0:
            failure = self._failure([])  # a rank failed after the last poll
        failed = failure[0] if failure is not None else None
        results = {r: self._rank_result(r, "failed" if r == failed else "interrupted") for r in range(self.nproc)}
        merged = merge_results(results, [a for a in self.live.alerts.alerts if a.kind == "straggler"])
        if failure is not None and not merged.error:
            merged.error = f"rank {failure[0]}: {failure[1].strip().splitlines()[-1]}"
        if self.killed:
            merged.status = "interrupted"
            merged.error = "stopped at once by a second Ctrl-C; the ranks were killed and the models keep their weights"
        elif failure is None and results[0].status in ("completed", "interrupted"):
            self._load_weights(weights_dir)
        final = LiveMerge(self.nproc)
        for rank, result in results.items():
            final.load(rank, result)
        final.update(merged.elapsed)
        for name in ("status", "error", "alerts", "layers", "histograms", "layer_rows", "layer_rows_dropped", "total_steps"):
            setattr(final.result, name, getattr(merged, name))
        final.adopt_memory(self.live)  # sampled while the ranks ran: the largest rank's, the spread, by rank
        snap = final.snapshot(final=True)
        for callback in callbacks:
            callback(snap)
        if failure is not None:
            raise RankFailed(failure[0], failure[1], merged)
        return merged

    def _rank_result(self, rank: int, status_if_missing: str) -> RunResult:
        store = self._store()
        if protocol.has_key(store, protocol.result_key(rank)):
            return protocol.result_from_json(protocol.get_blob(store, protocol.result_key(rank)))
        return view_result(self.live.ranks[rank], status_if_missing)  # ended before it sent one: what came live

    def _load_weights(self, weights_dir: str) -> None:
        store = self._store()
        if not protocol.has_key(store, protocol.WEIGHTS):
            return
        marker = bytes(store.get(protocol.WEIGHTS))
        source: Any
        if marker.startswith(b"file:"):
            source = os.path.join(weights_dir, os.path.basename(marker[5:].decode()))
        else:
            source = io.BytesIO(protocol.get_blob(store, protocol.WEIGHTS))
        state = torch.load(source, map_location="cpu", weights_only=True)
        for model, model_state in zip(self.models, state["models"]):
            model.load_state_dict(model_state)
        for optimizer, optimizer_state in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(optimizer_state)

    def _store(self) -> TCPStore:
        if self.store is None:
            raise DistributedError("the run's store is closed")
        return self.store


def _forget_locals(exc: BaseException) -> None:
    """A raised exception keeps its frames; one that holds the store (as a local, or as the
    ``store`` of a local) would keep the store's port open for as long as the exception lives
    (a notebook keeps the last one). The store has no close(): such frames are cleared."""
    tb = exc.__traceback__
    while tb is not None:
        values = list(tb.tb_frame.f_locals.values())
        if any(isinstance(v, Store) or isinstance(getattr(v, "store", None), Store) for v in values):
            try:
                tb.tb_frame.clear()
            except RuntimeError:  # a frame still running
                pass
        tb = tb.tb_next


def _warm_imports() -> None:
    """Import here, once per kernel, what every rank would import on its own: DDP's constructor
    imports ``torch._dynamo`` (over a second of CPU), which N ranks on few cores pay N times."""
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass


def _for_rank(spec: WorkerSpec, rank: int) -> WorkerSpec:
    spec.rank = rank  # each child has its own copy of ``spec`` after fork
    return spec


def _host_store(listener: socket.socket, port: int, timeout: timedelta) -> TCPStore:
    """The master store on the already bound loopback socket (the store takes the descriptor)."""
    fd = listener.detach()
    try:
        return TCPStore("127.0.0.1", port, None, True, timeout=timeout, wait_for_workers=False, master_listen_fd=fd)
    except BaseException:
        os.close(fd)
        raise


def _install_sigint(handler: Callable[[int, Any], None]) -> Callable[[], None] | None:
    """Our handler while the ranks run, and how to put the previous one back; None where Python
    allows no handler (not the main thread)."""
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:
        return None

    def restore() -> None:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)

    return restore
