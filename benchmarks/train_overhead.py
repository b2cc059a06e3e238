"""What does watching a training loop cost? torchmagic's ``%%train`` against the bare loop and peers.

Run from the repository root::

    .venv/bin/python benchmarks/train_overhead.py            # about 2.5 minutes on 2 quiet CPU cores
    .venv/bin/python benchmarks/train_overhead.py --quick    # under 40 s, a smoke run
    .venv/bin/python benchmarks/train_overhead.py --steps 200 --repeats 7 --json out.json

Two models (a CIFAR-style CNN, batch 32, and an MLP, batch 128; SGD with momentum, synthetic data
generated once) run these variants in one process, round-robin, several repeats:

* ``bare``: the plain loop (zero_grad, forward, loss, backward, step);
* ``%%train``: the same loop text run as a cell through a real IPython shell under ``%%train``
  (outside a kernel the magic prints a text progress line; it stays on, captured);
* ``%%train --histograms``: the same with gradient histograms;
* ``livelossplot``: ``PlotLosses(outputs=[ExtremaPrinter()])`` updated and sent every step;
* ``fastprogress``: ``progress_bar`` over the batches, its comment updated every step;
* ``tensorboard``: ``SummaryWriter.add_scalar(loss)`` and ``add_histogram`` of every parameter's
  gradient, every step, into a temporary directory.

Timing method (the same for every variant): every variant, ``bare`` included, is a cell executed
by the same ``InteractiveShell`` with ``run_cell``; the loop body ends with
``_bench_stamps.append(perf_counter())``. A step's time is the difference of consecutive stamps,
so it holds everything that runs between two steps (hooks, iterator wrappers, refreshes); the
first ``--skip`` steps of each run are dropped. Per variant:

* ``ms/step``: the median over repeats of each run's median step (robust to a few runs that
  other processes slowed down; the machine this was written on is shared and noisy);
* ``ratio``: ``ms/step`` over bare's; ``range``: the spread of the per-repeat ratios (each repeat
  pairs runs made side by side), a gauge of the noise; ``best``: the fastest run's median over
  bare's fastest (noise only ever adds time, so this is the least disturbed estimate);
* ``mean ms`` and its ratio: the median over repeats of each run's mean step, which shows
  periodic costs that a median step hides (a refresh every quarter second, statistics every N
  steps) while a few disturbed runs do not move it;
* ``total s``: the wall time of the whole cell (median over repeats); ``outside ms``: the part of
  it spent before the first step and after the last (setup, closing refresh, summary), estimated
  as the cell's time less the mean step times the number of steps.

Every run rebuilds the model and optimizer from the same seed and uses the same batches.
Before the timed repeats every variant runs once untimed (warm-up: imports, allocator, caches).
Widget traffic of the live dashboard is measured separately, see ``measure_widget_traffic``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # benchmark the working tree's torchmagic
    sys.path.insert(1, str(HERE.parent))
from _models import MODELS, ModelSpec, cycle_batches  # noqa: E402

DISTINCT_BATCHES = 16

# Targets the team set for CPU (ratios of the median step time to the bare loop).
TARGETS = {
    "%%train": 1.03,
    "%%train --histograms": 1.05,
}
NOISY_SPREAD = 1.15  # bare's slowest run median over its fastest beyond which to warn
TARGET_MSG_PER_S = 5.0
TARGET_KB_PER_S = 20.0


# --------------------------------------------------------------------------------------------
# The cells
# --------------------------------------------------------------------------------------------

STEP = """\
    optimizer.zero_grad()
    output = model(x)
    loss = criterion(output, y)
    loss.backward()
    optimizer.step()
