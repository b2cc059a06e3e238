"""Output paths checked before profiled code runs, and per-user folders in the shared temp directory.

Every check raises ``PathError`` (a ValueError) with one line naming the argument, so the magic
and the Python API refuse the same paths, before anything runs, instead of losing a result after.
Nothing existing is overwritten: a trace file is written under a temporary name and linked into
place only if the name is still free.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

PROBE_PREFIX = ".torchmagic-probe-"


class PathError(ValueError):
    """An output path that cannot or must not be written."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def writable_dir(path: str, arg: str, shown: str | None = None) -> str:
    """Create directory ``path`` if needed and prove it is writable (access check and a probe file)."""
    shown = path if shown is None else shown
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise PathError(f"{arg} {shown!r} is a file, not a directory") from None
    except NotADirectoryError:
        raise PathError(f"{arg} {shown!r} is below a file, not a directory") from None
    except OSError as exc:
        raise PathError(f"{arg} {shown!r} cannot be created: {_reason(exc)}") from None
    if not os.path.isdir(path):
        raise PathError(f"{arg} {shown!r} is not a directory")
    # os.access alone is not enough (root passes it, some network file systems lie): also write.
    probe = os.path.join(path, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise PathError(f"{arg} {shown!r} is not writable: {_reason(exc)}") from None
    return path


def trace_file_name() -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"profile-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}.pt.trace.json"


def check_trace_path(path: str, arg: str = "trace_path") -> str:
    """The absolute file the trace will be written to.

    An existing directory receives a new file with a generated name (the directory is kept); an
    existing file is refused, never overwritten; missing parent directories are created.
    """
    if not str(path).strip():
        raise PathError(f"{arg} must be a file or directory path, got {path!r}")
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        return os.path.join(writable_dir(full, arg, path), trace_file_name())
    if os.path.lexists(full):
        raise PathError(f"{arg} {path!r} already exists; choose a new file name (a trace is never overwritten)")
    parent = os.path.dirname(full)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise PathError(f"{arg} {path!r} is below a file, not a directory")
    writable_dir(parent, arg, path)
    return full


def check_run_dir(root: str, run_name: str | None, arg: str = "run_name") -> None:
    """A run name is a plain directory name; an existing run must be an empty directory."""
    if run_name is None:
        return
    if not run_name.strip() or "/" in run_name or os.sep in run_name or run_name.startswith("."):
        raise PathError(f"{arg} must be a plain directory name, got {run_name!r}")
    run_dir = os.path.join(root, run_name)
    if os.path.islink(run_dir) or (os.path.lexists(run_dir) and not os.path.isdir(run_dir)):
        raise PathError(f"{arg} {run_name!r}: {run_dir} exists and is not a directory")
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        raise PathError(f"{arg} {run_name!r}: {run_dir} already holds files; choose another run name")


def write_new(export: Callable[[str], Any], path: str) -> str:
    """``export(tmp)`` beside ``path``, then link it to ``path`` only if that name is still free.

    Returns the path written (``path``, or a sibling with a suffix if ``path`` appeared meanwhile).
    """
    folder, name = os.path.split(path)
    partial = os.path.join(folder, f".partial-{uuid.uuid4().hex[:8]}-{name}")  # keeps a .gz suffix
    try:
        export(partial)
        target, n = path, 0
        while True:
            try:
                os.link(partial, target)
                break
            except FileExistsError:
                n += 1
                stem, dot, ext = name.partition(".")
                target = os.path.join(folder, f"{stem}-{n}{dot}{ext}")
            except OSError:  # no hard links here: a rename, after checking the name once more
                if os.path.lexists(target):
                    raise
                os.replace(partial, target)
                break
    finally:
        if os.path.lexists(partial):
            os.remove(partial)
    return target


# ---------------------------------------------------------------------- private temp folders
def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def _own_dir(path: str) -> None:
    """Create ``path`` 0700, or accept it only as our own real directory without group/other write."""
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise PathError(f"{path} exists and is not a real directory (a symlink or a file); remove it or set TMPDIR")
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        raise PathError(f"{path} belongs to another user (uid {st.st_uid}); remove it or set TMPDIR")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def private_dir(*parts: str) -> str:
    """``<tempdir>/torchmagic-<uid>/<parts>``, each level a 0700 directory of ours (never a symlink)."""
    uid = _uid()
    path = os.path.join(tempfile.gettempdir(), f"torchmagic-{uid if uid is not None else 'user'}")
    _own_dir(path)
    for part in parts:
        path = os.path.join(path, part)
        _own_dir(path)
    return path
