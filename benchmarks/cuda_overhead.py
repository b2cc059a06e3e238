"""Per-step cost of the training monitor on a CUDA device, against the bare loop.

Needs torch with CUDA only (the engine, no notebook): ``python benchmarks/cuda_overhead.py``.
Variants run interleaved in one process; each timing is N steps between two synchronisations.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
from _models import cifar_cnn  # the benchmarks' shared CIFAR-shaped CNN

from torchmagic.core import TrainingMonitor


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 32 * 32, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
    )


def run(build, batch: int, steps: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")

    def loop(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    variants = {
        "bare": None,
        "monitor (every 10)": dict(every=10),
        "monitor + histograms": dict(every=10, histograms=True),
    }
    loop(20)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, kw in variants.items():
            torch.cuda.synchronize()
            t = time.perf_counter()
            if kw is None:
                loop(steps)
            else:
                with TrainingMonitor([model], [opt], **kw):
                    loop(steps)
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t) / steps * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'model':<14}{'variant':<24}{'ms/step':>9}{'ratio':>8}")
    for label, build, batch in (("cnn b32", cifar_cnn, 32), ("cnn b512", cifar_cnn, 512), ("mlp b256", mlp, 256)):
        result = run(build, batch, args.steps, args.repeats)
        for name, ms in result.items():
            print(f"{label:<14}{name:<24}{ms:>9.3f}{ms / result['bare']:>8.3f}")


if __name__ == "__main__":
    main()
