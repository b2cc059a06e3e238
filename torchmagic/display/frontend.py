"""What the front end can do, learnt once per kernel through the ``torchmagic`` comm target.

At ``%load_ext`` the kernel opens a comm to the lab extension and says hello; the extension
answers when the cell is done. A later ``%%train`` then knows whether the one-message
dashboard view is there. Before any answer, JupyterLab is assumed (it ships with the
package), except where the environment shows another front end.
"""

from __future__ import annotations

import os
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
    _state["comm"] = c


def _on_message(msg: dict[str, Any]) -> None:
    data = msg.get("content", {}).get("data", {})
    if isinstance(data, dict) and data.get("kind") == protocol.HELLO:
        _state["extension"] = str(data.get("version", ""))


def close_hello_comm() -> None:
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