"""
STAMP = "    _bench_stamps.append(_bench_clock())\n"

LOOP = "for x, y in loader:\n" + STEP + STAMP


@dataclass(frozen=True)
class Variant:
    name: str
    cell: str
    needs: str | None = None  # "torchmagic" or a module that must import

    def source(self) -> str:
        return self.cell


def _cell(head: str, loop_line: str, extra: str, tail: str = "") -> str:
    return head + loop_line + STEP + extra + STAMP + tail


VARIANTS: list[Variant] = [
    Variant("bare", LOOP),
    Variant("%%train", "%%train\n" + LOOP, needs="torchmagic"),
    Variant("%%train --histograms", "%%train --histograms\n" + LOOP, needs="torchmagic"),
    Variant(
        "livelossplot",
        _cell(
            "liveloss = PlotLosses(outputs=[ExtremaPrinter()])\n",
            "for x, y in loader:\n",
            '    liveloss.update({"loss": loss.item()})\n    liveloss.send()\n',
        ),
        needs="livelossplot",
    ),
    Variant(
        "fastprogress",
        _cell(
            "pb = progress_bar(loader)\n",
            "for x, y in pb:\n",
            '    pb.comment = f"loss {loss.item():.4f}"\n',
        ),
        needs="fastprogress",
    ),
    Variant(
        "tensorboard",
        _cell(
            "writer = SummaryWriter(_bench_logdir)\n",
            "for step, (x, y) in enumerate(loader):\n",
            '    writer.add_scalar("loss", loss.item(), step)\n'
            "    for name, p in model.named_parameters():\n"
            '        writer.add_histogram(f"grad/{name}", p.grad, step)\n',
            "writer.close()\n",
        ),
        needs="tensorboard",
    ),
]


# --------------------------------------------------------------------------------------------
# The shell
# --------------------------------------------------------------------------------------------


def make_shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no sqlite file in the user's profile
    return InteractiveShell.instance(config=config)


def load_torchmagic(shell) -> str | None:
    """Load the extension; None when it loaded, else why not."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            result = shell.run_line_magic("load_ext", "torchmagic")
    except Exception as exc:  # noqa: BLE001 - reported, the other variants still run
        return f"%load_ext torchmagic failed: {type(exc).__name__}: {exc}"
    if result is not None and "not an IPython extension" in str(result):
        return str(result)
    if "train" not in shell.magics_manager.magics.get("cell", {}):
        out = buf.getvalue().strip()
        return "%load_ext torchmagic registered no %%train cell magic" + (f" ({out})" if out else "")
    return None


def peer_namespace() -> tuple[dict, dict[str, str]]:
    """Names the peer cells use, imported once outside the timing; and why any is missing."""
    ns: dict = {}
    missing: dict[str, str] = {}
    try:
        from livelossplot import PlotLosses
        from livelossplot.outputs import ExtremaPrinter

        ns.update(PlotLosses=PlotLosses, ExtremaPrinter=ExtremaPrinter)
    except Exception as exc:  # noqa: BLE001
        missing["livelossplot"] = f"{type(exc).__name__}: {exc}"
    try:
        from fastprogress.fastprogress import progress_bar

        ns.update(progress_bar=progress_bar)
    except Exception as exc:  # noqa: BLE001
        missing["fastprogress"] = f"{type(exc).__name__}: {exc}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter

        ns.update(SummaryWriter=SummaryWriter)
    except Exception as exc:  # noqa: BLE001
        missing["tensorboard"] = f"{type(exc).__name__}: {exc}"
    return ns, missing


@dataclass
class RunResult:
    steps: list[float] = field(default_factory=list)  # seconds per kept step
    total: float = math.nan  # seconds, whole cell
    outside: float = math.nan  # seconds spent in the cell before the first step and after the last
    error: str | None = None
    output: str = ""


