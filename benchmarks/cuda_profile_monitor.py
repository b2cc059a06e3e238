"""Where the monitor's per-step host time goes on a CUDA device (cProfile of the hooks)."""

from __future__ import annotations

import cProfile
import pstats

import torch
import torch.nn as nn
from _models import cifar_cnn  # the benchmarks' shared CIFAR-shaped CNN

from torchmagic.core import TrainingMonitor


def main() -> None:
    torch.manual_seed(0)
    model = cifar_cnn().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(32, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (32,), device="cuda")

    def loop(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    loop(20)
    with TrainingMonitor([model], [opt]):
        profiler = cProfile.Profile()
        profiler.enable()
        loop(500)
        torch.cuda.synchronize()
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
