"""``%%train``: run an unchanged training loop under the monitor, with a live dashboard."""

from __future__ import annotations

import ast
from typing import Any

import torch
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.utils.process import arg_split

from torchmagic.api import TRAIN_DISPLAYS, TrainingRun
from torchmagic.core.distributed import DistributedError, RankFailed
from torchmagic.core.interrupt import TrainingStopped
from torchmagic.core.monitor import active_monitor
from torchmagic.ipython.cell_analysis import loop_total, names_read
from torchmagic.ipython.cell_runner import Cell, compile_cell, run_cell, show_one_line
from torchmagic.validation import ArgumentProblem


@magics_class
class TrainMagics(Magics):
    @magic_arguments()
    @argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="model to watch (repeat or comma-separate for several); default: the modules the cell uses",
    )
    @argument(
        "-o",
        "--optimizer",
        action="append",
        default=[],
        metavar="NAME",
        help="optimizer whose steps are the steps; default: the optimizers the cell uses",
    )
    @argument(
        "--every",
        type=int,
        default=None,
        metavar="N",
        help="take gradient norms, update ratios, activation statistics and histograms on steps 1, N, 2N, ...; 0: never; "
        "default: 10, doubled for loops so fast that they would come more than 20 times a second",
    )
    @argument(
        "--histograms",
        nargs="?",
        const=True,
        default=False,
        metavar="PATTERNS",
        help="also record per-parameter gradient histograms; shown for the parameters matching the "
        "comma-separated glob patterns ('encoder.*,fc'; a module's name stands for its parameters), "
        "or alone for the first 8",
    )
    @argument(
        "--total",
        type=int,
        default=None,
        metavar="N",
        help="iterations the loop will make (its backward() calls; with several optimizers stepping in turn, one per round), "
        "when they cannot be read from the loop (for progress/ETA)",
    )
    @argument(
        "--display",
        default="auto",
        choices=TRAIN_DISPLAYS,
        help="auto: dashboard in a notebook, a text line elsewhere; stock: dashboard without the lab extension",
    )
    @argument("--refresh", type=float, default=4.0, metavar="HZ", help="display refreshes per second, 0.01 to 30")
    @argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="run the cell on N processes forked from the kernel, torch.distributed initialised in each "
        "(gloo on CPU, NCCL one GPU per rank); the models get rank 0's final weights",
    )
    @cell_magic
    def train(self, line: str, raw_cell: str) -> None:
        """Run the cell's training loop and show a live dashboard.

        The cell runs unchanged in the notebook's namespace, IPython syntax (``!cmd``, ``%magic``)
        included; a cell that only calls a framework (``trainer.train()``) or a function of
        an earlier cell works too. A run cannot start inside another. A step is one optimizer step
        (several backward() calls with gradient accumulation); without an optimizer, one
        backward() call. Ctrl-C (or the kernel's stop button) stops after the current step and
        ends the cell with one line; a second Ctrl-C stops at once.
        The result is kept: ``torchmagic.last_run()``. With ``--nproc N`` the cell runs on N ranks
        forked from the kernel (DDP in the cell as in a script); the result holds every rank's rows.

        Example::

            %%train --histograms
            for epoch in range(3):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
        """
        __tracebackhide__ = True
        args = parse_argstring(self.train, line)
        if active_monitor() is not None:
            raise UsageError("%%train: a run is already in progress; %%train cannot run inside %%train or torchmagic.train()")
        cell, tree = self._compile(raw_cell)
        run = self._run_for(args, line, tree)
        if args.nproc is not None:
            self._run_ranks(run, cell)
            return
        try:
            with run:
                run_cell(self.shell, cell)
        except KeyboardInterrupt as stop:
            show_one_line(stop, _stopped_line(stop, run))
            raise
        if run.result.status == "interrupted":
            stopped = TrainingStopped(f"training stopped after step {run.result.steps}")
            show_one_line(stopped, _stopped_line(stopped, run))
            raise stopped
        if run.result.steps == 0 and run.monitor.backward_calls == 0:
            print("%%train: the cell trained nothing (no backward() call and no optimizer step ran)")

    def _run_ranks(self, run: TrainingRun, cell: Cell) -> None:
        """The cell on the run's ranks: a run that cannot start is a one-line UsageError; a rank
        that fails raises ``RankFailed`` with its traceback; Ctrl-C raises ``TrainingStopped``."""
        __tracebackhide__ = True
        ns = self.shell.user_ns
        try:
            run.run(lambda: exec(cell.code, ns))
        except RankFailed:
            raise
        except DistributedError as problem:
            raise UsageError(f"%%train --nproc: {problem}") from None

    def _compile(self, raw: str) -> tuple[Cell, ast.Module]:
        """The cell, and the tree to find its models and loop in: under a leading cell magic (``%%time``), its body's."""
        __tracebackhide__ = True
        if not raw.strip():
            raise UsageError("%%train: the cell is empty; put a training loop below %%train")
        cell = compile_cell(self.shell, raw)  # before anything is looked up: a syntax error is reported as itself
        tree = ast.parse(cell.source)
        if not tree.body:
            raise UsageError("%%train: the cell holds only comments; put a training loop below %%train")
        body = raw.lstrip()
        if not body.startswith("%%"):
            return cell, tree
        while body.startswith("%%"):
            body = body.partition("\n")[2].lstrip()
        try:
            return cell, ast.parse(str(self.shell.transform_cell(body)))
        except SyntaxError:  # the cell magic's own syntax, which it reports when it runs
            return cell, ast.Module(body=[], type_ignores=[])

    def _run_for(self, args: Any, line: str, tree: ast.Module) -> TrainingRun:
        """The run: the models and optimizers named or found in the cell, the options checked."""
        __tracebackhide__ = True
        ns = self.shell.user_ns
        model_names = self._names(args.model, "model", line)
        optimizer_names = self._names(args.optimizer, "optimizer", line)
        models, optimizers = [ns[n] for n in model_names], [ns[n] for n in optimizer_names]
        used = names_read(tree)
        if not args.model:
            models, model_names = _found(used, ns, torch.nn.Module, skip=torch.nn.modules.loss._Loss)
        if not args.optimizer:
            optimizers, optimizer_names = _found(used, ns, torch.optim.Optimizer)
        # Nothing is refused for want of a model in the text: `trainer.train()` or `main()` trains
        # models the global hooks find when their forward runs.
        try:
            return TrainingRun(
                models,
                optimizers,
                model_names=model_names,
                every=args.every,
                histograms=_unquoted(args.histograms),
                total=args.total if args.total is not None else loop_total(tree, ns),
                display=args.display,
                refresh=args.refresh,
                title=", ".join(model_names),
                nproc=args.nproc,
            )
        except ArgumentProblem as problem:  # the API's own check, worded with the option as typed
            names = {"model": model_names, "optimizer": optimizer_names}.get(problem.argument, [])
            flag = self._flag(problem.argument, line)
            subject = flag if problem.index is None else f"{flag} {names[problem.index]!r}"
            raise UsageError(f"%%train: {problem.worded(subject)}") from None

    def _names(self, specs: list[str], dest: str, line: str) -> list[str]:
        """Variable names given to ``-m``/``-o`` (repeated or comma-separated), each defined in the notebook."""
        __tracebackhide__ = True
        names = [n.strip() for spec in specs for n in spec.split(",") if n.strip()]
        for name in names:
            if not name.isidentifier():
                raise UsageError(f"%%train: {self._flag(dest, line)} {name!r} is not a variable name")
            if name not in self.shell.user_ns:
                raise UsageError(f"%%train: name {name!r} is not defined in the notebook ({self._flag(dest, line)} {name})")
        return names

    def _flag(self, dest: str, line: str) -> str:
        """The option for argument ``dest`` as the user typed it (``-m`` or ``--model``, an abbreviation too)."""
        flags = next((a.option_strings for a in self.train.parser._actions if a.dest == dest), [f"--{dest}"])
        for token in reversed([t.split("=", 1)[0] for t in arg_split(line)]):
            for flag in flags:
                if flag.startswith("--") and len(token) > 2 and flag.startswith(token):
                    return token
                if not flag.startswith("--") and token.startswith(flag):
                    return flag
        return max(flags, key=len)


def _unquoted(value: Any) -> Any:
    """An option's text without the quotes around it: IPython keeps them (``--histograms 'encoder.*'``)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _found(names: list[str], ns: dict[str, Any], kind: type, skip: type | None = None) -> tuple[list[Any], list[str]]:
    """Objects of ``kind`` among the names the cell reads, first use first, each object once."""
    found, found_names, seen = [], [], set()
    for name in names:
        obj = ns.get(name)
        if isinstance(obj, kind) and not (skip is not None and isinstance(obj, skip)) and id(obj) not in seen:
            seen.add(id(obj))
            found.append(obj)
            found_names.append(name)
    return found, found_names


def _stopped_line(stop: KeyboardInterrupt, run: TrainingRun) -> str:
    """The one line a stopped run ends the cell with."""
    r = run.result
    of = f" of ~{r.total_steps}" if r.total_steps else ""
    if isinstance(stop, TrainingStopped):
        return f"{type(stop).__name__}: training stopped after step {r.steps}{of}; the model holds that step's weights"
    return f"{type(stop).__name__}: training stopped at once after step {r.steps}{of}; a step in progress may be half done"
