"""Text fallback for terminals, plain Python and headless runs: one updating line, then a summary.

Training loops print their own progress. The progress line is a ``\\r`` line; anything else written
to ``sys.stdout`` or ``sys.stderr`` during the run first ends it (in a terminal: clears it, and it
is drawn again below the loop's text), so the two never share a line; so does a ``logging``
handler writing to either. The streams are wrapped from the first refresh to the last, and put
back on every exit path (``freeze``); a stream the loop installed itself is left in place.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from torchmagic.core.formatting import duration, number, rate
from torchmagic.core.monitor import Snapshot
from torchmagic.display import optimizer_curves

_STREAMS = ("stdout", "stderr")


class TextProgress:
    def __init__(self, stream: TextIO | None = None, interval: float = 0.5, width: int = 24) -> None:
        self.stream = stream or sys.stdout
        self.interval = interval
        self.width = width
        self._last = 0.0
        self._printed = 0  # length of the progress line on screen; 0: none is open
        self._line = ""
        self._at_line_start = True  # the last text the loop wrote ended its line
        self._guards: dict[str, _EndsProgressFirst] = {}
        self._handlers: list[tuple[logging.StreamHandler[Any], _EndsProgressFirst]] = []
        self._tty = _isatty(self.stream)

    @property
    def frozen(self) -> bool:
        return not self._guards

    def __call__(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if not snap.final and now - self._last < self.interval:
            return
        self._last = now
        if not snap.final and not self._guards:
            self._guard_streams()
        self._draw(self.line(snap))
        if snap.final:
            self._write("\n" + self.summary(snap) + "\n")
            self._printed = 0
            self.freeze()
        self.stream.flush()

    def freeze(self, result: Any = None) -> None:
        """End the progress line and put the wrapped streams back (where the loop has not replaced them)."""
        self.before_other_text()
        guards, self._guards = self._guards, {}
        handlers, self._handlers = self._handlers, []
        for handler, guard in handlers:
            if handler.stream is guard:
                handler.setStream(guard.inner)
        for name, guard in guards.items():
            guard.active = False
            if getattr(sys, name) is guard:
                setattr(sys, name, guard.inner)

    def _draw(self, line: str) -> None:
        if self._printed:
            text = "\r" + line + " " * max(0, self._printed - len(line))
        else:
            text = ("" if self._at_line_start else "\n") + line
        self._write(text)
        self._line, self._printed = line, max(len(line), 1)

    def _write(self, text: str) -> None:
        inner = self.stream.inner if isinstance(self.stream, _EndsProgressFirst) else self.stream
        inner.write(text)

    def _guard_streams(self) -> None:
        for name in _STREAMS:
            current = getattr(sys, name)
            if current is None or (isinstance(current, _EndsProgressFirst) and current.active):
                continue
            guard = _EndsProgressFirst(current, self)
            self._guards[name] = guard
            setattr(sys, name, guard)
        # logging's StreamHandlers keep the stream they were made with (frameworks log to stderr)
        by_stream = {id(g.inner): g for g in self._guards.values()}
        for handler in _stream_handlers():
            guard = by_stream.get(id(handler.stream))
            if guard is not None:
                handler.setStream(guard)
                self._handlers.append((handler, guard))

    def before_other_text(self) -> None:
        """Someone else writes: end (or, in a terminal, clear) the progress line first."""
        if not self._printed:
            return
        self._write("\r" + " " * self._printed + "\r" if self._tty else "\n")
        self.stream.flush()
        self._printed = 0

    def after_other_text(self, text: str) -> None:
        self._at_line_start = text.endswith("\n")
        if self._tty and self._at_line_start and self._line:
            self._draw(self._line)  # in a terminal the line stays below the loop's output
            self.stream.flush()

    def line(self, snap: Snapshot) -> str:
        r = snap.result
        losses = [v for v in r.columns.get("loss", [])[-1:] if v is not None]
        parts = []
        if snap.fraction is not None:
            filled = int(snap.fraction * self.width)
            parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}] {snap.fraction * 100:3.0f}%")
        parts.append(f"step {r.steps}" + (f"/~{r.total_steps}" if r.total_steps else ""))
        by_optimizer = optimizer_curves.loss_text(r)  # several optimizers: each one's loss, not the last step's
        if by_optimizer is not None:
            parts.append(f"loss {by_optimizer}")
        elif losses:
            parts.append(f"loss {number(losses[0])}")
        if snap.samples_per_s:
            parts.append(rate(snap.samples_per_s))
        if snap.eta is not None and not snap.final:
            parts.append(f"ETA {duration(snap.eta)}")
        if r.alerts:
            parts.append(f"{len(r.alerts)} alert(s)")
        return " · ".join(parts)

    def summary(self, snap: Snapshot) -> str:
        r = snap.result
        lines = [f"torchmagic: {r.summary()}"]
        lines += [f"  {a}" for a in r.alerts[:10]]
        if len(r.alerts) > 10:
            lines.append(f"  … {len(r.alerts) - 10} more alerts")
        return "\n".join(lines)


class _EndsProgressFirst:
    """``sys.stdout``/``sys.stderr`` during a run: every write ends the progress line first.
    Inert once the run is over, so a reference the loop kept still writes through."""

    def __init__(self, inner: Any, progress: TextProgress) -> None:
        self.inner = inner
        self.progress = progress
        self.active = True

    def write(self, text: str) -> int:
        if not self.active or not text:
            return int(self.inner.write(text) or 0)
        self.progress.before_other_text()
        written = self.inner.write(text)
        if self.progress.stream is not self.inner:
            self.inner.flush()  # before the progress line is drawn on the other stream
        self.progress.after_other_text(text)
        return int(written or 0)

    def writelines(self, lines: Any) -> None:
        for text in lines:
            self.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 - a stream object of any kind
        return False
