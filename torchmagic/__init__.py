"""torchmagic: see what PyTorch training is doing while it runs.

In a notebook: ``%load_ext torchmagic`` then ``%%train`` on top of a cell holding an ordinary
training loop. In a script: ``with torchmagic.train(model, optimizer): ...``.

Importing this package does no work: torch, widgets and plots load when first used.
"""

from __future__ import annotations

from typing import Any

from torchmagic._version import __version__

__all__ = ["__version__", "last_profile", "last_run", "memory_history", "log", "train", "TrainingMonitor", "RunResult"]

_LAZY = {
    "train": ("torchmagic.api", "train"),
    "log": ("torchmagic.api", "log"),
    "last_run": ("torchmagic.core.runs", "last_run"),
    "last_profile": ("torchmagic.core.profile_result", "last_profile"),
    "memory_history": ("torchmagic.core.memtrack", "memory_history"),
    "TrainingMonitor": ("torchmagic.core.monitor", "TrainingMonitor"),
    "RunResult": ("torchmagic.core.result", "RunResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchmagic' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    from torchmagic.ipython import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from torchmagic.ipython import unload

    unload(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "torchmagic-lab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "torchmagic.server"}]
