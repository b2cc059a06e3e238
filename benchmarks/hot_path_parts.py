"""Where an unwatched step's cost goes: the monitor run with one of its three per-step attach points
taken out at a time, against the bare loop and the whole monitor, in one process, interleaved.

Run from the repository root::

    .venv/bin/python benchmarks/hot_path_parts.py                  # tiny MLP, 15 rounds, ~2 minutes
    .venv/bin/python benchmarks/hot_path_parts.py --model cifar-cnn --rounds 5

An unwatched step runs torchmagic code at three points only: the root model's entry (its class's
``forward``, replaced for the run, or a forward pre-hook of its own), the ``torch.autograd.backward``
wrapper and the global optimizer post-step hook. Each variant runs
``torchmagic.train(display="none", every=0)`` (no statistics steps, so the medians are unwatched
steps) and, after three steps, takes one point out (``no root entry``, ``no backward wrapper``,
``no optimizer hook``) or all three; what a point costs is the whole monitor's added time less the
variant's. The points are put back before the run ends. This reads private torch attributes
(``Module._forward_pre_hooks``, ``optimizer._global_optimizer_post_hooks``): a benchmark, not an API.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.optim import optimizer as optim_module

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # benchmark the working tree's torchmagic
    sys.path.insert(1, str(HERE.parent))
from _models import HOT_PATH_MODELS, ModelSpec, train_step  # noqa: E402

import torchmagic  # noqa: E402

VARIANTS = ("bare", "monitor", "no root entry", "no backward wrapper", "no optimizer hook", "none of the three")


@contextlib.contextmanager
def _without(variant: str, model: torch.nn.Module) -> Iterator[None]:
    """The monitor's attach points that ``variant`` takes out, until the block ends."""
    pre_hooks = dict(model._forward_pre_hooks)
    cls = type(model)
    replaced = cls.__dict__.get("forward")
    original = getattr(replaced, "__wrapped__", None)  # the class's own forward, when the monitor replaced it
    post_hooks = dict(optim_module._global_optimizer_post_hooks)
    backward = torch.autograd.backward
    every = variant == "none of the three"
    if every or variant == "no root entry":
        model._forward_pre_hooks.clear()
        if original is not None:
            cls.forward = original
    if every or variant == "no backward wrapper":
        torch.autograd.backward = backward.__wrapped__  # type: ignore[attr-defined]
    if every or variant == "no optimizer hook":
        optim_module._global_optimizer_post_hooks.clear()
    try:
        yield
    finally:
        model._forward_pre_hooks.update(pre_hooks)
        if original is not None:
            cls.forward = replaced
        torch.autograd.backward = backward
        optim_module._global_optimizer_post_hooks.update(post_hooks)


def median_step(spec: ModelSpec, batches: list, variant: str, steps: int) -> float:
    """The median seconds of a step of one run of ``variant``."""
    model, opt, crit = spec.make_run()
    times = []
    gc.collect()
    with torchmagic.train(display="none", every=0) if variant != "bare" else contextlib.nullcontext():
        for x, y in batches[:3]:  # the monitor meets the model and the optimizer
            train_step(model, opt, crit, x, y)
        with _without(variant, model) if variant not in ("bare", "monitor") else contextlib.nullcontext():
            for i in range(steps):
                x, y = batches[i % len(batches)]
                t0 = time.perf_counter()
                train_step(model, opt, crit, x, y)
                times.append(time.perf_counter() - t0)
    return statistics.median(times[20:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-mlp", choices=sorted(HOT_PATH_MODELS))
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds of every variant")
    p.add_argument("--steps", type=int, default=4000, help="steps per run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    spec = HOT_PATH_MODELS[args.model]
    batches = spec.make_batches(16)
    for variant in VARIANTS:  # warm-up
        median_step(spec, batches, variant, max(50, args.steps // 10))
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            runs[variant].append(median_step(spec, batches, variant, args.steps))
    bare = statistics.median(runs["bare"])
    ratios = {v: sorted(m / b for m, b in zip(runs[v], runs["bare"])) for v in VARIANTS}
    ratio = {v: statistics.median(r) for v, r in ratios.items()}
    print(f"torch {torch.__version__}, {args.model}, {args.rounds} rounds x {args.steps} steps, every=0, perf_counter per step")
    print(f"{'variant':22s} {'ratio':>6s} {'spread':>12s} {'+us/step':>9s} {'part us':>8s}")
    for v in VARIANTS:
        r = ratios[v]
        added = (ratio[v] - 1) * bare * 1e6
        part = (ratio["monitor"] - ratio[v]) * bare * 1e6 if v not in ("bare", "monitor") else float("nan")
        print(f"{v:22s} {ratio[v]:6.3f} {r[len(r) // 4]:5.3f}-{r[(3 * len(r)) // 4]:5.3f} {added:9.1f} {part:8.1f}")
    print(f"(bare median step {bare * 1e3:.3f} ms; 'part us': what taking the point out saved)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