def run_variant(shell, spec: ModelSpec, variant: Variant, loader: list, logroot: str, skip: int) -> RunResult:
    model, optimizer, criterion = spec.make_run()
    stamps: list[float] = []
    logdir = tempfile.mkdtemp(dir=logroot)
    shell.user_ns.update(
        model=model,
        optimizer=optimizer,
        criterion=criterion,
        loader=loader,
        _bench_stamps=stamps,
        _bench_clock=time.perf_counter,
        _bench_logdir=logdir,
    )
    gc.collect()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        t0 = time.perf_counter()
        result = shell.run_cell(variant.source(), store_history=True)
        t1 = time.perf_counter()
    shutil.rmtree(logdir, ignore_errors=True)
    run = RunResult(total=t1 - t0, output=buf.getvalue())
    if not result.success:
        exc = result.error_before_exec or result.error_in_exec
        run.error = f"{type(exc).__name__}: {exc}\n{_tail(run.output, 2000)}"
        return run
    if len(stamps) != len(loader):
        run.error = f"the cell ran {len(stamps)} steps, expected {len(loader)}\n{_tail(run.output, 2000)}"
        return run
    diffs = [b - a for a, b in zip(stamps, stamps[1:])]
    run.steps = diffs[skip:] if len(diffs) > skip else diffs
    # Time before the first step and after the last, estimating the first step by the mean one.
    mean_step = (stamps[-1] - stamps[0]) / len(diffs) if diffs else 0.0
    run.outside = run.total - mean_step * len(stamps)
    return run


def _tail(text: str, n: int) -> str:
    text = text.replace("\r", "\n")
    return text[-n:]


# --------------------------------------------------------------------------------------------
# Widget traffic (needs torchmagic.display.testing.recording_comms and torchmagic.train)
# --------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    msg_per_s: float = math.nan
    kb_per_s: float = math.nan
    window_s: float = math.nan
    messages_total: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    ms_per_step: float = math.nan
    error: str | None = None


def _normalize(entry) -> tuple[str | None, object, list]:
    """A recorded message as (msg_type, data, buffers): ``Recorder.messages`` holds
    (msg_type, data, buffers); a (msg_dict, buffers) pair is accepted too."""
    if isinstance(entry, tuple) and len(entry) == 3:
        return entry[0], entry[1], list(entry[2] or ())
    if isinstance(entry, tuple) and len(entry) == 2:
        msg, buffers = entry
        kind = msg.get("msg_type") if isinstance(msg, dict) else None
        return kind, msg, list(buffers or ())
    return None, entry, []


def _message_size(data, buffers) -> int:
    size = len(json.dumps(data, default=str, separators=(",", ":")).encode())
    for b in buffers:
        size += memoryview(b).nbytes
    return size


def _message_kind(kind, data) -> str:
    kind = kind or "msg"
    if isinstance(data, dict):
        data = data.get("data", data) if "method" not in data else data
        method = data.get("method") if isinstance(data, dict) else None
        inner = data.get("content") if isinstance(data, dict) else None
        if isinstance(inner, dict) and "kind" in inner:
            method = f"{method}:{inner['kind']}"
        elif isinstance(inner, dict) and "events" in inner:
            method = f"{method}:bokeh-events"
        elif method == "update" and isinstance(data.get("state"), dict):
            method = "update:" + ",".join(sorted(data["state"]))[:40]
        if method:
            kind = f"{kind}/{method}"
    return kind


