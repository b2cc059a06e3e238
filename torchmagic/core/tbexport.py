"""Runs in the layout TensorBoard's PyTorch Profiler plugin (torch-tb-profiler) reads, and its server.

Layout: ``LOGDIR/<run>/<worker>.<milliseconds>.pt.trace.json``, as
``torch.profiler.tensorboard_trace_handler`` writes it. The plugin scans a run directory once
and never re-reads a trace it saw half-written, so the trace is written under a name it does not
match (in a staging directory beside the runs) and moved into place with ``os.replace``.

The server is ours to start and stop: bound to 127.0.0.1 on a free port, stopped at interpreter
exit (and, on Linux, when the kernel process dies).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable

STAGING_PREFIX = ".torchmagic-staging-"


class LogdirError(ValueError):
    """The log directory cannot be created or written."""


def worker_name() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


def check_logdir(logdir: str) -> str:
    """Create ``logdir`` if needed and prove it is writable; returns its absolute path."""
    path = os.path.abspath(os.path.expanduser(logdir))
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f"{STAGING_PREFIX}probe-{uuid.uuid4().hex}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as exc:
        raise LogdirError(f"cannot write to log directory {logdir!r}: {exc.strerror or exc}") from None
    return path


def default_run_name() -> str:
    return time.strftime("profile-%Y%m%d-%H%M%S") + f"-{uuid.uuid4().hex[:4]}"


def write_run(export: Callable[[str], None], logdir: str, run_name: str | None = None) -> tuple[str, str]:
    """Write one trace with ``export(path)`` and move it into ``logdir/run``; returns (run dir, trace path)."""
    root = check_logdir(logdir)
    run_dir = os.path.join(root, run_name or default_run_name())
    staging = os.path.join(root, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        final_name = f"{worker_name()}.{int(time.time() * 1000)}.pt.trace.json"
        partial = os.path.join(staging, final_name + ".partial")  # never matches the plugin's pattern
        export(partial)
        os.makedirs(run_dir, exist_ok=True)
        final = os.path.join(run_dir, final_name)
        os.replace(partial, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_dir, final


# ---------------------------------------------------------------------- TensorBoard server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child before exec (Linux only)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; atexit still stops it
        pass


class TensorBoard:
    """A TensorBoard process serving ``logdir`` on 127.0.0.1."""

    def __init__(self, logdir: str, port: int | None = None) -> None:
        self.logdir = os.path.abspath(logdir)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def profiler_url(self) -> str:
        return self.url + "#pytorch_profiler"

    def start(self, timeout: float = 90.0) -> TensorBoard:
        cmd = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            self.logdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--reload_interval",
            "5",
        ]
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"TensorBoard exited at start (code {self.process.returncode})")
            try:
                with urllib.request.urlopen(self.url + "data/plugins_listing", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"TensorBoard did not answer on {self.url} within {timeout:.0f}s")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


_servers: dict[str, TensorBoard] = {}


def serve(logdir: str) -> TensorBoard:
    """The running TensorBoard for ``logdir``, started if there is none."""
    key = os.path.abspath(logdir)
    server = _servers.get(key)
    if server is None or not server.running:
        server = _servers[key] = TensorBoard(key).start()
    return server


def stop_all() -> None:
    while _servers:
        _, server = _servers.popitem()
        server.stop()


atexit.register(stop_all)
