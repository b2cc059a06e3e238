"""``%memory`` / ``%%memory``: which cell took the memory, and which module's forward held it."""

from __future__ import annotations

import html
from typing import Any

import torch
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from torchmagic.core import formatting, memtrack
from torchmagic.core.memtrack import CellMemory, CellMemoryTracker
from torchmagic.ipython.cell_runner import compile_cell, run_cell, running_cell_number

COMMANDS = ("on", "off", "clear", "show")
_VALUE_OPTIONS = ("--top", "--every")


class MemoryCellLog:
    """``%memory on``: measures each following cell into the history (``pre_run_cell`` / ``post_run_cell``).

    After every cell, recorded or not, it also pushes the side panel's status.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.on = False
        self.options: dict[str, Any] = {}
        self.tracker: CellMemoryTracker | None = None
        self.recorded_by_magic = False  # the running cell is a %%memory: it records itself

    def attach(self) -> None:
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)

    def detach(self) -> None:
        for event, handler in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            try:
                self.shell.events.unregister(event, handler)
            except ValueError:
                pass
        self.stop(discard=True)

    def start(self, **options: Any) -> None:
        self.on, self.options = True, options
        memtrack.set_recording(True)

    def stop(self, discard: bool = False) -> None:
        """Stops recording; the measurement of the running cell, if any, is dropped."""
        self.on = False
        memtrack.set_recording(False)
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            tracker.stop()

    def pre_run_cell(self, info: Any) -> None:
        self.recorded_by_magic = False
        if self.tracker is not None:  # a post_run_cell that never came
            self.tracker.stop()
            self.tracker = None
        if self.on:
            self.tracker = CellMemoryTracker(names=self.module_name, **self.options)
            # IPython counts the cell before pre_run_cell: this cell is In[execution_count - 1]
            stored = getattr(info, "store_history", False)
            count = self.shell.execution_count - 1 if stored else None
            self.tracker.start(count, getattr(info, "raw_cell", "") or "")

    def post_run_cell(self, result: Any) -> None:
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            measured = tracker.stop()
            if not self.recorded_by_magic:
                memtrack.record(measured)
        from torchmagic.display import kernel_status

        kernel_status.after_cell()

    def module_name(self, module: torch.nn.Module) -> str | None:
        for name, value in self.shell.user_ns.items():
            if value is module and not name.startswith("_"):
                return name
        return None


@magics_class
class MemoryMagics(Magics):
    def __init__(self, shell: Any, cell_log: MemoryCellLog) -> None:
        super().__init__(shell)
        self.cell_log = cell_log

    @magic_arguments()
    @argument("--by-module", action="store_true", help="also find the modules whose forward held the most memory")
    @argument(
        "--every",
        type=int,
        default=10,
        metavar="N",
        help="with --by-module: measure every N-th forward pass, the first included (default 10)",
    )
    @argument("--top", type=int, default=5, metavar="N", help="with --by-module: how many modules to list (default 5)")
    @argument(
        "--sampling", action="store_true", help="take the peak RSS from a sampling thread, not the kernel's high-water mark"
    )
    @line_cell_magic
    def memory(self, line: str, cell: str | None = None) -> Any:
        """Per-cell memory: RSS delta and peak, CUDA allocated delta and peak, per module.

        Usage::

            %memory on [--by-module] [--every N]   record every following cell
            %memory off                             stop recording
            %memory show                            the recorded cells (torchmagic.memory_history())
            %memory clear                           forget them
            %memory [--by-module] STATEMENT         measure one statement
            %%memory [--by-module] [--top N]        measure the cell below

        Sizes are bytes in ``torchmagic.memory_history()``. CUDA numbers appear once the notebook
        has initialised CUDA (this magic never does).
        """
        __tracebackhide__ = True
        args, rest = self._parse(line)
        options = {
            "by_module": args.by_module,
            "every": args.every,
            "top": args.top,
            "strategy": "sampling" if args.sampling else "auto",
        }
        if cell is not None:
            if rest:
                raise UsageError(f"%%memory: unexpected {rest!r} after the options")
            return self._measure(cell, options)
        if rest in COMMANDS:
            return self._command(rest, options)
        if not rest.strip():
            return self._command("show", options)
        return self._measure(rest, options)

    def _parse(self, line: str) -> tuple[Any, str]:
        """Options (leading ``-`` tokens) through argparse; the rest is a command or a statement."""
        tokens = line.split()
        i = 0
        while i < len(tokens) and tokens[i].startswith("-"):
            i += 2 if tokens[i] in _VALUE_OPTIONS else 1
        options = tokens[:i]
        rest = line.strip()
        for token in options:
            rest = rest[rest.index(token) + len(token) :].lstrip()
        words = rest.split()
        if words and words[0] in COMMANDS:  # %memory on --by-module: options after the command
            options, rest = options + words[1:], words[0]
        args = parse_argstring(self.memory, " ".join(options))
        if args.every < 1:
            raise UsageError(f"%memory: --every must be 1 or more, got {args.every}")
        if args.top < 1:
            raise UsageError(f"%memory: --top must be 1 or more, got {args.top}")
        return args, rest

    def _command(self, command: str, options: dict[str, Any]) -> Any:
        if command == "on":
            self.cell_log.start(**options)
            return None
        if command == "off":
            self.cell_log.stop(discard=True)
            return None
        if command == "clear":
            memtrack.clear_history()
            return None
        return memtrack.memory_history()

    def _measure(self, code: str, options: dict[str, Any]) -> CellMemory:
        __tracebackhide__ = True
        self.cell_log.recorded_by_magic = True
        tracker = CellMemoryTracker(names=self.cell_log.module_name, **options)
        cell = compile_cell(self.shell, code)  # `!cmd` and `%magic` lines work as in any cell
        tracker.start(running_cell_number(self.shell), code)
        try:
            run_cell(self.shell, cell)
        finally:
            memtrack.record(tracker.stop())
        return tracker.result


_cell_log: MemoryCellLog | None = None


def load(ipython: Any) -> None:
    global _cell_log
    if _cell_log is not None:
        _cell_log.detach()
    _cell_log = MemoryCellLog(ipython)
    _cell_log.attach()
    ipython.register_magics(MemoryMagics(ipython, _cell_log))
    formatters = ipython.display_formatter.formatters
    formatters["text/html"].for_type_by_name("torchmagic.core.memtrack", "CellMemory", render_html)
    formatters["text/plain"].for_type_by_name("torchmagic.core.memtrack", "CellMemory", render_text)


def unload(ipython: Any) -> None:
    global _cell_log
    cell_log, _cell_log = _cell_log, None
    if cell_log is not None:
        cell_log.detach()
    magics = ipython.magics_manager.magics
    magics["line"].pop("memory", None)
    magics["cell"].pop("memory", None)
    ipython.magics_manager.registry.pop("MemoryMagics", None)


# --------------------------------------------------------------------------- display


def _lines(m: CellMemory) -> list[tuple[str, str]]:
    rows = [
        ("RSS delta", formatting.nbytes(m.rss_delta)),
        ("RSS peak", f"{formatting.nbytes(m.rss_peak)} ({formatting.nbytes(m.rss_peak - m.rss_start)} above the start)"),
    ]
    if m.cuda_delta is not None:
        rows.append(("CUDA allocated delta", formatting.nbytes(m.cuda_delta)))
        rows.append(("CUDA peak allocated", formatting.nbytes(m.cuda_peak)))
    rows.append(("time", formatting.duration(m.duration)))
    return rows


def _module_lines(m: CellMemory) -> list[tuple[str, str, str]]:
    out = []
    for mod in m.modules:
        cuda = "" if mod.cuda_delta is None else f", CUDA +{formatting.nbytes(mod.cuda_delta)}"
        out.append((mod.name, formatting.nbytes(mod.held), f"{mod.calls} sampled forward(s){cuda}"))
    return out


def render_text(m: CellMemory, printer: Any, cycle: bool) -> None:
    parts = [f"{k}: {v}" for k, v in _lines(m)]
    text = "memory — " + "; ".join(parts)
    if m.modules:
        text += "\nheld by forward (outputs + saved for backward):"
        for name, held, calls in _module_lines(m):
            text += f"\n  {name}: {held} ({calls})"
    printer.text(text)


def render_html(m: CellMemory) -> str:
    e = html.escape
    cells = "".join(f"<tr><th style='text-align:left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _lines(m))
    out = f"<div class='torchmagic-memory'><table>{cells}</table>"
    if m.modules:
        rows = "".join(
            f"<tr><td><code>{e(n)}</code></td><td style='text-align:right'>{e(h)}</td><td>{e(c)}</td></tr>"
            for n, h, c in _module_lines(m)
        )
        out += (
            "<p>Held by forward (outputs + tensors saved for backward), "
            f"{m.sampled_forwards} of {m.forwards} forward passes measured:</p>"
            f"<table><tr><th>module</th><th style='text-align:right'>held</th><th></th></tr>{rows}</table>"
        )
    return out + "</div>"
