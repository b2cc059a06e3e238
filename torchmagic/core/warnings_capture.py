"""Python warnings raised by the cell: counted per message while still shown as usual.

A warning seen before at the same place is normally swallowed by the ``default`` action before
``showwarning`` runs, so counting needs the ``always`` action: for the run, filters that show a
warning once (``default``, ``module``, ``once``) become ``always`` and an ``always`` fallback is
appended, while ``showwarning`` shows each warning once per place, as ``default`` would.
``error`` and ``ignore`` filters are left as they are.

The changes are made in place and undone one by one, found by identity: filters the cell adds or
removes (``warnings.filterwarnings("ignore", ...)``) stay as the cell left them, as they would
without a run. ``catch_warnings`` would put back the whole list and lose them.

One warning is the monitor's own doing and is hidden for the run: torch warns at each call of a
``torch.compile``'d module while any global module hook is installed, and the monitor's are, on
watched steps (they see the compiled module as the root and its original module inside it).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any, cast

from torchmagic.core.attachments import Attachments

_SHOW_ONCE = ("default", "module", "once")
_OWN_DOING = re.compile(re.escape("Using `torch.compile(module)` when there are global hooks on modules"))


def capture_warnings(attachments: Attachments, record: Callable[[str, str], None]) -> None:
    filters = _filters()
    swapped: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []  # (ours, the filter it stands for)
    for i, f in enumerate(filters):
        if f[0] in _SHOW_ONCE:
            ours = ("always", *f[1:])
            filters[i] = ours
            swapped.append((ours, f))
    fallback = ("always", None, Warning, None, 0)
    filters.append(fallback)
    _mutated()
    original = warnings.showwarning
    shown: set[tuple[str, type, str, int]] = set()

    def showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
        record(category.__name__, str(message))
        key = (str(message), category, filename, lineno)
        if key not in shown:
            shown.add(key)
            original(message, category, filename, lineno, file, line)

    def undo() -> None:
        current = _filters()
        for ours, theirs in swapped:
            _replace(current, ours, theirs)
        _replace(current, fallback, None)
        _mutated()
        if warnings.showwarning is showwarning:  # one the cell installed stays
            warnings.showwarning = original

    warnings.showwarning = showwarning
    attachments.callback(undo)


def hide_own_warnings(attachments: Attachments) -> None:
    """Ignore, until detached, the warnings torch gives because of the monitor's hooks."""
    ours = ("ignore", _OWN_DOING, UserWarning, None, 0)
    _filters().insert(0, ours)
    _mutated()

    def undo() -> None:
        _replace(_filters(), ours, None)
        _mutated()

    attachments.callback(undo)


def _filters() -> list[Any]:
    return cast("list[Any]", warnings.filters)  # typeshed says Sequence; it is the list the machinery reads


def _replace(filters: list[Any], item: tuple[Any, ...], by: tuple[Any, ...] | None) -> None:
    """Put ``by`` where ``item`` itself (not an equal filter the cell added) is; drop it for None."""
    for i, f in enumerate(filters):
        if f is item:
            if by is None:
                del filters[i]
            else:
                filters[i] = by
            return


def _mutated() -> None:
    """Tell the C warnings machinery the filters changed (it caches "once per place" decisions)."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()
