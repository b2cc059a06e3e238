"""IPython glue: magics that parse arguments, resolve names and hand results to the display."""

from __future__ import annotations

from typing import Any


def load(ipython: Any) -> None:
    from torchmagic.display import frontend
    from torchmagic.ipython.train_magic import TrainMagics

    ipython.register_magics(TrainMagics)
    _register_result_formatter(ipython)
    frontend.open_hello_comm()


def unload(ipython: Any) -> None:
    from torchmagic.display import frontend

    magics = ipython.magics_manager.magics
    for kind, names in (("cell", ("train",)),):
        for name in names:
            magics[kind].pop(name, None)
    registry = ipython.magics_manager.registry
    registry.pop("TrainMagics", None)
    frontend.close_hello_comm()


def _register_result_formatter(ipython: Any) -> None:
    """Results display as the frozen dashboard; the formatter imports display code on first use."""
    formatter = ipython.display_formatter.formatters["text/html"]

    def render(result: Any) -> str:
        from torchmagic.display.panels import snapshot_html

        return snapshot_html(result)

    formatter.for_type_by_name("torchmagic.core.result", "RunResult", render)
