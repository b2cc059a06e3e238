"""Forked worker processes: start, reap, end. Nothing here knows about training.

Forking a process that has threads copies only the forking thread, so a child does as little
as it can before the work: it ignores SIGINT (the kernel coordinates Ctrl-C; Jupyter signals
the whole process group), asks to die with the kernel, closes the kernel's listening socket,
and always leaves through ``os._exit``: no atexit handler, no buffered output of the parent,
no pytest teardown runs twice.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

_PR_SET_PDEATHSIG = 1


@dataclass
class Exit:
    """How a worker ended: ``code`` as ``os.waitstatus_to_exitcode`` gives it (-N: signal N)."""

    code: int

    def describe(self) -> str:
        if self.code < 0:
            try:
                name = signal.Signals(-self.code).name
            except ValueError:
                name = f"signal {-self.code}"
            return f"was killed by {name}"
        return f"exited with code {self.code}"


@dataclass
class Workers:
    """The kernel's children, by rank."""

    pids: dict[int, int] = field(default_factory=dict)
    exits: dict[int, Exit] = field(default_factory=dict)

    def start(self, count: int, child: Callable[[int], int], close_fds: tuple[int, ...] = ()) -> None:
        """Fork ``count`` children; child ``r`` runs ``child(r)`` and exits with what it returns."""
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)  # or the children would flush the kernel's pending output again
        parent = os.getpid()
        for rank in range(count):
            pid = os.fork()
            if pid == 0:
                _child(rank, child, close_fds, parent)
            self.pids[rank] = pid

    @property
    def running(self) -> list[int]:
        return [r for r in self.pids if r not in self.exits]

    def reap(self, block: bool = False) -> list[int]:
        """Collect the children that have exited; returns their ranks."""
        ended = []
        for rank in self.running:
            try:
                pid, status = os.waitpid(self.pids[rank], 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): the code is lost
                pid, status = self.pids[rank], 255 << 8
            if pid:
                self.exits[rank] = Exit(os.waitstatus_to_exitcode(status))
                ended.append(rank)
        return ended

    def signal(self, signum: int) -> None:
        for rank in self.running:
            try:
                os.kill(self.pids[rank], signum)
            except ProcessLookupError:
                pass

    def end(self, grace: float) -> None:
        """SIGTERM, then SIGKILL to whoever is still there after ``grace`` seconds; reap all."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            self.reap()
            if self.running:
                time.sleep(0.02)
        self.kill()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        while self.running:
            self.reap(block=True)


def _child(rank: int, child: Callable[[int], int], close_fds: tuple[int, ...], parent: int) -> None:
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent(parent)
        for fd in close_fds:
            os.close(fd)
        code = child(rank)
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the kernel's code
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this child when the kernel dies, so a crashed kernel leaves no worker."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the kernel died before prctl took effect
        os._exit(1)


def _flush(stream: object) -> None:
    flush = getattr(stream, "flush", None)
    if flush is not None:
        try:
            flush()
        except Exception:  # noqa: BLE001 - a closed stream must not stop a start or an exit
            pass
