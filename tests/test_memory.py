"""``%memory`` / ``%%memory`` through a real IPython shell, and the core tracker underneath."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import torchmagic
from torchmagic.core import memtrack, peak_rss
from torchmagic.core.memory import process_rss
from torchmagic.core.memtrack import CellMemoryTracker
from torchmagic.core.module_memory import ModuleMemoryHooks
from torchmagic.core.peak_rss import PeakRss

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def fresh_history():
    memtrack.clear_history()
    yield
    memtrack.clear_history()


def _tracker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("torchmagic")]


@pytest.mark.parametrize("strategy", ["hwm", "sampling"])
def test_peak_sees_memory_freed_before_the_end(strategy):
    if strategy == "hwm" and not peak_rss._reset_hwm():
        pytest.skip("this system does not let a process reset its RSS high-water mark")
    peak = PeakRss(strategy)
    peak.start()
    start = process_rss()
    big = torch.ones(64 * MiB // 4)  # touches 64 MiB
    big.add_(1)
    # The sampler reads every 2 ms, but a loaded machine may not run its thread for a while.
    deadline = time.monotonic() + 10
    while peak.current() - start < 56 * MiB and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    del big
    end = process_rss()
    value = peak.stop()
    assert not peak.running and _tracker_threads() == []
    assert value - start >= 56 * MiB, (strategy, value - start)
    assert end - start < 32 * MiB  # the memory was given back: only the peak shows it
    assert peak.strategy == strategy


def test_process_peak_survives_the_per_cell_reset():
    big = torch.ones(96 * MiB // 4)
    del big
    before = memtrack.process_peak_rss()
    tracker = CellMemoryTracker()
    tracker.start(1, "x = 1")
    tracker.stop()
    assert memtrack.process_peak_rss() >= before


def test_cell_magic_reports_delta_and_peak(shell):
    shell.run_cell("import torch, mmap")
    # Anonymous mappings, touched page by page: fresh memory whatever the allocator kept from earlier
    # tests; closing the temporary one gives its pages back at once.
    result = shell.run_cell(
        "%%memory\nkept = mmap.mmap(-1, 48 * 1024 * 1024)\nfor i in range(0, len(kept), 4096): kept[i] = 1\n"
        "tmp = mmap.mmap(-1, 96 * 1024 * 1024)\nfor i in range(0, len(tmp), 4096): tmp[i] = 1\ntmp.close()\n"
    )
    assert result.error_in_exec is None, result.error_in_exec
    measured = result.result
    assert isinstance(measured, memtrack.CellMemory)
    assert 44 * MiB <= measured.rss_delta < 80 * MiB, measured
    assert measured.rss_peak - measured.rss_start >= 130 * MiB, measured
    assert measured.cuda_delta is None  # CUDA not initialised: no CUDA numbers, and none started
    assert not torch.cuda.is_initialized()
    assert len(shell.user_ns["kept"]) == 48 * MiB  # the cell ran in the notebook's namespace
    frame = torchmagic.memory_history() if "memory_history" in torchmagic._LAZY else memtrack.memory_history()
    assert list(frame["rss_delta"]) == [measured.rss_delta]


def test_by_module_ranks_the_module_that_held_the_most(shell):
    shell.run_cell(
        "import torch\n"
        "net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Linear(8, 8192), torch.nn.ReLU(), torch.nn.Linear(8192, 4))\n"
        "x = torch.randn(256, 64)\n"
    )
    result = shell.run_cell("%%memory --by-module --every 1 --top 3\nfor _ in range(4):\n    net(x).sum().backward()\n")
    assert result.error_in_exec is None, result.error_in_exec
    measured = result.result
    assert [m.name for m in measured.modules][:1] == ["net.1"]
    wide = 256 * 8192 * 4  # net.1's output, also saved for backward by ReLU
    assert measured.modules[0].held >= wide
    assert measured.modules[0].calls == 4
    assert len(measured.modules) == 3
    assert measured.forwards == measured.sampled_forwards == 4
    names = {m.name for m in measured.modules}
    assert "net.0" not in names or measured.modules[-1].held < wide  # the small layer ranks low
    assert torch.nn.modules.module._global_forward_hooks == {}  # hooks gone after the cell
    assert torch.nn.modules.module._global_forward_pre_hooks == {}


def test_by_module_samples_every_nth_forward():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    hooks = ModuleMemoryHooks(every=3)
    hooks.attach()
    try:
        for _ in range(7):
            net(torch.randn(2, 4))
    finally:
        hooks.detach()
    assert hooks.forwards == 7 and hooks.sampled == 3  # passes 0, 3, 6
    assert {s.calls for s in hooks.stats.values()} == {3}


def test_interrupted_forward_leaves_nothing_behind():
    class Boom(torch.nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt  # always_call hooks do not run for it

    hooks = ModuleMemoryHooks()
    hooks.attach()
    with pytest.raises(KeyboardInterrupt):
        torch.nn.Sequential(torch.nn.Linear(2, 2), Boom())(torch.randn(1, 2, requires_grad=True))
    hooks.detach()
    assert torch.nn.modules.module._global_forward_hooks == {}
    assert torch.nn.modules.module._global_forward_pre_hooks == {}
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None  # autograd untouched


def test_measuring_leaves_autograd_as_it_was():
    """The graph is only read: gradients, double backward and freeing are as without hooks."""
    import gc
    import weakref

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(8, 4, requires_grad=True)
    (g_plain,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    refs: list[weakref.ref] = []
    capture = net[1].register_forward_hook(lambda m, i, o: refs.append(weakref.ref(o)))
    hooks = ModuleMemoryHooks()
    hooks.attach()
    gc.disable()
    try:
        out = net(x)
        (g_hooked,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        g_hooked.sum().backward()  # double backward through what the forward saved
        assert refs[-1]() is not None  # the graph holds Tanh's output…
        del out, g_hooked
        assert refs[-1]() is None  # …and frees it with the graph: no reference cycle, no GC needed
    finally:
        gc.enable()
        hooks.detach()
        capture.remove()
    assert torch.equal(g_plain, torch.autograd.grad(net(x).sum(), x)[0])
    assert hooks.stats["Sequential.1"].held >= 8 * 16 * 4  # Tanh saved its output


FRESH_48_MIB = "a = mmap.mmap(-1, 48 * 1024 * 1024)\nfor i in range(0, len(a), 4096):\n    a[i] = 1"


def test_memory_on_records_each_following_cell(shell):
    shell.run_cell("import torch, mmap")
    shell.run_line_magic("memory", "on")
    # fresh anonymous pages, touched: malloc could hand back memory already resident from earlier tests
    shell.run_cell(FRESH_48_MIB)
    shell.run_cell("b = 1")
    shell.run_cell("%memory off")
    shell.run_cell("c = torch.ones(48 * 1024 * 1024 // 4)")
    frame = memtrack.memory_history()
    assert list(frame["code"]) == [FRESH_48_MIB.splitlines()[0], "b = 1"]  # the first line names the cell
    assert list(frame["cell"]) == [None, None]  # run_cell() without store_history: no In[n]
    shell.run_cell("%memory on")
    count = shell.execution_count
    shell.run_cell("d = 2", store_history=True)
    shell.run_cell("%memory off")
    assert memtrack.history()[-1].cell == count and memtrack.history()[-1].code == "d = 2"
    frame = frame.iloc[:2]
    assert {"rss_delta", "rss_peak"} <= set(frame.columns)
    assert "cuda_delta" not in frame.columns  # no CUDA in this process
    assert frame["rss_delta"].iloc[0] >= 44 * MiB  # above the mmap threshold: fresh pages
    assert abs(frame["rss_delta"].iloc[1]) < 4 * MiB
    assert (frame["rss_peak"] > 0).all()
    assert not memtrack.recording()
    assert _tracker_threads() == []


def test_memory_on_with_sampling_thread_is_joined_on_unload(shell):
    shell.run_line_magic("memory", "on --sampling")
    shell.run_cell("import time; time.sleep(0.01)")
    assert len(memtrack.history()) == 1 and memtrack.history()[0].peak_method == "sampling"
    # a cell is running (pre_run_cell fired): the sampler is alive until unload joins it
    from torchmagic.ipython import memory_magic

    memory_magic._cell_log.pre_run_cell(None)
    alive = _tracker_threads()
    assert [t.name for t in alive] == ["torchmagic-rss-sampler"]
    shell.run_line_magic("unload_ext", "torchmagic")
    assert not alive[0].is_alive() and _tracker_threads() == []
    shell.run_line_magic("load_ext", "torchmagic")  # the fixture unloads again


def test_line_magic_measures_a_statement(shell):
    shell.run_cell("import torch")
    measured = shell.run_line_magic("memory", "--by-module z = torch.nn.Linear(8, 1024)(torch.randn(512, 8))")
    assert measured.rss_delta >= 0 and measured.modules[0].name == "Linear"
    assert shell.user_ns["z"].shape == (512, 1024)
    assert measured.modules[0].held >= 512 * 1024 * 4


def test_show_and_clear(shell):
    shell.run_cell("%%memory\nq = 1\n")
    assert len(shell.run_line_magic("memory", "show")) == 1
    assert len(shell.run_line_magic("memory", "")) == 1
    shell.run_line_magic("memory", "clear")
    assert len(memtrack.memory_history()) == 0


@pytest.mark.parametrize("line", ["--bogus", "on --frobnicate", "--top 0 on", "--every -1 on", "--top many on"])
def test_bad_options_are_one_line_usage_errors(shell, line):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as info:
        shell.run_line_magic("memory", line)
    assert "\n" not in str(info.value).strip()
    assert not memtrack.recording()


def test_cell_error_is_raised_and_still_recorded(shell):
    result = shell.run_cell("%%memory\nraise ValueError('boom')\n")
    assert isinstance(result.error_in_exec, ValueError)
    assert len(memtrack.history()) == 1
    assert _tracker_threads() == []


def test_results_render_as_text_and_escaped_html(shell):
    shell.run_cell("import torch\nnet = torch.nn.Linear(4, 4)")
    measured = shell.run_cell("%%memory --by-module\nout = net(torch.randn(2, 4))\n").result
    measured.code = "<script>alert(1)</script>"
    data, _ = shell.display_formatter.format(measured)
    assert "RSS delta" in data["text/plain"] and "net" in data["text/plain"]
    assert "<td><code>net</code></td>" in data["text/html"]
    assert "<script>" not in data["text/html"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_delta_peak_and_module_growth():
    torch.zeros(1, device="cuda")  # the notebook initialised CUDA; the tracker never does
    tracker = CellMemoryTracker(by_module=True)
    tracker.start(1, "cuda cell")
    kept = torch.empty(64 * MiB, dtype=torch.uint8, device="cuda")
    tmp = torch.empty(256 * MiB, dtype=torch.uint8, device="cuda")
    del tmp
    net = torch.nn.Sequential(torch.nn.Linear(256, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 8)).cuda()
    out = net(torch.randn(1024, 256, device="cuda"))
    measured = tracker.stop()
    assert measured.cuda_delta is not None and measured.cuda_delta >= 64 * MiB
    assert measured.cuda_peak - measured.cuda_start >= (64 + 256) * MiB
    top = {m.name: m for m in measured.modules}
    wide = 1024 * 4096 * 4
    assert top["Sequential.0"].held >= wide and top["Sequential.0"].cuda_delta >= wide
    memtrack.record(measured)
    frame = memtrack.memory_history()
    assert {"cuda_delta", "cuda_peak"} <= set(frame.columns)
    del kept, out
