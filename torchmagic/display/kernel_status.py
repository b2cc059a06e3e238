"""The kernel's side of the lab extension's side panel and status-bar item.

The front end subscribes over the ``torchmagic`` comm (see :mod:`torchmagic.display.protocol`).
A kernel handles front-end messages only between cells, so the kernel pushes everything itself:

* events (the state when a kernel says hello, and ``interval: None``): a status message after
  each cell, and about once a second from the ``%%train`` refresh callback while a run goes;
* a period (the side panel is shown): the same, plus a publisher thread sending every
  ``interval`` seconds. The thread exists only while such a subscription holds; it is stopped
  and joined on unsubscribe, when the comm closes and on ``%unload_ext``;
* unsubscribed: nothing, except every ``UNWATCHED_RUN_INTERVAL`` seconds and at the end of a
  ``%%train`` run. A page loaded while the run goes (a reload) cannot ask for more until the cell
  ends, since requests wait behind the running cell; this way it still sees the run and its Stop.

Nothing here initialises CUDA: CUDA numbers are read only once the kernel's own code initialised
it, and NVML (``pynvml``) only when importable, only while subscribed.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from torchmagic._version import __version__
from torchmagic.display import protocol

RUN_PUBLISH_INTERVAL = 1.0  # seconds between status messages sent from a %%train refresh
UNWATCHED_RUN_INTERVAL = 5.0  # the same, while unsubscribed
BUSY_INTERVAL = 1.0  # seconds between the kernel's "busy" statuses during a run (see StatusPublisher.busy)

Send = Callable[[dict[str, Any]], None]


class StatusPublisher:
    """Builds and sends :class:`~torchmagic.display.protocol.StatusMessage` through ``send``."""

    def __init__(self, send: Send, busy: Callable[[], None] | None = None) -> None:
        self._send = send
        # Says "busy" in the kernel's own status on IOPub: a page loaded during a run (a reload) has
        # its kernel_info request waiting behind the cell and would read "Unknown" until the cell ends.
        self._busy = busy
        self._last_busy = 0.0
        self._lock = threading.Lock()
        self.subscribed = True  # events only, until the front end says otherwise
        self.interval: float | None = None
        self.seq = 0
        self._last_sent = 0.0
        self._run: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._nvml = _Nvml()

    # ------------------------------------------------------------------ subscription
    def subscribe(self, interval: float | None) -> None:
        self._stop_thread()
        self.subscribed = True
        self.interval = interval
        if interval is not None:
            self._wake.clear()
            self._thread = threading.Thread(target=self._loop, args=(interval,), name="torchmagic-status", daemon=True)
            self._thread.start()
        self.publish()

    def unsubscribe(self) -> None:
        self._stop_thread()
        self.subscribed = False
        self.interval = None
        self._nvml.close()

    def close(self) -> None:
        """Stops and joins the publisher thread; sends nothing more."""
        self.unsubscribe()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join()

    def _loop(self, interval: float) -> None:
        while not self._wake.wait(interval):
            if time.monotonic() - self._last_sent >= interval * 0.5:
                self.publish()

    # ------------------------------------------------------------------ events
    def after_cell(self) -> None:
        if self.subscribed:
            self.publish()

    def on_run_refresh(self, snapshot: Any, title: str = "") -> None:
        """A ``%%train`` refresh (on the kernel's main thread): keep the run's state, maybe send."""
        result = snapshot.result
        losses = result.columns.get("loss") or []
        loss = next((float(v) for v in reversed(losses) if v is not None), None)
        self._run = {
            "title": title,
            "status": result.status,
            "step": int(result.steps),
            "total": result.total_steps,
            "loss": loss if loss is not None and math.isfinite(loss) else None,
            "eta": float(snapshot.eta) if snapshot.eta is not None and math.isfinite(snapshot.eta) else None,
            "elapsed": float(result.elapsed) if result.elapsed else _elapsed(result),
        }
        now = time.monotonic()
        if self._busy is not None and not snapshot.final and now - self._last_busy >= BUSY_INTERVAL:
            self._last_busy = now
            try:
                self._busy()
            except Exception:  # noqa: BLE001 - a kernel without IOPub status: nothing to say it with
                self._busy = None
        period = RUN_PUBLISH_INTERVAL if self.subscribed else UNWATCHED_RUN_INTERVAL
        if snapshot.final or now - self._last_sent >= period:
            self.publish()

    # ------------------------------------------------------------------ messages
    def publish(self) -> None:
        try:
            message = self.build()
        except Exception:  # noqa: BLE001 - a reading failed; the next one may work
            return
        with self._lock:
            self._last_sent = time.monotonic()
            self._send(message)  # type: ignore[arg-type]

    def build(self) -> protocol.StatusMessage:
        from torchmagic.core import memtrack
        from torchmagic.core.memory import process_rss

        with self._lock:
            self.seq += 1
            seq = self.seq
        rss = process_rss()
        rows = memtrack.history()
        return {
            "kind": protocol.STATUS,
            "version": __version__,
            "seq": seq,
            "pid": os.getpid(),
            "interval": self.interval,
            "devices": self.devices(rss),
            "memory": {"rss": rss, "rss_peak": max(rss, memtrack.process_peak_rss())},
            "run": dict(self._run) if self._run is not None else None,  # type: ignore[typeddict-item]
            "recording": memtrack.recording(),
            "history": [_history_row(c.row()) for c in rows[-protocol.HISTORY_ROWS :]],
            "history_total": len(rows),
        }

    def devices(self, rss: int) -> list[protocol.DeviceStatus]:
        devices: list[protocol.DeviceStatus] = [
            {
                "id": "cpu",
                "name": "CPU",
                "source": "host",
                "allocated": None,
                "reserved": None,
                "peak": None,
                "used": rss,
                "total": _host_memory(),
            }
        ]
        import torch

        if torch.cuda.is_initialized():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                devices.append(
                    {
                        "id": f"cuda:{i}",
                        "name": props.name,
                        "source": "torch",
                        "allocated": torch.cuda.memory_allocated(i),
                        "reserved": torch.cuda.memory_reserved(i),
                        "peak": torch.cuda.max_memory_allocated(i),
                        "used": None,
                        "total": int(props.total_memory),
                    }
                )
        else:
            devices.extend(self._nvml.devices())
        return devices


def _elapsed(result: Any) -> float:
    times = result.columns.get("time") or []
    return float(times[-1]) if times else 0.0


def _history_row(row: dict[str, Any]) -> protocol.MemoryRow:
    return {
        "cell": row["cell"],
        "code": row["code"],
        "duration": float(row["duration"]),
        "rss_delta": int(row["rss_delta"]),
        "rss_peak": int(row["rss_peak"]),
        "cuda_delta": row["cuda_delta"],
        "cuda_peak": row["cuda_peak"],
        "top_module": row["top_module"],
    }


def _host_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


class _Nvml:
    """GPU memory through NVML, without a CUDA context; only if ``pynvml`` is importable."""

    def __init__(self) -> None:
        self._module: Any = None
        self._failed = False

    def _init(self) -> Any:
        if self._module is None and not self._failed:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._module = pynvml
            except Exception:  # noqa: BLE001 - not installed, no driver: no NVML devices
                self._failed = True
        return self._module

    def devices(self) -> list[protocol.DeviceStatus]:
        nvml = self._init()
        if nvml is None:
            return []
        out: list[protocol.DeviceStatus] = []
        try:
            pid = os.getpid()
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
                used = None
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == pid and proc.usedGpuMemory is not None:
                        used = int(proc.usedGpuMemory)
                name = nvml.nvmlDeviceGetName(handle)
                out.append(
                    {
                        "id": f"cuda:{i}",
                        "name": name.decode() if isinstance(name, bytes) else str(name),
                        "source": "nvml",
                        "allocated": None,
                        "reserved": None,
                        "peak": None,
                        "used": used if used is not None else 0,
                        "total": int(info.total),
                    }
                )
        except Exception:  # noqa: BLE001
            return out
        return out

    def close(self) -> None:
        module, self._module = self._module, None
        self._failed = False
        if module is not None:
            try:
                module.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------- the kernel's one

_publisher: StatusPublisher | None = None


def install(send: Send, busy: Callable[[], None] | None = None) -> StatusPublisher:
    """The kernel's publisher, sending through ``send`` (the comm); replaces any earlier one."""
    global _publisher
    shutdown()
    _publisher = StatusPublisher(send, busy)
    return _publisher


def current() -> StatusPublisher | None:
    return _publisher


def shutdown() -> None:
    """Stops the publisher thread (joined) and forgets the publisher."""
    global _publisher
    publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.close()


def after_cell() -> None:
    if _publisher is not None:
        _publisher.after_cell()


def run_hook(title: str = "") -> Callable[[Any], None] | None:
    """A ``monitor.on_refresh`` callback that reports the run to the front end, if one listens."""
    if _publisher is None:
        return None
    publisher = _publisher

    def hook(snapshot: Any) -> None:
        if publisher is _publisher:
            publisher.on_run_refresh(snapshot, title)

    return hook
