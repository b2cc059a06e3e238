"""What one training step costs under torchmagic, and whether that cost grows with the run.

Run from the repository root::

    .venv/bin/python benchmarks/hot_path.py             # about 6 minutes on 2 quiet CPU cores
    .venv/bin/python benchmarks/hot_path.py --quick     # about a minute, a smoke run
    .venv/bin/python benchmarks/hot_path.py --rounds 15 --long-steps 40000 --json out.json

Two tables, every figure against the bare loop in the same process, runs interleaved:

* **per step**: three loops of very different sizes (a tiny MLP, a 12-layer TransformerEncoder of
  ~110 module calls a step, the seed CIFAR CNN), each run ``--rounds`` times bare and under
  ``torchmagic.train(display="none")`` with the default schedule (statistics every 10 steps, the
  period doubled while that would be more than 20 statistics steps a second), order alternating.
  ``ms/step`` is the median over rounds of each run's median step; ``ratio`` the median of the
  per-round ratios (a round's two runs sit side by side), with their spread; ``+us/step`` the
  added time, and ``+us/call`` that divided by the module calls of a step. ``mean ratio`` uses
  each run's mean step, so it includes the scheduled statistics and the refreshes.
* **whole run**: the tiny MLP for ``--long-steps`` steps (whole-run wall clock, so the refreshes,
  the scheduled statistics and the display are all in), bare, with ``display="none"``, with the
  text line (what a script gets by default) and with the live dashboard (the widget view, its comm
  messages recorded instead of sent). ``first/last`` compares the first and last tenth of the run:
  a cost that grew with the steps recorded would show there. ``B/row`` is the history's size per step.

Timing is ``time.perf_counter`` around each step inside the loop. The machine this was written on
is shared: read the spread before trusting a ratio within a few percent.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.modules import module as nn_module

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # benchmark the working tree's torchmagic
    sys.path.insert(1, str(HERE.parent))
from _models import HOT_PATH_MODELS, ModelSpec, train_step  # noqa: E402

import torchmagic  # noqa: E402

TARGETS = {"tiny-mlp": 1.10, "transformer-12": 1.05, "cifar-cnn": 1.03}  # median step, display none
WALL_TARGET = 1.15  # the long tiny run's wall clock with the default display (the text line in a script)


Variant = Callable[[], contextlib.AbstractContextManager] | None  # None: the bare loop


@dataclass
class StepRow:
    model: str
    module_calls: int
    bare_ms: float
    monitored_ms: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    added_us: float
    added_us_per_call: float
    mean_ratio: float
    bare_spread: float  # slowest bare run median over the fastest


@dataclass
class WallRow:
    variant: str
    seconds: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    first_last: float  # mean step of the last tenth over the first tenth
    bytes_per_row: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)


def module_calls(spec: ModelSpec) -> int:
    model, opt, crit = spec.make_run()
    ((x, y),) = spec.make_batches(1)
    count = [0]
    handle = nn_module.register_module_forward_pre_hook(lambda m, a: count.__setitem__(0, count[0] + 1))
    try:
        train_step(model, opt, crit, x, y)
    finally:
        handle.remove()
    return count[0]


def timed_steps(
    spec: ModelSpec, steps: int, batches: list, monitored: Callable[[], contextlib.AbstractContextManager] | None
) -> list[float]:
    """Seconds per step of one run, the first few dropped (allocator, caches)."""
    model, opt, crit = spec.make_run()
    times: list[float] = []
    gc.collect()
    with monitored() if monitored is not None else contextlib.nullcontext():
        for i in range(steps):
            x, y = batches[i % len(batches)]
            t0 = time.perf_counter()
            train_step(model, opt, crit, x, y)
            times.append(time.perf_counter() - t0)
    return times[5:]


def _quiet_train(display: str) -> Callable[[], contextlib.AbstractContextManager]:
    return lambda: torchmagic.train(display=display)


def per_step(spec: ModelSpec, rounds: int, steps: int) -> StepRow:
    batches = spec.make_batches(16)
    timed_steps(spec, max(20, steps // 4), batches, _quiet_train("none"))  # warm-up, both paths
    timed_steps(spec, max(20, steps // 4), batches, None)
    bare: list[list[float]] = []
    mon: list[list[float]] = []
    for r in range(rounds):
        order = (None, _quiet_train("none")) if r % 2 == 0 else (_quiet_train("none"), None)
        for variant in order:
            (bare if variant is None else mon).append(timed_steps(spec, steps, batches, variant))
    b_med = [statistics.median(t) for t in bare]
    m_med = [statistics.median(t) for t in mon]
    paired = sorted(m / b for m, b in zip(m_med, b_med))
    calls = module_calls(spec)
    added = (statistics.median(m_med) - statistics.median(b_med)) * 1e6
    mean_ratio = statistics.median(statistics.fmean(m) / statistics.fmean(b) for m, b in zip(mon, bare))
    return StepRow(
        spec.name,
        calls,
        statistics.median(b_med) * 1e3,
        statistics.median(m_med) * 1e3,
        statistics.median(paired),
        paired[len(paired) // 4],
        paired[(3 * len(paired)) // 4],
        added,
        added / calls,
        mean_ratio,
        max(b_med) / min(b_med),
    )


def _dashboard() -> Callable[[], contextlib.AbstractContextManager]:
    """``torchmagic.train`` with the live dashboard, its widget traffic recorded instead of sent."""
    from torchmagic.display.testing import recording_comms

    @contextlib.contextmanager
    def run():  # type: ignore[no-untyped-def]
        with recording_comms(), torchmagic.train(display="widgets"):
            yield

    return run


def _text() -> Callable[[], contextlib.AbstractContextManager]:
    @contextlib.contextmanager
    def run():  # type: ignore[no-untyped-def]
        with contextlib.redirect_stdout(io.StringIO()), torchmagic.train(display="text"):
            yield

    return run


def whole_run(spec: ModelSpec, rounds: int, steps: int, dashboard: bool) -> list[WallRow]:
    batches = spec.make_batches(16)
    variants: dict[str, Variant] = {
        "bare": None,
        "display none": _quiet_train("none"),
        "text line (default)": _text(),
    }
    if dashboard:
        variants["dashboard (widgets)"] = _dashboard()
    for v in variants.values():
        timed_steps(spec, 200, batches, v)  # warm-up: imports, bokeh, first refreshes
    runs: dict[str, list[list[float]]] = {k: [] for k in variants}
    for r in range(rounds):
        names = list(variants)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            runs[name].append(timed_steps(spec, steps, batches, variants[name]))
    bare = [sum(t) for t in runs["bare"]]
    rows = []
    for name, rs in runs.items():
        totals = [sum(t) for t in rs]
        paired = sorted(t / b for t, b in zip(totals, bare))
        tenth = max(1, len(rs[0]) // 10)
        first_last = statistics.median(statistics.fmean(t[-tenth:]) / statistics.fmean(t[:tenth]) for t in rs)
        rows.append(WallRow(name, statistics.median(totals), statistics.median(paired), paired[0], paired[-1], first_last))
    rows[0].bytes_per_row = 0.0
    run = torchmagic.last_run()
    for row in rows[1:]:
        row.bytes_per_row = run.columns.nbytes / max(1, run.columns.rows) if run is not None else float("nan")
    return rows


@dataclass
class ScaleRow:
    model: str
    module_calls: int
    parameters: int  # parameter tensors
    watched_extra_ms: float  # a watched, scheduled step (every=1) over an unwatched one (every=0)
    refresh_us_per_step: float  # host work per plain step at the refresh
    refresh_us_per_scheduled_step: float


def _mean_step(spec: ModelSpec, batches: list, steps: int, every: int) -> float:
    from torchmagic.core import TrainingMonitor

    model, opt, crit = spec.make_run()
    with TrainingMonitor([model], [opt], every=every, catch_sigint=False):
        t0 = time.perf_counter()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            train_step(model, opt, crit, x, y)
        return (time.perf_counter() - t0) / steps


def _refresh_cost(spec: ModelSpec, batches: list, steps: int, every: int) -> float:
    """Seconds of one refresh that absorbs ``steps`` finished steps, per step."""
    from torchmagic.core import TrainingMonitor

    model, opt, crit = spec.make_run()
    mon = TrainingMonitor([model], [opt], every=every, catch_sigint=False, refresh_interval=1e9)
    with mon:
        for i in range(steps):
            x, y = batches[i % len(batches)]
            train_step(model, opt, crit, x, y)
        t0 = time.perf_counter()
        mon._refresh(time.perf_counter())
        return (time.perf_counter() - t0) / steps


def scale(spec: ModelSpec, rounds: int, steps: int) -> ScaleRow:
    """The constants of benchmarks/README.md's cost model, for one loop."""
    batches = spec.make_batches(16)
    model, _, _ = spec.make_run()
    watched, unwatched, plain, rich = [], [], [], []
    for _ in range(rounds):
        watched.append(_mean_step(spec, batches, steps, every=1))
        unwatched.append(_mean_step(spec, batches, steps, every=0))
        plain.append(_refresh_cost(spec, batches, steps, every=0))
        rich.append(_refresh_cost(spec, batches, steps, every=1))
    return ScaleRow(
        spec.name,
        module_calls(spec),
        len(list(model.parameters())),
        (statistics.median(watched) - statistics.median(unwatched)) * 1e3,
        statistics.median(plain) * 1e6,
        statistics.median(rich) * 1e6,
    )