def measure_widget_traffic(
    spec: ModelSpec, batches: list, seconds: float, warmup_s: float, bare_ms_per_step: float, display: str = "widgets"
) -> Traffic:
    """Messages/s and KB/s that the live widget dashboard sends in steady state.

    Runs the plain loop for `seconds` (by the clock) inside ``torchmagic.train(display=display)`` with
    every comm replaced by a recorder, samples the number of recorded messages at every step
    and counts only the window after `warmup_s` (widget creation and the first render are not
    steady state) up to the last step (the closing refresh is not either). A message's size is
    its JSON plus its binary buffers.
    """
    try:
        import torchmagic
        from torchmagic.display.testing import recording_comms
    except Exception as exc:  # noqa: BLE001
        return Traffic(error=f"not available yet ({type(exc).__name__}: {exc})")
    train = getattr(torchmagic, "train", None)
    if train is None:
        return Traffic(error="not available yet (torchmagic.train is missing)")

    # Enough batches for `seconds` at the bare speed, twice over; the loop stops on the clock.
    steps = max(40, math.ceil(2 * seconds * 1000.0 / max(bare_ms_per_step, 0.05)))
    loader = cycle_batches(batches, steps)
    model, optimizer, criterion = spec.make_run()
    samples: list[tuple[float, int]] = []
    gc.collect()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), recording_comms() as rec:
            messages = rec.messages
            with train(model, optimizer, display=display, histograms=False):
                for x, y in loader:
                    optimizer.zero_grad()
                    output = model(x)
                    loss = criterion(output, y)
                    loss.backward()
                    optimizer.step()
                    now = time.perf_counter()
                    samples.append((now, len(messages)))
                    if now - samples[0][0] >= seconds:
                        break
            recorded = list(messages)
    except Exception:  # noqa: BLE001
        return Traffic(error="failed:\n" + traceback.format_exc(limit=8) + _tail(buf.getvalue(), 1000))

    t_first = samples[0][0]
    start = next((i for i, (t, _) in enumerate(samples) if t - t_first >= warmup_s), None)
    if start is None or start >= len(samples) - 2:
        return Traffic(error=f"run too short for a steady-state window ({len(samples)} steps)")
    t_start, n_start = samples[start]
    t_end, n_end = samples[-1]
    window = t_end - t_start
    in_window = [_normalize(e) for e in recorded[n_start:n_end]]
    nbytes = sum(_message_size(data, bufs) for _, data, bufs in in_window)
    kinds: dict[str, int] = {}
    for kind, data, _ in in_window:
        k = _message_kind(kind, data)
        kinds[k] = kinds.get(k, 0) + 1
    step_times = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
    return Traffic(
        msg_per_s=len(in_window) / window,
        kb_per_s=nbytes / 1024.0 / window,
        window_s=window,
        messages_total=len(recorded),
        kinds=kinds,
        ms_per_step=statistics.median(step_times) * 1e3,
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per timed CNN run (the MLP runs 2x as many; its steps are short); default 80, 20 with --quick",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed rounds; default 7, 2 with --quick")
    p.add_argument("--quick", action="store_true", help="a smoke run, under 40 s")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every variant")
    p.add_argument("--skip", type=int, default=3, help="steps dropped at the start of each run")
    p.add_argument("--models", default="cnn,mlp", help="comma-separated subset of: " + ",".join(MODELS))
    p.add_argument("--variants", default=None, help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    p.add_argument(
        "--traffic-seconds", type=float, default=None, help="length of the widget-traffic run; default 8, 3 with --quick"
    )
    p.add_argument(
        "--no-stock-traffic",
        dest="stock_traffic",
        action="store_false",
        help="skip the traffic run of the stock-widgets fallback dashboard",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 20 if args.quick else 80
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.traffic_seconds is None:
        args.traffic_seconds = 3.0 if args.quick else 8.0
    return args


_UNRAISABLE: list[str] = []


def _collect_unraisable(u) -> None:
    """Exceptions raised in __del__ and the like: counted and summarised, not sprayed on stderr."""
    where = ""
    if u.exc_traceback is not None:
        tb = traceback.extract_tb(u.exc_traceback)
        if tb:
            where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno} ({tb[-1].name})"
    obj = u.object
    owner = getattr(obj, "__qualname__", None) or type(obj).__name__
    _UNRAISABLE.append(f"{u.exc_type.__name__}{where}, in {owner}" + (f": {u.err_msg}" if u.err_msg else ""))


def _report_unraisable() -> None:
    gc.collect()
    if not _UNRAISABLE:
        return
    counts: dict[str, int] = {}
    for line in _UNRAISABLE:
        counts[line] = counts.get(line, 0) + 1
    print("\nexceptions ignored (e.g. in __del__) during the benchmark:")
    for line, n in counts.items():
        print(f"  {n} x {line[:300]}")


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.unraisablehook = _collect_unraisable
    t_begin = time.perf_counter()
    torch.set_num_threads(args.threads)

    models = [MODELS[m.strip()] for m in args.models.split(",") if m.strip()]
    variants = VARIANTS
    if args.variants:
        wanted = {v.strip() for v in args.variants.split(",")}
        variants = [v for v in VARIANTS if v.name in wanted or v.name == "bare"]

    shell = make_shell()
    peer_ns, missing = peer_namespace()
    shell.user_ns.update(peer_ns)
    if any(v.needs == "torchmagic" for v in variants):
        why = load_torchmagic(shell)
        if why:
            missing["torchmagic"] = why
    skipped = {v.name: missing[v.needs] for v in variants if v.needs in missing}
    active = [v for v in variants if v.name not in skipped]

    try:
        from torchmagic._version import __version__ as tm_version
    except Exception:  # noqa: BLE001
        tm_version = "?"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; torchmagic {tm_version}; "
        f"{args.repeats} repeats x {args.steps} CNN steps; timing: in-loop stamps, cells via run_cell",
        flush=True,
    )

    data = {spec.name: spec.make_batches(DISTINCT_BATCHES) for spec in models}
    loaders = {spec.name: cycle_batches(data[spec.name], args.steps * spec.step_scale) for spec in models}
    warm_loaders = {
        spec.name: cycle_batches(data[spec.name], max(args.skip + 5, args.steps // 4) * spec.step_scale) for spec in models
    }

    runs: dict[tuple[str, str], list[RunResult]] = {}
    errors: dict[tuple[str, str], str] = {}
    cold: dict[tuple[str, str], float] = {}
    last_output: dict[str, str] = {}

    with tempfile.TemporaryDirectory(prefix="tm-bench-") as logroot:
        # Warm-up: every variant once, untimed.
        for spec in models:
            for v in active:
                r = run_variant(shell, spec, v, warm_loaders[spec.name], logroot, args.skip)
                cold[(spec.name, v.name)] = r.total
                if r.error:
                    errors[(spec.name, v.name)] = r.error
        print(f"warm-up done in {time.perf_counter() - t_begin:.1f} s", flush=True)

        # Timed: round-robin, order rotated every repeat so no variant always follows another.
        for rep in range(args.repeats):
            shift = rep % len(active)
            order = active[shift:] + active[:shift]
            for spec in models:
                for v in order:
                    key = (spec.name, v.name)
                    if key in errors:
                        continue
                    r = run_variant(shell, spec, v, loaders[spec.name], logroot, args.skip)
                    if r.error:
                        errors[key] = r.error
                        continue
                    runs.setdefault(key, []).append(r)
                    if v.needs == "torchmagic":
                        last_output[v.name] = r.output
            print(f"repeat {rep + 1}/{args.repeats} done at {time.perf_counter() - t_begin:.1f} s", flush=True)

    rows = summarize(models, variants, runs, errors, skipped)

    cnn = MODELS["cnn"]
    bare_cnn = next((r for r in rows if r["model"] == "cnn" and r["variant"] == "bare"), None)
    bare_ms = bare_cnn["ms_step"] if bare_cnn and not math.isnan(bare_cnn["ms_step"]) else 15.0
    cnn_batches = data.get("cnn") or cnn.make_batches(DISTINCT_BATCHES)
    warm_s = min(2.0, args.traffic_seconds / 3)
    # "widgets" is what a notebook gets: the lab extension's one-message view (outside a kernel
    # the extension is assumed present). "stock" is the fallback for front ends without it
    # (stock ipywidgets + jupyter_bokeh), which refreshes less often; measured for reference.
    traffic = measure_widget_traffic(cnn, cnn_batches, args.traffic_seconds, warm_s, bare_ms, "widgets")
    traffic_stock = (
        measure_widget_traffic(cnn, cnn_batches, args.traffic_seconds, warm_s, bare_ms, "stock") if args.stock_traffic else None
    )

    print()
    print_table(rows, traffic, traffic_stock, bare_ms)
    print_notes(rows, errors, skipped, cold, last_output, traffic, traffic_stock)
    _report_unraisable()
    print(f"\n(whole benchmark: {time.perf_counter() - t_begin:.0f} s)")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "torchmagic": tm_version,
                    "threads": args.threads,
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "rows": rows,
                    "traffic": traffic.__dict__,
                    "traffic_stock": traffic_stock.__dict__ if traffic_stock else None,
                    "errors": {f"{m}/{v}": e for (m, v), e in errors.items()},
                    "skipped": skipped,
                },
                indent=2,
                default=str,
            )
        )
    return 0


