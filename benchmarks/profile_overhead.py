"""What ``%%profile`` costs: overhead against raw ``torch.profiler``, and time to the first view.

    .venv/bin/python benchmarks/profile_overhead.py            # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/profile_overhead.py --quick    # smoke run

1. Overhead: the CIFAR CNN loop (batch 32) run N steps under raw ``torch.profiler.profile`` and
   under ``%%profile`` in a real InteractiveShell (same options), interleaved, medians of the
   time the code itself ran. Both with default options and with shapes + memory + stacks.
2. Time to first view: traces of about 10k and 50k events (shapes + memory + stacks); the time
   from the end of the code to the result (trace read + Chrome trace written), to the static
   summary, and to the live explorer (bokeh models built and serialised), against building
   ``prof.events()`` + ``key_averages()`` as torch itself does.
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

from benchmarks._models import cifar_cnn, seed_everything  # noqa: E402

LOOP = """
for _ in range(_steps):
    _opt.zero_grad()
    _lossf(_model(_x), _y).backward()
    _opt.step()
"""


def setup_ns(steps: int) -> dict:
    seed_everything()
    model = cifar_cnn()
    return dict(
        _model=model,
        _opt=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        _x=torch.randn(32, 3, 32, 32),
        _y=torch.randint(0, 10, (32,)),
        _lossf=torch.nn.CrossEntropyLoss(),
        _steps=steps,
    )


def raw(ns: dict, full: bool) -> float:
    from torch.profiler import ProfilerActivity, profile

    kw = dict(record_shapes=True, profile_memory=True, with_stack=True) if full else {}
    if full:
        kw["experimental_config"] = torch._C._profiler._ExperimentalConfig(verbose=True)
    code = compile(LOOP, "<bench>", "exec")
    with profile(activities=[ProfilerActivity.CPU], **kw) as prof:
        t = time.perf_counter()
        exec(code, ns)
        elapsed = time.perf_counter() - t
    prof.export_chrome_trace("/dev/null")  # what a user of the raw profiler does next
    return elapsed


def magic(shell, ns: dict, full: bool) -> float:
    shell.user_ns.update(ns)
    opts = "--record-shapes --profile-memory --with-stack " if full else ""
    r = shell.run_cell_magic("profile", opts + "--display none", LOOP)
    return r.wall_s


def overhead(shell, steps: int, repeats: int, full: bool) -> dict:
    times: dict[str, list[float]] = {"raw": [], "magic": []}
    raw(setup_ns(2), full), magic(shell, setup_ns(2), full)  # warm-up
    for i in range(repeats):
        order = ("raw", "magic") if i % 2 == 0 else ("magic", "raw")
        for kind in order:
            ns = setup_ns(steps)
            times[kind].append(raw(ns, full) if kind == "raw" else magic(shell, ns, full))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"raw_s": med["raw"], "magic_s": med["magic"], "ratio": med["magic"] / med["raw"]}


def first_view(shell, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from torchmagic.display import profile_view

    shell.user_ns.update(setup_ns(steps))
    t_end = time.perf_counter()
    r = shell.run_cell_magic("profile", "--record-shapes --profile-memory --with-stack --display none", LOOP)
    t_end = t_end + r.wall_s  # the code ended here; everything after is ours
    t_result = time.perf_counter()
    page = profile_view.html(r)
    t_static = time.perf_counter()
    explorer = profile_view.ProfileExplorer(r)
    state = explorer.plot.get_state()
    t_live = time.perf_counter()
    explorer.close()

    # torch's own path to a table on the same kind of trace
    ns = setup_ns(steps)
    with profile(
        activities=[ProfilerActivity.CPU],
        record_shapes=True,
        profile_memory=True,
        with_stack=True,
        experimental_config=torch._C._profiler._ExperimentalConfig(verbose=True),
    ) as prof:
        exec(compile(LOOP, "<bench>", "exec"), ns)
    t = time.perf_counter()
    prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    torch_table = time.perf_counter() - t
    return {
        "events": r.events,
        "ops": r.op_count,
        "timeline_shown": r.timeline.shown,
        "result_s": round(t_result - t_end, 3),
        "analysis_s": round(r.analysis_s, 3),
        "static_view_s": round(t_static - t_result, 3),
        "static_view_bytes": len(page),
        "live_view_s": round(t_live - t_static, 3),
        "live_view_state_bytes": len(json.dumps(state, default=str)),
        "torch_events_key_averages_table_s": round(torch_table, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "torchmagic")
    steps, repeats = (5, 3) if args.quick else (20, 7)
    out = {
        "overhead_default": overhead(shell, steps, repeats, full=False),
        "overhead_shapes_memory_stacks": overhead(shell, steps, repeats, full=True),
        # about 300 events per CNN step with shapes + memory + stacks
        "first_view_10k": first_view(shell, 34),
        "first_view_50k": first_view(shell, 5 if args.quick else 166),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