def print_scale(rows: list[ScaleRow]) -> None:
    head = f"{'loop':<15} {'calls':>5} {'params':>6} {'watched +ms':>11} {'refresh us/step':>15} {'us/sched. step':>14}"
    print("\nscale constants (a watched step every=1 vs every=0; one refresh absorbing the steps of a run)")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.model:<15} {r.module_calls:>5} {r.parameters:>6} {r.watched_extra_ms:11.3f} "
            f"{r.refresh_us_per_step:15.1f} {r.refresh_us_per_scheduled_step:14.1f}"
        )


def print_tables(step_rows: list[StepRow], wall_rows: list[WallRow], long_steps: int) -> None:
    head = (
        f"{'loop':<15} {'calls':>5} {'bare ms':>8} {'ms/step':>8} {'ratio':>6} {'spread':>11} "
        f"{'+us/step':>9} {'+us/call':>9} {'mean ratio':>10} {'target':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in step_rows:
        target = TARGETS.get(r.model)
        verdict = "" if target is None else (f"<={target:.2f} " + ("ok" if r.ratio <= target else "MISSED"))
        print(
            f"{r.model:<15} {r.module_calls:>5} {r.bare_ms:8.3f} {r.monitored_ms:8.3f} {r.ratio:6.3f} "
            f"{r.ratio_lo:5.3f}-{r.ratio_hi:5.3f} {r.added_us:9.1f} {r.added_us_per_call:9.2f} {r.mean_ratio:10.3f} {verdict}"
        )
    noisy = [f"{r.model} {r.bare_spread:.2f}x" for r in step_rows if r.bare_spread > 1.15]
    if noisy:
        print(f"  noise: bare run medians varied by {', '.join(noisy)} (other load on the machine)")
    print(f"\nwhole run: tiny-mlp, {long_steps} steps, wall clock")
    head = f"{'variant':<22} {'seconds':>8} {'ratio':>6} {'range':>11} {'last/first':>10} {'B/row':>6}"
    print(head)
    print("-" * len(head))
    for r in wall_rows:
        print(
            f"{r.variant:<22} {r.seconds:8.2f} {r.ratio:6.3f} {r.ratio_lo:5.3f}-{r.ratio_hi:5.3f} "
            f"{r.first_last:10.3f} {r.bytes_per_row:6.1f}"
        )
    default = next((r for r in wall_rows if r.variant.startswith("text")), None)
    if default is not None:
        print(f"  target: default display <= {WALL_TARGET:.2f}x: {'ok' if default.ratio <= WALL_TARGET else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="interleaved bare/monitored pairs per loop; default 9 (3 quick)")
    p.add_argument("--steps", type=int, default=None, help="steps per per-step run (tiny MLP 4x, CNN and transformer 1/8)")
    p.add_argument("--long-steps", type=int, default=None, help="steps of the whole-run table; default 40000 (5000 quick)")
    p.add_argument("--long-rounds", type=int, default=None, help="rounds of the whole-run table; default 3 (1 quick)")
    p.add_argument("--models", default=",".join(HOT_PATH_MODELS), help="comma-separated subset of: " + ",".join(HOT_PATH_MODELS))
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="leave the dashboard out of the whole run")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: less noise from the other core)")
    p.add_argument("--scale", action="store_true", help="also measure the constants of the cost model (README)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    rounds = a.rounds or (3 if a.quick else 9)
    steps = a.steps or (300 if a.quick else 1200)
    long_steps = a.long_steps or (5000 if a.quick else 40_000)
    long_rounds = a.long_rounds if a.long_rounds is not None else (1 if a.quick else 3)
    torch.set_num_threads(a.threads)
    began = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {rounds} rounds; timing: per-step perf_counter")
    step_rows = []
    for name in a.models.split(","):
        spec = HOT_PATH_MODELS[name.strip()]
        # The tiny MLP runs 4 x --steps (about 0.7 s): long enough for the default schedule to settle
        # on its period (it looks at the step rate over 0.2 s windows), as it does in a real run.
        n = 4 * steps if spec.name == "tiny-mlp" else max(40, steps // 8)
        step_rows.append(per_step(spec, rounds, n))
        print(f"  {spec.name} done at {time.perf_counter() - began:.0f} s", flush=True)
    wall_rows = whole_run(HOT_PATH_MODELS["tiny-mlp"], long_rounds, long_steps, a.dashboard) if long_rounds else []
    scale_rows = []
    if a.scale:
        for name in a.models.split(","):
            spec = HOT_PATH_MODELS[name.strip()]
            scale_rows.append(scale(spec, max(1, rounds // 3), steps if spec.name == "tiny-mlp" else max(40, steps // 8)))
    print()
    print_tables(step_rows, wall_rows, long_steps)
    if scale_rows:
        print_scale(scale_rows)
    print(f"\n(whole benchmark: {time.perf_counter() - began:.0f} s)")
    if a.json:
        a.json.write_text(
            json.dumps({"per_step": [asdict(r) for r in step_rows], "whole_run": [asdict(r) for r in wall_rows]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