def summarize(models, variants, runs, errors, skipped) -> list[dict]:
    rows = []
    for spec in models:
        bare_runs = runs.get((spec.name, "bare"), [])
        bare_steps = [s for r in bare_runs for s in r.steps]
        bare_meds = [statistics.median(r.steps) for r in bare_runs if r.steps]
        bare_med = statistics.median(bare_meds) if bare_meds else math.nan
        bare_mean = statistics.median(statistics.fmean(r.steps) for r in bare_runs if r.steps) if bare_steps else math.nan
        bare_best = min(bare_meds, default=math.nan)
        for v in variants:
            key = (spec.name, v.name)
            row = {
                "model": spec.name,
                "variant": v.name,
                "ms_step": math.nan,
                "ratio": math.nan,
                "ratio_lo": math.nan,
                "ratio_hi": math.nan,
                "best_ratio": math.nan,
                "mean_ms": math.nan,
                "mean_ratio": math.nan,
                "total_s": math.nan,
                "outside_ms": math.nan,
                "run_medians_ms": [],
                "steps": 0,
                "status": "ok",
            }
            rs = runs.get(key, [])
            if v.name in skipped:
                row["status"] = "skipped"
            elif key in errors:
                row["status"] = "error"
            if rs:
                steps = [s for r in rs for s in r.steps]
                run_meds = [statistics.median(r.steps) for r in rs if r.steps]
                med = statistics.median(run_meds)
                mean = statistics.median(statistics.fmean(r.steps) for r in rs if r.steps)
                paired = [
                    statistics.median(r.steps) / statistics.median(b.steps) for r, b in zip(rs, bare_runs) if r.steps and b.steps
                ]
                row.update(
                    ms_step=med * 1e3,
                    ratio=med / bare_med,
                    ratio_lo=min(paired) if paired else math.nan,
                    ratio_hi=max(paired) if paired else math.nan,
                    best_ratio=min(run_meds) / bare_best if run_meds else math.nan,
                    mean_ms=mean * 1e3,
                    mean_ratio=mean / bare_mean,
                    total_s=statistics.median(r.total for r in rs),
                    outside_ms=statistics.median(r.outside for r in rs) * 1e3,
                    run_medians_ms=[m * 1e3 for m in run_meds],
                    steps=len(steps),
                )
            rows.append(row)
    return rows


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _traffic_line(label: str, t: Traffic, bare_ms: float) -> str:
    if t.error:
        return f"widget traffic ({label}): {t.error.splitlines()[0]}"
    return (
        f"widget traffic ({label}): {t.msg_per_s:.2f} msg/s, {t.kb_per_s:.2f} KB/s  "
        f"(over {t.window_s:.1f} s; {t.ms_per_step:.2f} ms/step while recorded, bare {bare_ms:.2f})"
    )


