"""``%%train``: run an unchanged training loop under the monitor, with a live dashboard."""

from __future__ import annotations

import ast
from typing import Any

import torch
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from torchmagic.api import TRAIN_DISPLAYS, TrainingRun
from torchmagic.core.interrupt import TrainingStopped
from torchmagic.ipython.cell_analysis import calls_method, loop_total, names_read


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
        default=10,
        metavar="N",
        help="take gradient norms, update ratios, activation statistics and histograms on steps 1, N, 2N, ...; 0: never",
    )
    @argument("--histograms", action="store_true", help="also record per-parameter gradient histograms")
    @argument(
        "--total",
        type=int,
        default=None,
        metavar="N",
        help="backward() calls the loop will make, when it cannot be read from the loop (for progress/ETA)",
    )
    @argument(
        "--display",
        default="auto",
        choices=TRAIN_DISPLAYS,
        help="auto: dashboard in a notebook, a text line elsewhere; stock: dashboard without the lab extension",
    )
    @argument("--refresh", type=float, default=4.0, metavar="HZ", help="display refreshes per second")
    @cell_magic
    def train(self, line: str, cell: str) -> None:
        """Run the cell's training loop and show a live dashboard.

        The cell runs unchanged in the notebook's namespace. A step is one optimizer step
        (several backward() calls with gradient accumulation); without an optimizer, one
        backward() call. Ctrl-C (or the kernel's stop button) stops after the current step.
        The result is kept: ``torchmagic.last_run()``.

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
        tree = self._parse(cell)
        ns = self.shell.user_ns
        models, model_names = self._resolve(args.model, ns, torch.nn.Module, "torch.nn.Module")
        optimizers, _ = self._resolve(args.optimizer, ns, torch.optim.Optimizer, "torch.optim.Optimizer")
        used = names_read(tree)
        if not args.model:
            models, model_names = _found(used, ns, torch.nn.Module, skip=torch.nn.modules.loss._Loss)
        if not args.optimizer:
            optimizers, _ = _found(used, ns, torch.optim.Optimizer)
        if not models and not (calls_method(tree, "backward") or calls_method(tree, "step")):
            raise UsageError(
                "%%train: no model found: the cell uses no torch.nn.Module from the namespace and "
                "calls no backward(); name one with -m NAME"
            )
        if args.every < 0:
            raise UsageError(f"%%train: --every must be 0 or more, got {args.every}")
        if args.total is not None and args.total <= 0:
            raise UsageError(f"%%train: --total must be positive, got {args.total}")
        if args.refresh <= 0:
            raise UsageError(f"%%train: --refresh must be positive, got {args.refresh}")
        total = args.total or loop_total(tree, ns)
        code = compile(cell, self.shell.compile.cache(cell), "exec", dont_inherit=True)

        run = TrainingRun(
            models,
            optimizers,
            model_names=model_names,
            every=args.every,
            histograms=args.histograms,
            total=total,
            display=args.display,
            refresh=args.refresh,
            title=", ".join(model_names),
        )
        with run:
            exec(code, ns)
        if run.result.status == "interrupted":
            raise TrainingStopped(f"training stopped after step {run.result.steps}")

    def _parse(self, cell: str) -> ast.Module:
        __tracebackhide__ = True
        if not cell.strip():
            raise UsageError("%%train: the cell is empty; put a training loop below %%train")
        try:
            return ast.parse(cell)
        except SyntaxError:
            return ast.Module(body=[], type_ignores=[])  # compile() below reports it as the user's error

    @staticmethod
    def _resolve(specs: list[str], ns: dict[str, Any], kind: type, kind_name: str) -> tuple[list[Any], list[str]]:
        names = [n.strip() for spec in specs for n in spec.split(",") if n.strip()]
        objects = []
        for name in names:
            if not name.isidentifier():
                raise UsageError(f"%%train: {name!r} is not a variable name")
            if name not in ns:
                raise UsageError(f"%%train: name {name!r} is not defined in the notebook")
            obj = ns[name]
            if not isinstance(obj, kind):
                raise UsageError(f"%%train: {name!r} is a {type(obj).__name__}, not a {kind_name}")
            objects.append(obj)
        return objects, names


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
