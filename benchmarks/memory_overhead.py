"""What ``%memory`` costs: per recorded cell, and per forward pass with ``--by-module``.

    .venv/bin/python benchmarks/memory_overhead.py            # about 30 s on 2 CPU cores
    .venv/bin/python benchmarks/memory_overhead.py --quick    # smoke run
    .venv/bin/python benchmarks/memory_overhead.py --json out.json

1. Per cell: a real InteractiveShell runs the same small cell (a few torch ops) many times, with
   ``%memory off`` and ``%memory on`` (peak from the kernel's high-water mark, and with
   ``--sampling``: from a sampling thread), interleaved in rounds; median wall time of
   ``run_cell`` per variant, overhead = variant minus off. An empty cell (``pass``) too, where the
   overhead is the whole cost.
2. Per forward: the CIFAR CNN (batch 32) and a 6-layer MLP (batch 128), forward with autograd
   on, bare vs ``--by-module`` measuring every pass and every 10th pass; median time per
   forward. A measured pass pays for the hooks and for reading what autograd saved; an
   unmeasured one for two global hook calls per module.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._models import cifar_cnn, seed_everything  # noqa: E402
from torchmagic.core import memtrack  # noqa: E402
from torchmagic.core.memtrack import ModuleMemoryHooks  # noqa: E402

CELLS = {
    "pass": "pass",
    "torch": "_t = torch.randn(256, 256)\n_u = (_t @ _t).relu().sum()",
}


def bench_cells(rounds: int, per_round: int) -> dict:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "torchmagic")
    shell.run_cell("import torch")
    variants = {"off": "off", "on": "on", "on --sampling": "on --sampling"}
    times: dict[str, dict[str, list[float]]] = {cell: {v: [] for v in variants} for cell in CELLS}
    try:
        for r in range(rounds):
            order = list(variants)[r % 3 :] + list(variants)[: r % 3]
            for name, code in CELLS.items():
                for variant in order:
                    shell.run_line_magic("memory", variants[variant])
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        shell.run_cell(code)
                        times[name][variant].append(time.perf_counter() - t0)
                    shell.run_line_magic("memory", "off")
                    memtrack.clear_history()
    finally:
        shell.run_line_magic("unload_ext", "torchmagic")
        InteractiveShell.clear_instance()
    out = {}
    for name, by_variant in times.items():
        medians = {v: statistics.median(ts) * 1e6 for v, ts in by_variant.items()}
        out[name] = {
            "median_us": medians,
            "overhead_us": {v: medians[v] - medians["off"] for v in variants if v != "off"},
            "cells": len(by_variant["off"]),
        }
    return out


def mlp() -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(6):
        layers += [nn.Linear(512, 512), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(512, 10))


def bench_forwards(rounds: int, per_round: int) -> dict:
    seed_everything()
    models = {
        "cifar_cnn (batch 32, 9 modules)": (cifar_cnn(), torch.randn(32, 3, 32, 32)),
        "mlp 6x512 (batch 128, 14 modules)": (mlp(), torch.randn(128, 512)),
    }
    variants = {"bare": None, "--by-module --every 10": 10, "--by-module (every pass)": 1}
    out = {}
    for name, (model, x) in models.items():
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(5):
            model(x)
        for r in range(rounds):
            order = list(variants)[r % 3 :] + list(variants)[: r % 3]
            for variant in order:
                every = variants[variant]
                hooks = ModuleMemoryHooks(every) if every else None
                if hooks:
                    hooks.attach()
                try:
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        model(x)
                        times[variant].append(time.perf_counter() - t0)
                finally:
                    if hooks:
                        hooks.detach()
        medians = {v: statistics.median(ts) * 1e6 for v, ts in times.items()}
        out[name] = {
            "median_us": medians,
            "overhead_us": {v: medians[v] - medians["bare"] for v in variants if v != "bare"},
            "overhead_pct": {v: 100 * (medians[v] / medians["bare"] - 1) for v in variants if v != "bare"},
            "forwards": len(times["bare"]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier figures on a small, shared machine
    rounds, cells, forwards = (3, 20, 10) if args.quick else (9, 60, 40)
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "peak_method": "hwm" if memtrack._reset_hwm() else "sampling",
        "per_cell": bench_cells(rounds, cells),
        "per_forward": bench_forwards(rounds, forwards),
    }
    print(f"torch {results['torch']}, {results['threads']} thread; %memory on peak from: {results['peak_method']}")
    print("\nPer cell (median run_cell time, µs)")
    for name, r in results["per_cell"].items():
        m, o = r["median_us"], r["overhead_us"]
        print(
            f"  {name:<6} off {m['off']:8.1f}   on {m['on']:8.1f} (+{o['on']:.1f})"
            f"   on --sampling {m['on --sampling']:8.1f} (+{o['on --sampling']:.1f})   [{r['cells']} cells each]"
        )
    print("\nPer forward (median, µs)")
    for name, r in results["per_forward"].items():
        m = r["median_us"]
        parts = [f"bare {m['bare']:.1f}"] + [
            f"{v} {m[v]:.1f} (+{r['overhead_us'][v]:.1f}, {r['overhead_pct'][v]:+.1f}%)" for v in r["overhead_us"]
        ]
        print(f"  {name}: " + "   ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
