"""``%profile`` / ``%%profile``: run code under ``torch.profiler`` and show the answers in the notebook."""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from torchmagic.ipython.cell_runner import compile_cell, run_cell

# Values of %profile --display; the training monitor's display modes (api.DISPLAY_MODES) are another set.
PROFILE_DISPLAYS = ("auto", "widgets", "static", "none")
_TOKEN = re.compile(r"\S+")


@magics_class
class ProfileMagics(Magics):
    @magic_arguments()
    @argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="profile N optimizer steps of the loop (a schedule stepped on optimizer.step())",
    )
    @argument("--wait", type=int, default=0, metavar="W", help="with --steps: optimizer steps to skip first")
    @argument("--warmup", type=int, default=0, metavar="U", help="with --steps: steps traced but discarded, after --wait")
    @argument("--record-shapes", action="store_true", help="record input shapes (enables grouping by shape)")
    @argument("--profile-memory", action="store_true", help="record allocations: memory per op and the memory timeline")
    @argument("--with-stack", action="store_true", help="record Python stacks (enables grouping by source line)")
    @argument("--with-modules", action="store_true", help="record module names (enables grouping by module; records stacks)")
    @argument(
        "--logdir", default=None, metavar="DIR", help="also write a run for TensorBoard's PyTorch Profiler plugin under DIR"
    )
    @argument("--run", default=None, metavar="NAME", help="with --logdir: the run's name (default: profile-<time>)")
    @argument("--tensorboard", action="store_true", help="start TensorBoard on 127.0.0.1 for the log directory and link it")
    @argument("--port", type=int, default=None, metavar="P", help="with --tensorboard: the port (default: a free one)")
    @argument(
        "--trace",
        default=None,
        metavar="FILE",
        help="where to write the Chrome/Perfetto trace JSON; a directory gets a new file inside it, an existing"
        " file is refused, never overwritten (default: a new file in a per-user temporary folder)",
    )
    @argument("--group", default="op", choices=("op", "shape", "module", "line"), help="first grouping of the op table")
    @argument(
        "--timeline-events",
        type=int,
        default=None,
        metavar="N",
        help="events kept for the timeline, the longest first (default 5000)",
    )
    @argument(
        "--display", default="auto", choices=PROFILE_DISPLAYS, help="auto: explorer + summary in a notebook, text elsewhere"
    )
    @no_var_expand
    @line_cell_magic
    def profile(self, line: str, cell: str | None = None) -> Any:
        """Profile a statement (``%profile``) or a cell (``%%profile``) with torch.profiler.

        CPU activity always; CUDA activity when CUDA is available (synchronised, so device
        times are complete). With ``--steps N`` the cell's training loop runs unchanged and
        the profiler follows a schedule (``--wait``, ``--warmup``, then N active steps), stepped
        on every optimizer step. Shows a sortable, filterable op table, a timeline and, with
        ``--profile-memory``, a memory timeline; writes a Chrome/Perfetto trace and, with
        ``--logdir``, a run for TensorBoard's PyTorch Profiler plugin. Returns a
        ``ProfileResult`` (also ``torchmagic.last_profile()``).

        Examples::

            %profile model(x)

            %%profile --steps 5 --wait 1 --warmup 1 --record-shapes --logdir runs/prof
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
        """
        __tracebackhide__ = True
        options, code_text = (line, cell) if cell is not None else _split_statement(line, self.profile.parser)
        args = parse_argstring(self.profile, options)
        kind = "%%profile" if cell is not None else "%profile"
        self._check(args, kind, code_text)
        compiled = compile_cell(self.shell, code_text)  # `!cmd` and `%magic` lines work as in any cell

        from torchmagic.core import tbexport
        from torchmagic.core.profile_trace import TIMELINE_EVENTS
        from torchmagic.core.profiling import ProfilerBusy, ProfileSession
        from torchmagic.core.safe_paths import check_run_dir, check_trace_path

        logdir = args.logdir
        try:
            if args.tensorboard and logdir is None:
                logdir = tbexport.default_logdir()
            # Every path and the port are checked now: the cell must not run only to lose its result.
            trace = None if args.trace is None else check_trace_path(args.trace, "--trace")
            if logdir is not None:
                logdir = tbexport.check_logdir(logdir, "--logdir")
                check_run_dir(logdir, args.run, "--run")
            if args.tensorboard and args.port is not None and not tbexport.serving(logdir, args.port):
                tbexport.check_port(args.port, "--port")
            session = ProfileSession(
                steps=args.steps,
                wait=args.wait,
                warmup=args.warmup,
                record_shapes=args.record_shapes,
                profile_memory=args.profile_memory,
                with_stack=args.with_stack,
                with_modules=args.with_modules,
                trace_path=trace,
                logdir=logdir,
                run_name=args.run,
                timeline_events=TIMELINE_EVENTS if args.timeline_events is None else args.timeline_events,
                user_files={compiled.filename: "cell" if kind == "%%profile" else "statement"},
            )
        except ValueError as exc:
            raise UsageError(f"{kind}: {exc}") from None
        try:
            with session:
                run_cell(self.shell, compiled)
        except ProfilerBusy as exc:
            raise UsageError(f"{kind}: {exc}") from None
        except BaseException:
            self._report(session, args, failed=True)
            raise
        if args.steps and session.steps_seen == 0:
            raise UsageError(
                f"{kind}: --steps {args.steps}: the code made no optimizer step (optimizer.step()); profile it without --steps"
            )
        return self._report(session, args)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _check(args: Any, kind: str, code_text: str) -> None:
        __tracebackhide__ = True
        if not code_text.strip():
            raise UsageError(
                f"{kind}: nothing to profile; "
                + ("put code below %%profile" if kind == "%%profile" else "give a statement after %profile")
            )
        if args.steps is not None and args.steps <= 0:
            raise UsageError(f"{kind}: --steps must be positive, got {args.steps}")
        if args.wait < 0 or args.warmup < 0:
            raise UsageError(f"{kind}: --wait and --warmup must be 0 or more")
        if (args.wait or args.warmup) and args.steps is None:
            raise UsageError(f"{kind}: --wait and --warmup need --steps N")
        if args.timeline_events is not None and args.timeline_events <= 0:
            raise UsageError(f"{kind}: --timeline-events must be positive, got {args.timeline_events}")
        if args.run is not None and args.logdir is None and not args.tensorboard:
            raise UsageError(f"{kind}: --run needs --logdir DIR (or --tensorboard)")
        if args.port is not None and not args.tensorboard:
            raise UsageError(f"{kind}: --port needs --tensorboard")

    def _report(self, session: Any, args: Any, failed: bool = False) -> Any:
        """Show the result (explorer + summary, or text); on failure, show it before the error."""
        result = session.result
        if result is None:
            return None
        mode = args.display
        if args.tensorboard and result.logdir and not failed:
            from torchmagic.core import tbexport

            try:
                result.tensorboard_url = tbexport.serve(result.logdir, args.port).profiler_url
            except RuntimeError as exc:
                print(f"TensorBoard could not start: {exc}")
            else:
                print(
                    f"TensorBoard: {result.tensorboard_url} (its Overview page loads Google Charts from the internet;"
                    " offline, use torchmagic.last_profile(): .table and the timeline)"
                )
        if result.trace_error:
            print(f"Note: {result.trace_error}")
        from torchmagic.display import frontend

        if mode == "auto":
            mode = "widgets" if frontend.in_kernel() else "static"
        if mode == "none":
            return result
        from IPython.display import IFrame, display

        if mode == "widgets" and result.op_count:
            from torchmagic.display.profile_view import ProfileExplorer

            explorer = ProfileExplorer(result)
            explorer.group_by.value = args.group if args.group in explorer.group_by.options else "op"
            display(explorer.widget)
        if result.tensorboard_url and mode == "widgets":
            display(IFrame(result.tensorboard_url, width="100%", height=600))
        if failed:
            display(result)
            return None
        return result


def _split_statement(line: str, parser: Any) -> tuple[str, str]:
    """Split ``%profile [options] statement`` into the options and the statement, verbatim."""
    takes_value = {opt for action in parser._actions if action.nargs != 0 for opt in action.option_strings}
    pos, expect_value = 0, False
    for m in _TOKEN.finditer(line):
        token = m.group()
        if expect_value:
            expect_value, pos = False, m.end()
        elif token == "--":
            return line[: m.start()], line[m.end() :].strip()
        elif token.startswith("-") and not token.lstrip("-")[:1].isdigit() and token != "-":
            expect_value = token.split("=", 1)[0] in takes_value and "=" not in token
            pos = m.end()
        else:
            return line[:pos], line[m.start() :].strip()
    return line[:pos], ""