def print_table(rows, traffic: Traffic, traffic_stock: Traffic | None, bare_ms: float) -> None:
    head = (
        f"{'model':<6} {'variant':<22} {'ms/step':>8} {'ratio':>6} {'range':>11} {'best':>6} "
        f"{'mean ms':>8} {'ratio':>6} {'total s':>8} {'outside ms':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["status"] != "ok" and math.isnan(r["ms_step"]):
            print(f"{r['model']:<6} {r['variant']:<22} {r['status']:>8}")
            continue
        rng = f"{_f(r['ratio_lo'], '.2f')}-{_f(r['ratio_hi'], '.2f')}"
        print(
            f"{r['model']:<6} {r['variant']:<22} {_f(r['ms_step'], '8.2f')} {_f(r['ratio'], '6.3f')} "
            f"{rng:>11} {_f(r['best_ratio'], '6.3f')} {_f(r['mean_ms'], '8.2f')} "
            f"{_f(r['mean_ratio'], '6.3f')} {_f(r['total_s'], '8.2f')} {_f(r['outside_ms'], '10.1f')}"
            + ("" if r["status"] == "ok" else f"  ({r['status']})")
        )
    print(_traffic_line("cnn, %%train, steady state", traffic, bare_ms))
    if traffic_stock is not None:
        print(_traffic_line("cnn, stock-widgets fallback", traffic_stock, bare_ms))
    print(
        "columns: ms/step = median of run medians; ratio = to bare; range = per-repeat ratios (min-max); "
        "best = fastest run's median / bare's fastest;\n         mean ms = median of run means "
        "(includes periodic work); total s = whole cell (median); outside ms = cell time outside the steps"
    )


def print_notes(rows, errors, skipped, cold, last_output, traffic: Traffic, traffic_stock: Traffic | None) -> None:
    print("\ntargets (CPU, median ratio to bare):")
    for r in rows:
        target = TARGETS.get(r["variant"])
        if target is None:
            continue
        verdict = "n/a" if math.isnan(r["ratio"]) else ("ok" if r["ratio"] <= target else "MISSED")
        print(
            f"  {r['model']:<4} {r['variant']:<22} <= {target:.2f}x: {verdict}"
            + ("" if math.isnan(r["ratio"]) else f" ({r['ratio']:.3f}x, mean {r['mean_ratio']:.3f}x)")
        )
    if traffic.error:
        print(f"  widget traffic <= {TARGET_MSG_PER_S:g} msg/s, <= {TARGET_KB_PER_S:g} KB/s: n/a")
    else:
        ok = traffic.msg_per_s <= TARGET_MSG_PER_S and traffic.kb_per_s <= TARGET_KB_PER_S
        print(f"  widget traffic <= {TARGET_MSG_PER_S:g} msg/s, <= {TARGET_KB_PER_S:g} KB/s: {'ok' if ok else 'MISSED'}")
    for label, t in (("dashboard", traffic), ("stock fallback", traffic_stock)):
        if t is not None and not t.error:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(t.kinds.items(), key=lambda kv: -kv[1]))
            print(f"  {label} messages in the window by kind: {kinds or 'none'}; {t.messages_total} in the whole run")

    for r in rows:
        if r["variant"] == "bare" and r["run_medians_ms"]:
            meds = r["run_medians_ms"]
            spread = max(meds) / min(meds)
            print(
                f"  noise: {r['model']} bare run medians {min(meds):.2f}-{max(meds):.2f} ms "
                f"over {len(meds)} runs"
                + (
                    f"  <- NOISY ({spread:.2f}x): other load on the machine; ratios within a few % are not meaningful, rerun"
                    if spread > NOISY_SPREAD
                    else ""
                )
            )
    for name, why in skipped.items():
        print(f"\nskipped {name}: {why}")
    for (model, variant), err in errors.items():
        print(f"\nerror in {model} / {variant}:\n{_indent(err)}")
    for label, t in (("widget traffic", traffic), ("stock-widgets traffic", traffic_stock)):
        if t is not None and t.error and "\n" in t.error:
            print(f"\n{label}:\n{_indent(t.error)}")
    for (model, variant), t in cold.items():
        if variant.startswith("%%train"):
            print(f"\nfirst {variant} cell ({model}, cold, short warm-up run): {t:.2f} s")
            break
    for variant, out in last_output.items():
        lines = [ln for ln in out.replace("\r", "\n").splitlines() if ln.strip()]
        if lines:
            print(f"last text line printed by {variant}: {lines[-1][:160]!r}")


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.rstrip().splitlines())


if __name__ == "__main__":
    sys.exit(main())
