"""Runs in the layout TensorBoard's PyTorch Profiler plugin (torch-tb-profiler) reads, and its server.

Layout: ``LOGDIR/<run>/<worker>.<milliseconds>.pt.trace.json``, as
``torch.profiler.tensorboard_trace_handler`` writes it. The plugin scans a run directory once
and never re-reads a trace it saw half-written, so the trace is written under a name it does not
match (in a staging directory beside the runs) and moved into place with ``os.replace``.

The server is ours to start and stop: bound to 127.0.0.1 on a free (or the given) port, stopped at interpreter
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
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from torchmagic.core.safe_paths import PathError, check_run_dir, private_dir, writable_dir

STAGING_PREFIX = ".torchmagic-staging-"


LogdirError = PathError  # the log directory cannot be created or written


def worker_name() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


def check_logdir(logdir: str, arg: str = "logdir") -> str:
    """Create ``logdir`` if needed and prove it is writable; returns its absolute path."""
    return writable_dir(logdir, arg)


def default_logdir() -> str:
    """The per-user log directory ``--tensorboard`` uses without ``--logdir``."""
    return private_dir("tensorboard")


def default_run_name() -> str:
    return time.strftime("profile-%Y%m%d-%H%M%S") + f"-{uuid.uuid4().hex[:4]}"


def write_run(export: Callable[[str], None], logdir: str, run_name: str | None = None) -> tuple[str, str]:
    """Write one trace with ``export(path)`` and move it into ``logdir/run``; returns (run dir, trace path)."""
    root = check_logdir(logdir)
    check_run_dir(root, run_name)
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


def check_port(port: int, arg: str = "port") -> None:
    """Refuse a port outside 1..65535 or one that something already listens on at 127.0.0.1."""
    if not 0 < port < 65536:
        raise ValueError(f"{arg} must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to TensorBoard too
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ValueError(f"{arg} {port} is in use on 127.0.0.1 ({exc.strerror or exc}); choose another") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


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
        self._stderr: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def profiler_url(self) -> str:
        return self.url + "#pytorch_profiler"

    def command(self) -> list[str]:
        return [
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

    def start(self, timeout: float = 90.0) -> TensorBoard:
        """Start and wait until it answers; if it exits first, raise at once with its last stderr line."""
        # stderr goes to a file, not a pipe: a chatty server must never block on a full pipe.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"TensorBoard exited at start (code {code}): {_last_line(self._read_stderr())}")
            try:
                with urllib.request.urlopen(self.url + "data/plugins_listing", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"TensorBoard did not answer on {self.url} within {timeout:.0f}s")

    def _read_stderr(self) -> str:
        f = self._stderr
        if f is None:
            return ""
        f.seek(0)
        text: str = f.read().decode("utf-8", "replace")
        f.close()
        self._stderr = None
        return text

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
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_servers: dict[str, TensorBoard] = {}


def serve(logdir: str, port: int | None = None) -> TensorBoard:
    """The running TensorBoard for ``logdir`` (on ``port`` when given), started if there is none."""
    key = os.path.abspath(logdir)
    server = _servers.get(key)
    if server is not None and server.running and port not in (None, server.port):
        server.stop()
    if server is None or not server.running or port not in (None, server.port):
        server = _servers[key] = TensorBoard(key, port).start()
    return server


def serving(logdir: str, port: int) -> bool:
    """Whether our TensorBoard for ``logdir`` already runs on ``port`` (so the port is not "taken")."""
    server = _servers.get(os.path.abspath(logdir))
    return server is not None and server.running and server.port == port


def stop_all() -> None:
    while _servers:
        _, server = _servers.popitem()
        server.stop()


atexit.register(stop_all)
