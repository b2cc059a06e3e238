"""The one check of a training run's options, shared by ``torchmagic.train()`` and ``%%train``.

Each problem is raised as a ``TypeError`` or ``ValueError`` that names the argument
(:class:`ArgumentProblem`); the magic turns the same problem into a one-line ``UsageError``
with the argument spelled as the option the user typed (``--every``, ``-m``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

TRAIN_DISPLAYS = ("auto", "widgets", "stock", "text", "none")  # display= of train() and %%train --display
MIN_REFRESH = 0.01  # refreshes per second: one every 100 s
MAX_REFRESH = 30.0  # each refresh waits for the device; more would slow the loop for nothing visible


class ArgumentProblem(Exception):
    """A bad argument: ``argument`` (or its item ``index``) followed by ``detail`` is the message."""

    def __init__(self, argument: str, detail: str, index: int | None = None) -> None:
        self.argument, self.detail, self.index = argument, detail, index
        super().__init__(self.worded(argument if index is None else f"{argument}[{index}]"))

    def worded(self, subject: str) -> str:
        return f"{subject} {self.detail}"


class ArgumentTypeError(ArgumentProblem, TypeError):
    pass


class ArgumentValueError(ArgumentProblem, ValueError):
    pass


@dataclass(frozen=True)
class TrainOptions:
    """Checked options of one run."""

    models: list[torch.nn.Module]
    optimizers: list[torch.optim.Optimizer]
    every: int | None  # None: the default schedule, thinned for fast loops
    histograms: bool
    total: int | None
    display: str
    refresh: float
    nproc: int | None = None  # None: this process; N: N ranks forked from it
    timeout: float = 600.0  # seconds a distributed run's collectives and store operations may wait
    histogram_patterns: tuple[str, ...] = ()  # the parameters whose histograms are shown; (): the first ones


def train_options(
    model: Any = None,
    optimizer: Any = None,
    *,
    every: Any = None,
    histograms: Any = False,
    total: Any = None,
    display: Any = "auto",
    refresh: Any = 4.0,
    nproc: Any = None,
    timeout: Any = 600.0,
) -> TrainOptions:
    """The options of ``torchmagic.train()``, checked in the order of its signature."""
    return TrainOptions(
        models=objects(model, "model", torch.nn.Module, "torch.nn.Module"),
        optimizers=objects(optimizer, "optimizer", torch.optim.Optimizer, "torch.optim.Optimizer"),
        every=None if every is None else integer(every, "every", minimum=0, wording="0 or more"),
        histograms=histogram_choice(histograms, "histograms") is not False,
        total=None if total is None else integer(total, "total", minimum=1, wording="positive"),
        display=choice(display, "display", TRAIN_DISPLAYS),
        refresh=rate(refresh, "refresh"),
        nproc=None if nproc is None else integer(nproc, "nproc", minimum=1, wording="1 or more (processes)"),
        timeout=seconds(timeout, "timeout"),
        histogram_patterns=histogram_patterns(histograms),
    )


def objects(value: Any, argument: str, kind: type, kind_name: str) -> list[Any]:
    """None, one ``kind`` or a list/tuple of them, as a list."""
    if value is None:
        return []
    if isinstance(value, kind):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ArgumentTypeError(argument, f"must be a {kind_name} or a list of them, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            raise ArgumentTypeError(argument, f"is a {type(item).__name__}, not a {kind_name}", index=i)
    return list(value)


def integer(value: Any, argument: str, *, minimum: int, wording: str) -> int:
    # bool is an int subclass, and True where a count is meant is a slip, not a count of one
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(argument, f"must be an integer, got {_kind(value)}")
    if value < minimum:
        raise ArgumentValueError(argument, f"must be {wording}, got {value}")
    return int(value)


def flag(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(argument, f"must be True or False, got {_kind(value)}")
    return value


def histogram_choice(value: Any, argument: str) -> bool | tuple[str, ...]:
    """True (the first parameters), False (none), or glob patterns on parameter names: one string,
    comma-separated (``"encoder.*,fc"``), or a list of strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ArgumentTypeError(argument, f"must be a string (a parameter name pattern), got {_kind(item)}", index=i)
    else:
        raise ArgumentTypeError(
            argument, f"must be True, False or parameter name patterns ('encoder.*,fc' or a list), got {_kind(value)}"
        )
    patterns = tuple(p.strip() for p in items if p.strip())
    if not patterns:
        raise ArgumentValueError(argument, f"must name at least one parameter pattern, got {_short(value)}")
    return patterns


def histogram_patterns(value: Any) -> tuple[str, ...]:
    """The patterns of an already checked ``histograms`` value; () for True and False."""
    choice_ = histogram_choice(value, "histograms")
    return choice_ if isinstance(choice_, tuple) else ()


def choice(value: Any, argument: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError(argument, f"must be one of {', '.join(choices)}; got {_kind(value)}")
    if value not in choices:
        raise ArgumentValueError(argument, f"must be one of {', '.join(choices)}; got {_short(value)}")
    return value


def _real(value: Any, argument: str, what: str) -> float:
    """A real number (not a bool) as a float; an int beyond float's range reads as infinity."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(argument, f"must be {what}, got {_kind(value)}")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def rate(value: Any, argument: str) -> float:
    """Refreshes per second: a finite number in MIN_REFRESH..MAX_REFRESH (NaN would never refresh)."""
    as_float = _real(value, argument, "a number (refreshes per second)")
    if not (math.isfinite(as_float) and MIN_REFRESH <= as_float <= MAX_REFRESH):
        raise ArgumentValueError(
            argument, f"must be between {MIN_REFRESH:g} and {MAX_REFRESH:g} (refreshes per second), got {as_float:g}"
        )
    return as_float


def seconds(value: Any, argument: str) -> float:
    """A positive, finite number of seconds."""
    as_float = _real(value, argument, "a number of seconds")
    if not (math.isfinite(as_float) and as_float > 0):
        raise ArgumentValueError(argument, f"must be a positive number of seconds, got {as_float:g}")
    return as_float


def _kind(value: Any) -> str:
    """A wrong value in a message: its repr with its type for plain values, else only its type."""
    if value is None:
        return "None"
    if isinstance(value, (str, int, float, bool)):
        return f"{_short(value)} ({type(value).__name__})"
    return f"a {type(value).__name__}"


def _short(value: str | float) -> str:
    """The repr, on one line (repr escapes newlines) and cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
