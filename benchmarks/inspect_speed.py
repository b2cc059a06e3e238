"""How much %tensor_inspect costs, next to the tools people use today (printed, not asserted).

    python benchmarks/inspect_speed.py [--numel 1e8] [--repeat 5]

1. Statistics of a float32 tensor against one ``torch.aminmax`` + ``mean`` + ``std`` on it, and
   lovely-tensors' summary of the same tensor (if installed), clean and with a NaN in it.
2. The layer-by-layer trace of a 100-layer model beyond its bare forward, next to torchinfo's
   summary (if installed) of the same model and input.
Medians of interleaved runs, one process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from torchmagic.core.modtrace import trace_module
from torchmagic.core.tensorstats import inspect_tensor


def median_ms(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def baseline(x: torch.Tensor) -> None:
    torch.aminmax(x)
    x.mean()
    x.std()


def stats_only(x: torch.Tensor) -> None:
    inspect_tensor(x, "x", views=False)


def statistics_section(numel: int, repeat: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(numel)
    fns: dict[str, Callable[[], object]] = {
        "aminmax + mean + std": lambda: baseline(x),
        "%tensor_inspect statistics": lambda: stats_only(x),
    }
    try:
        import lovely_tensors as lt

        fns["lovely-tensors str(lovely(x))"] = lambda: str(lt.lovely(x))
    except ImportError:
        print("(lovely-tensors not installed: pip install lovely-tensors)")
    res = median_ms(fns, repeat)
    base = res["aminmax + mean + std"]
    print(f"statistics of a {numel:.0e}-element float32 tensor, {torch.get_num_threads()} threads")
    for k, v in res.items():
        print(f"  {k:<34} {v:8.1f} ms  {v / base:5.2f}×")
    res_views = median_ms({"with histogram + heatmap view": lambda: inspect_tensor(x.view(10_000, -1), "x")}, 1)
    x[12345] = float("nan")
    with_nan = median_ms({"statistics, one NaN in the tensor": lambda: stats_only(x)}, max(1, repeat // 2))
    for k, v in {**res_views, **with_nan}.items():
        print(f"  {k:<34} {v:8.1f} ms  {v / base:5.2f}×")


def trace_section(repeat: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.ReLU()) if i % 2 else nn.Linear(256, 256) for i in range(100)])
    x = torch.randn(32, 256)

    def bare() -> None:
        with torch.no_grad():
            model(x)

    fns: dict[str, Callable[[], object]] = {
        "bare forward (no_grad)": bare,
        "trace (hooks + FLOPs)": lambda: trace_module(model, (x,)),
        "trace (hooks only)": lambda: trace_module(model, (x,), count_flops=False),
    }
    try:
        import torchinfo

        fns["torchinfo.summary"] = lambda: torchinfo.summary(model, input_data=x, verbose=0)
    except ImportError:
        print("(torchinfo not installed: pip install torchinfo)")
    res = median_ms(fns, repeat)
    base = res["bare forward (no_grad)"]
    modules = sum(1 for _ in model.modules())
    print(f"layer-by-layer trace of a 100-layer model ({modules} modules), batch 32")
    for k, v in res.items():
        extra = f"  (+{v - base:.1f} ms)" if k != "bare forward (no_grad)" else ""
        print(f"  {k:<34} {v:8.1f} ms{extra}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--numel", type=float, default=1e8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    statistics_section(int(args.numel), args.repeat)
    trace_section(args.repeat)


if __name__ == "__main__":
    main()
