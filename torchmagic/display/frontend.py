"""What the front end can do, learnt once per kernel through the ``torchmagic`` comm target.

At ``%load_ext`` the kernel opens a comm to the lab extension and says hello; the extension
answers when the cell is done. A later ``%%train`` then knows whether the one-message
dashboard view is there. Before any answer, JupyterLab is assumed (it ships with the
package), except where the environment shows another front end.
"""

from __future__ import annotations

import logging
import math
import os
import reprlib
from typing import Any

from torchmagic._version import __version__
from torchmagic.display import protocol

_state: dict[str, Any] = {"comm": None, "extension": None}


def open_hello_comm() -> None:
    """Say hello to the lab extension; harmless where there is no kernel or no extension."""
    if _state["comm"] is not None or not in_kernel():
        return
    try:
        from comm import create_comm
    except ImportError:
        return
    try:
        c = create_comm(target_name=protocol.COMM_TARGET, data={"kind": protocol.HELLO, "version": __version__})
    except Exception:  # noqa: BLE001 - a front end without comms: nothing to learn
        return
    c.on_msg(_on_message)
    c.on_close(_on_close)
    _state["comm"] = c
    from torchmagic.display import kernel_status

    kernel_status.install(c.send, _say_busy)


def _say_busy() -> None:
    """The kernel's IOPub status "busy", for the cell that runs now (what ipykernel sends as it starts one)."""
    from IPython import get_ipython

    kernel = get_ipython().kernel  # type: ignore[union-attr]
    kernel._publish_status("busy", "shell")


def _on_message(msg: dict[str, Any]) -> None:
    """Messages from the front end: validated; anything else is ignored with a log line."""
    content = msg.get("content") if isinstance(msg, dict) else None
    data = content.get("data") if isinstance(content, dict) else None
    kind = data.get("kind") if isinstance(data, dict) else None
    problem = message_problem(data)
    if problem is not None:
        _log(f"torchmagic: ignoring a front-end message ({problem}): kind {reprlib.repr(kind)}")
        return
    assert isinstance(data, dict)
    try:
        _handle(data)
    except Exception as error:  # noqa: BLE001 - the comm's handler must not raise into the kernel
        _log(f"torchmagic: a front-end message failed ({reprlib.repr(error)}): kind {reprlib.repr(kind)}")


def _handle(data: dict[str, Any]) -> None:
    from torchmagic.display import kernel_status

    kind = data["kind"]
    publisher = kernel_status.current()
    if kind == protocol.HELLO:
        _state["extension"] = data["version"]
    elif kind == protocol.SUBSCRIBE and publisher is not None:
        publisher.subscribe(None if data["interval"] is None else float(data["interval"]))
    elif kind == protocol.UNSUBSCRIBE and publisher is not None:
        publisher.unsubscribe()


def message_problem(data: Any) -> str | None:
    """Why a front-end message is invalid, or None when it is a valid one."""
    if not isinstance(data, dict):
        return "not an object"
    kind = data.get("kind")
    if kind == protocol.HELLO:
        return None if isinstance(data.get("version"), str) else "hello without a version"
    if kind == protocol.SUBSCRIBE:
        interval = data.get("interval", "missing")
        if interval is None:
            return None
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            return "subscribe with an interval that is not a number or null"
        # math.isfinite() on floats only: it overflows on a huge JSON integer
        if isinstance(interval, float) and not math.isfinite(interval):
            return "subscribe with an interval that is not a finite number"
        if not protocol.MIN_INTERVAL <= interval <= protocol.MAX_INTERVAL:
            return f"subscribe interval outside {protocol.MIN_INTERVAL}..{protocol.MAX_INTERVAL} s"
        return None
    if kind == protocol.UNSUBSCRIBE:
        return None
    return "unknown kind"


def _log(line: str) -> None:
    """One line in the kernel's log (not in a cell's output)."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        log = getattr(kernel, "log", None)
    except ImportError:
        log = None
    (log if log is not None else logging.getLogger(__name__)).warning(line)


def _on_close(msg: dict[str, Any]) -> None:
    """The front end closed the comm: stop publishing (and its thread)."""
    from torchmagic.display import kernel_status

    _state["comm"] = None
    kernel_status.shutdown()


def close_hello_comm() -> None:
    from torchmagic.display import kernel_status

    kernel_status.shutdown()
    c, _state["comm"] = _state["comm"], None
    if c is not None:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass


def in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def has_lab_extension() -> bool:
    if _state["extension"] is not None:
        return True
    return not any(key in os.environ for key in ("VSCODE_PID", "VSCODE_CWD", "COLAB_RELEASE_TAG", "DATABRICKS_RUNTIME_VERSION"))
