"""Per-step cost of the training monitor on a CUDA device, against the bare loop.

Needs torch with CUDA only (the engine, no notebook): ``python benchmarks/cuda_overhead.py``
(about 3 minutes on one GPU; ``--quick`` for a smoke run, ``--device cpu`` to try it without one).
Variants run interleaved in one process; each timing is N steps between two synchronisations.
Then every loop runs once more under the monitor, a statistics step every step, with
``torch.cuda.set_sync_debug_mode("error")``: any synchronisation the monitor adds to a step
raises there (the refresh, which copies to the host, is held off for that run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from _models import GPT, cifar_cnn  # the benchmarks' shared models

from torchmagic.core import TrainingMonitor


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 32 * 32, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
    )


@dataclass(frozen=True)
class Loop:
    label: str
    build: Callable[[], nn.Module]
    batch: tuple[int, ...]  # the input's shape; images are float, token ids are long
    classes: int
    target: float  # the per-step ratio target
    adam: bool = False

    def inputs(self, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(1)
        if len(self.batch) == 2:  # tokens: predict the next one
            idx = torch.randint(0, self.classes, self.batch, device=device, generator=gen)
            return idx, idx.roll(-1, dims=1)
        x = torch.randn(self.batch, device=device, generator=gen)
        return x, torch.randint(0, self.classes, self.batch[:1], device=device, generator=gen)


LOOPS = {
    "cnn-b32": Loop("cnn b32", cifar_cnn, (32, 3, 32, 32), 10, 1.10),
    "cnn-b512": Loop("cnn b512", cifar_cnn, (512, 3, 32, 32), 10, 1.10),
    "mlp-b256": Loop("mlp b256", mlp, (256, 3, 32, 32), 10, 1.10),
    "gpt2-small": Loop("gpt2-small b8x512", GPT, (8, 512), 50257, 1.03, adam=True),
}
VARIANTS: dict[str, dict | None] = {
    "bare": None,
    "monitor (every 10)": dict(every=10),
    "monitor + histograms": dict(every=10, histograms=True),
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _count_module_calls(model: nn.Module, step: Callable[[], None]) -> int:
    calls = [0]

    def count(*_):
        calls[0] += 1

    handle = nn.modules.module.register_module_forward_pre_hook(count)
    try:
        step()
    finally:
        handle.remove()
    return calls[0]


def run(loop: Loop, steps: int, repeats: int, device: str, sync_check: bool) -> dict:
    torch.manual_seed(0)
    model = loop.build().to(device)
    opt = (
        torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
        if loop.adam
        else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    )
    x, y = loop.inputs(device)

    def step() -> None:
        opt.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out.flatten(0, -2), y.flatten()).backward()
        opt.step()

    def train(n: int) -> None:
        for _ in range(n):
            step()

    train(10)
    calls = _count_module_calls(model, step)
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for r in range(repeats):
        order = list(VARIANTS.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, kw in order:
            _sync(device)
            t = time.perf_counter()
            if kw is None:
                train(steps)
            else:
                with TrainingMonitor([model], [opt], **kw):
                    train(steps)
            _sync(device)
            times[name].append((time.perf_counter() - t) / steps * 1e3)
    result = {"calls": calls, "ms": {k: statistics.median(v) for k, v in times.items()}, "syncs": None}
    if sync_check and device == "cuda":
        torch.cuda.synchronize()
        try:
            with TrainingMonitor([model], [opt], every=1, histograms=True, refresh_interval=3600.0):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    train(20)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            result["syncs"] = "0"
        except RuntimeError as exc:
            result["syncs"] = f"SYNC: {str(exc).splitlines()[0]}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run (300; 60 for GPT-2 small)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated subset of: " + ",".join(LOOPS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-sync-check", dest="sync_check", action="store_false")
    parser.add_argument("--quick", action="store_true", help="few steps and repeats: a smoke run")
    args = parser.parse_args()
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    repeats = 2 if args.quick else args.repeats
    print(f"{'loop':<20}{'variant':<24}{'ms/step':>9}{'ratio':>8}{'+us/step':>10}{'+us/call':>10}  target")
    for key in args.loops.split(","):
        loop = LOOPS[key]
        steps = args.steps or (60 if loop.adam else 300)
        if args.quick:
            steps = max(3, steps // 30)
        result = run(loop, steps, repeats, args.device, args.sync_check)
        ms = result["ms"]
        for name, value in ms.items():
            ratio = value / ms["bare"]
            added = (value - ms["bare"]) * 1e3
            verdict = "" if name != "monitor (every 10)" else f"≤ {loop.target:.2f}: {'ok' if ratio <= loop.target else 'MISSED'}"
            print(
                f"{loop.label:<20}{name:<24}{value:>9.3f}{ratio:>8.3f}{added:>10.1f}{added / result['calls']:>10.2f}  {verdict}"
            )
        syncs = result["syncs"] or "not checked"
        print(f"{loop.label:<20}{result['calls']} module calls per step; synchronisations added by a watched step: {syncs}")


if __name__ == "__main__":
    main()
