"""Python warnings raised by the cell: counted per message while still shown as usual.

A warning seen before at the same place is normally swallowed by the ``default`` action before
``showwarning`` runs, so counting needs the ``always`` action: for the run, filters that show a
warning once (``default``, ``module``, ``once``) become ``always`` and the fallback too, while
``showwarning`` shows each warning once per place, as ``default`` would. ``error`` and
``ignore`` filters are left as they are. ``catch_warnings`` puts everything back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, cast

from torchmagic.core.attachments import Attachments

_SHOW_ONCE = ("default", "module", "once")


def capture_warnings(attachments: Attachments, record: Callable[[str, str], None]) -> None:
    context = warnings.catch_warnings()
    context.__enter__()
    attachments.callback(lambda: context.__exit__(None, None, None))
    filters = cast("list[Any]", warnings.filters)  # typeshed says Sequence; it is the list the machinery reads
    filters[:] = [("always", *f[1:]) if f[0] in _SHOW_ONCE else f for f in filters]
    warnings.simplefilter("always", append=True)
    shown: set[tuple[str, type, str, int]] = set()
    original = warnings.showwarning

    def showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
        record(category.__name__, str(message))
        key = (str(message), category, filename, lineno)
        if key not in shown:
            shown.add(key)
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
