"""IPython glue: magics that parse arguments, resolve names and hand results to the display."""

from __future__ import annotations

from typing import Any


def load(ipython: Any) -> None:
    from torchmagic.display import frontend
    from torchmagic.ipython import memory_magic
    from torchmagic.ipython.inspect_magic import InspectMagics
    from torchmagic.ipython.profile_magic import ProfileMagics
    from torchmagic.ipython.train_magic import TrainMagics

    ipython.register_magics(TrainMagics)
    ipython.register_magics(InspectMagics)
    ipython.register_magics(ProfileMagics)
    memory_magic.load(ipython)
    _register_view_formatters(ipython, "torchmagic.core.result", "RunResult", "torchmagic.display.panels")
    _register_view_formatters(ipython, "torchmagic.core.inspect_result", "InspectResult", "torchmagic.display.inspect_view")
    _register_view_formatters(ipython, "torchmagic.core.profile_result", "ProfileResult", "torchmagic.display.profile_view")
    frontend.open_hello_comm()


def unload(ipython: Any) -> None:
    from torchmagic.display import frontend
    from torchmagic.ipython import memory_magic

    memory_magic.unload(ipython)

    magics = ipython.magics_manager.magics
    for kind, names in (("cell", ("train", "tensor_inspect", "profile")), ("line", ("tensor_inspect", "profile"))):
        for name in names:
            magics[kind].pop(name, None)
    registry = ipython.magics_manager.registry
    registry.pop("TrainMagics", None)
    registry.pop("InspectMagics", None)
    registry.pop("ProfileMagics", None)
    frontend.close_hello_comm()


def _register_view_formatters(ipython: Any, result_module: str, result_class: str, view_module: str) -> None:
    """Static HTML in a notebook and a text block in a terminal, from ``view_module``'s
    ``html``/``text``; the view is imported on first display, not at ``%load_ext``."""
    import importlib

    def render_html(result: Any) -> str:
        return importlib.import_module(view_module).html(result)

    def render_text(result: Any, printer: Any, cycle: bool) -> None:
        printer.text(importlib.import_module(view_module).text(result))

    formatters = ipython.display_formatter.formatters
    formatters["text/html"].for_type_by_name(result_module, result_class, render_html)
    formatters["text/plain"].for_type_by_name(result_module, result_class, render_text)
