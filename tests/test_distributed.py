"""Distributed runs forked from this process (gloo on CPU): results, weights, Ctrl-C, failures, cleanup."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from IPython.core.error import UsageError
from torch.nn.parallel import DistributedDataParallel as DDP

import torchmagic
from torchmagic.core.distributed import DistributedSnapshot, columns, protocol, run_distributed
from torchmagic.core.distributed.errors import CudaInitializedError, DistributedError, RankFailed
from torchmagic.core.distributed.merge import MEMORY_INTERVAL, LiveMerge
from torchmagic.core.interrupt import TrainingStopped
from torchmagic.core.result import RunResult

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "fork") and dist.is_available() and dist.is_gloo_available()), reason="needs fork and gloo"
)

TIMEOUT = 60.0  # store and collective timeout of runs that should not time out
STEPS = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _listening() -> set[tuple[str, int]]:
    return {tuple(c.laddr) for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN}


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    sigint, ports = signal.getsignal(signal.SIGINT), _listening()
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children
    assert _listening() <= ports
    assert signal.getsignal(signal.SIGINT) is sigint


def _frame(result: RunResult):
    return result.history.reset_index(drop=True)  # "step" is the index and a column


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))
    return model, torch.randn(24, 6), torch.randn(24, 1)  # 24 rows: equal shards for 2, 3 or 4 ranks


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _ddp_cell(model, x, y, *, steps=STEPS, opt=None, before_step=None):
    """What a user's cell does: wrap in DDP, train on this rank's shard with the mean loss."""

    def cell():
        ddp = DDP(model)
        optimizer = opt if opt is not None else _sgd(ddp.parameters())
        rank, n = dist.get_rank(), dist.get_world_size()
        for step in range(1, steps + 1):
            if before_step is not None:
                before_step(rank, step)
            optimizer.zero_grad()
            F.mse_loss(ddp(x[rank::n]), y[rank::n]).backward()
            optimizer.step()

    return cell


def _one_process(model, x, y, steps=STEPS):
    ref = copy.deepcopy(model)
    opt = _sgd(ref.parameters())
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(ref(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return ref, opt, losses


@pytest.mark.parametrize("nproc", [2, 4])
def test_ranks_train_like_one_process_on_the_whole_batch(nproc):
    model, x, y = _setup()
    ref, ref_opt, ref_losses = _one_process(model, x, y)
    opt = _sgd(model.parameters())  # the notebook's optimizer: its state comes back too
    result = run_distributed(_ddp_cell(model, x, y, opt=opt), nproc=nproc, models=[model], optimizers=[opt], timeout=TIMEOUT)

    assert result.status == "completed" and result.steps == STEPS
    h = _frame(result)
    assert sorted(set(h["rank"])) == list(range(nproc)) and len(h) == nproc * STEPS
    mean_loss = h.groupby("step")["loss"].mean()
    assert mean_loss.tolist() == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    for got, want in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # rank 0's final weights
    for p, ref_p in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], ref_opt.state[ref_p]["momentum_buffer"], rtol=1e-5, atol=1e-6)


def test_live_snapshots_aggregate_ranks_per_step():
    model, x, y = _setup()
    snaps: list[DistributedSnapshot] = []
    result = run_distributed(
        _ddp_cell(model, x, y, steps=30),
        nproc=2,
        models=[model],
        on_refresh=[snaps.append],
        monitor_options={"refresh_interval": 0.02},
        timeout=TIMEOUT,
    )
    assert all(isinstance(s, DistributedSnapshot) for s in snaps)
    assert snaps[-1].final and not any(s.final for s in snaps[:-1])
    steps = [s.result.steps for s in snaps]
    assert steps == sorted(steps) and steps[-1] == 30
    agg = _frame(snaps[-1].result)
    assert agg["step"].tolist() == list(range(1, 31))
    per_rank = _frame(result).groupby("step")["loss"]
    assert agg["loss"].tolist() == pytest.approx(per_rank.mean().tolist(), rel=1e-6)
    assert agg["loss_p0"].tolist() == pytest.approx(per_rank.min().tolist(), rel=1e-6)
    assert agg["loss_p100"].tolist() == pytest.approx(per_rank.max().tolist(), rel=1e-6)
    assert set(snaps[-1].ranks) == {0, 1} and snaps[-1].ranks[1].step == 30


def test_ctrl_c_stops_every_rank_after_the_same_step():
    model, x, y = _setup()
    initial = copy.deepcopy(model)
    sent: list[float] = []

    def interrupt(snap):
        if snap.result.steps >= 3 and not sent:
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)  # the kernel's stop button, while it waits

    cell = _ddp_cell(model, x, y, steps=20_000, before_step=lambda rank, step: time.sleep(0.001))
    result = run_distributed(
        cell, nproc=2, models=[model], on_refresh=[interrupt], monitor_options={"refresh_interval": 0.05}, timeout=TIMEOUT
    )
    assert result.status == "interrupted"
    last = _frame(result).groupby("rank")["step"].max()
    assert last.nunique() == 1 and 3 <= last.iloc[0] < 20_000 and result.steps == last.iloc[0]
    assert time.monotonic() - sent[0] < 30
    ref, _, _ = _one_process(initial, x, y, steps=int(last.iloc[0]))
    for got, want in zip(model.parameters(), ref.parameters()):  # rank 0's weights after that very step
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_second_ctrl_c_kills_the_ranks_at_once():
    model, x, y = _setup()
    before = copy.deepcopy(model.state_dict())
    calls: list[int] = []

    def cell():
        while True:  # never reaches a step boundary: only the second Ctrl-C ends it
            time.sleep(0.01)

    def interrupt(snap):
        calls.append(1)
        if len(calls) in (3, 6):
            os.kill(os.getpid(), signal.SIGINT)

    started = time.monotonic()
    result = run_distributed(cell, nproc=2, models=[model], on_refresh=[interrupt], timeout=TIMEOUT)
    assert result.status == "interrupted" and "second Ctrl-C" in (result.error or "")
    assert time.monotonic() - started < 30
    assert torch.equal(model[0].weight, before["0.weight"])


def test_failing_rank_is_named_with_its_traceback_and_the_next_run_works():
    model, x, y = _setup()
    before = copy.deepcopy(model.state_dict())

    def fail(rank, step):
        if rank == 1 and step == 3:
            raise ValueError("rank one fails at step 3")

    started = time.monotonic()
    with pytest.raises(RankFailed) as info:
        run_distributed(_ddp_cell(model, x, y, steps=1000, before_step=fail), nproc=2, models=[model], timeout=TIMEOUT)
    assert time.monotonic() - started < 30
    err = info.value
    assert err.rank == 1 and str(err).startswith("rank 1 ")
    assert "Traceback (most recent call last)" in str(err) and "ValueError: rank one fails at step 3" in str(err)
    assert err.result.status == "failed" and "rank 1: ValueError" in (err.result.error or "")
    assert torch.equal(model[0].weight, before["0.weight"])

    again = run_distributed(_ddp_cell(model, x, y, steps=2), nproc=2, models=[model], timeout=TIMEOUT)
    assert again.status == "completed" and again.steps == 2


def test_hung_collective_is_ended_by_the_timeout():
    def cell():
        if dist.get_rank() == 0:
            dist.all_reduce(torch.ones(1))  # rank 1 skips it and hangs elsewhere
        else:
            time.sleep(120)

    started = time.monotonic()
    with pytest.raises(RankFailed) as info:
        run_distributed(cell, nproc=2, timeout=4.0)
    assert info.value.rank == 0
    assert time.monotonic() - started < 40


def test_straggler_is_named():
    model, x, y = _setup()

    def slow_data(rank, step):
        if rank == 1:
            time.sleep(0.02)  # rank 1's loader is slow; under DDP rank 0 waits for it in backward

    result = run_distributed(_ddp_cell(model, x, y, steps=30, before_step=slow_data), nproc=2, models=[model], timeout=TIMEOUT)
    stragglers = [a for a in result.alerts if a.kind == "straggler"]
    assert [a.message.split(":")[0] for a in stragglers] == ["rank 1"], stragglers
    assert "local_time" in result.history


@pytest.mark.parametrize("nproc", [0, -1, 10**6, 2.5, True, "2"])
def test_absurd_nproc_is_refused_before_anything_starts(nproc):
    with pytest.raises(DistributedError, match="nproc"):
        run_distributed(lambda: None, nproc=nproc)


def test_kernel_with_cuda_initialised_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(CudaInitializedError, match="restart the kernel"):
        run_distributed(lambda: None, nproc=2)


def test_train_magic_with_nproc(shell):
    shell.run_cell(
        "import torch, torch.nn.functional as F, torch.distributed as dist\n"
        "from torch.nn.parallel import DistributedDataParallel as DDP\n"
        "torch.manual_seed(0); model = torch.nn.Linear(6, 1); x, y = torch.randn(24, 6), torch.randn(24, 1)\n"
        "before = model.weight.detach().clone()"
    )
    cell = (
        "ddp = DDP(model); opt = torch.optim.SGD(ddp.parameters(), lr=0.1); r, n = dist.get_rank(), dist.get_world_size()\n"
        "for _ in range(4):\n"
        "    opt.zero_grad(); F.mse_loss(ddp(x[r::n]), y[r::n]).backward(); opt.step()\n"
    )
    out = shell.run_cell("%%train --nproc 2 --display none\n" + cell)
    assert out.success, out.error_in_exec
    result = torchmagic.last_run()
    assert result.status == "completed" and sorted(set(_frame(result)["rank"])) == [0, 1]
    assert not torch.equal(shell.user_ns["before"], shell.user_ns["model"].weight)
    for line, message in (("--nproc 0", "--nproc must be 1 or more"), ("--nproc 1000000", "--nproc: nproc must be between")):
        with pytest.raises(UsageError, match=message) as info:
            shell.run_cell_magic("train", line, cell)
        assert "\n" not in str(info.value)
    with pytest.raises(RankFailed, match="(?s)^rank 1 .*Traceback.*AssertionError: rank one refuses"):
        shell.run_cell_magic("train", "--nproc 2 --display none", "assert dist.get_rank() == 0, 'rank one refuses'\n" + cell)
    assert torchmagic.last_run().status == "failed"


def test_train_api_on_ranks_and_ctrl_c():
    model, x, y = _setup()
    assert torchmagic.train(model, nproc=2, display="none").run(_ddp_cell(model, x, y, steps=3)).steps == 3
    run = torchmagic.train(model, nproc=2, display="none", refresh=20)
    sent: list[None] = []  # the display (none here) gets Ctrl-C once step 3 is shown
    run._show = lambda snap: snap.result.steps < 3 or sent or sent.append(os.kill(os.getpid(), signal.SIGINT))  # type: ignore
    with pytest.raises(TrainingStopped, match="training stopped after step"):
        run.run(_ddp_cell(model, x, y, steps=20_000, before_step=lambda rank, step: time.sleep(0.001)))
    assert torchmagic.last_run() is run.result and run.result.status == "interrupted"


@pytest.mark.parametrize("nproc, error", [(0, ValueError), (True, TypeError), ("2", TypeError)])
def test_train_api_checks_nproc_and_wants_run_not_with(nproc, error):
    with pytest.raises(error, match="^nproc must be"):
        torchmagic.train(nn.Linear(2, 1), nproc=nproc)
    with pytest.raises(TypeError, match=r"use \.run\(loop\), not a with block"), torchmagic.train(nn.Linear(2, 1), nproc=2):
        pass


# ----------------------------------------------------------------- the protocol, without processes
def _result(rows: int) -> RunResult:
    history = columns.build({"step": list(range(1, rows + 1)), "loss": [1.0 / (i + 1) for i in range(rows)]})
    return RunResult(steps=rows, columns=history)


def test_payload_is_bounded_and_rows_missed_are_sent_again():
    r = _result(1000)
    first = protocol.make_payload(r, 1, 0, 0, upto=1000)
    assert first.row_count == protocol.LIVE_ROWS and first.start == 0
    live = LiveMerge(2)
    assert live.absorb(first) == (protocol.LIVE_ROWS, 0)
    again = protocol.make_payload(r, 1, 100, 0, upto=1000)  # an older acknowledgement: overlapping rows
    assert live.absorb(protocol.Payload.decode(again.encode())) == (356, 0)
    assert live.ranks[1].columns["step"] == list(range(1, 357))
    assert len(protocol.make_payload(r, 1, 990, 0, upto=1000).encode()) < 1000


def test_result_round_trips_through_json():
    r = _result(5)
    r.status, r.error = "failed", "ValueError: x"
    back = protocol.result_from_json(protocol.result_to_json(r))
    assert back.status == "failed" and list(back.columns["step"]) == [1, 2, 3, 4, 5]


def test_memory_is_sampled_by_rank_on_the_kernels_clock():
    """Each rank's latest reading, at most every MEMORY_INTERVAL: the largest, the spread, and by rank
    (None where a rank had not sent a reading yet, or has no CUDA)."""
    live = LiveMerge(3)

    def send(rank: int, memory: dict[str, float | None]) -> None:
        payload = protocol.Payload(rank, 0, {"step": [1], "loss": [1.0]}, 0, [], 1, memory=memory)
        live.absorb(protocol.Payload.decode(payload.encode()))

    send(0, {"rss": 100})
    send(1, {"rss": 300})  # rank 2 has not sent yet
    live.update(0.0)
    send(0, {"rss": 150})
    live.update(MEMORY_INTERVAL / 2)  # too soon: no sample
    send(2, {"rss": 200, "cuda_allocated": 50})
    live.update(MEMORY_INTERVAL)
    mem = columns.plain(live.result.memory)
    assert mem["time"] == [0.0, MEMORY_INTERVAL] and mem["rss"] == [300, 300]
    assert (mem["rss_p0"], mem["rss_p50"], mem["rss_p100"]) == ([100, 150], [200, 200], [300, 300])
    assert mem["cuda_allocated"] == [None, 50] and mem["cuda_allocated_p50"] == [None, 50]
    assert live.ranks[0].memory_history == {"rss": [100, 150], "cuda_allocated": [None, None]}
    assert live.ranks[2].memory_history == {"rss": [None, 200], "cuda_allocated": [None, 50]}
    final = LiveMerge(3)
    final.adopt_memory(live)  # what the final snapshot draws
    assert final.ranks[1].memory_history["rss"] == [300, 300] and final.result.memory is live.result.memory


# ----------------------------------------------------------------- outside the notebook
_TORCHRUN_SCRIPT = """
import sys, warnings, torch, torch.distributed as dist
from torchmagic.core.monitor import TrainingMonitor
from torchmagic.core.distributed.torchrun import RankZeroView, torchrun_env
from torchmagic.display.text import TextProgress
env = torchrun_env()
dist.init_process_group("gloo")
torch.manual_seed(env.rank)
model = torch.nn.Linear(4, 1)
WATCH  # a step per backward: no optimizer to import
    for step in range(30):
        if env.rank == 1 and step == 5:
            warnings.warn("only rank one warns")
        model.zero_grad(); model(torch.randn(8, 4)).pow(2).mean().backward()
dist.barrier()
dist.destroy_process_group()
"""


_WATCHES = {
    "monitor": "with TrainingMonitor([model], catch_sigint=False, on_refresh=[RankZeroView(env, TextProgress(sys.stdout))]):",
    "train": "import torchmagic\nwith torchmagic.train(model, display='text'):",
}


@pytest.mark.parametrize("watch", sorted(_WATCHES))
def test_under_torchrun_rank_zero_prints_for_all_and_the_others_stay_silent(watch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TORCHRUN_SCRIPT.replace("WATCH", _WATCHES[watch])],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[1][0] == ""
    assert "torchmagic: completed: 30 steps" in outs[0][0]
    assert "rank 1: UserWarning: only rank one warns" in outs[0][0]  # rank 0 speaks for rank 1 too


# ----------------------------------------------------------------- GPU
_NCCL_SCRIPT = """
import json, torch, torch.nn.functional as F, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torchmagic.core.distributed import run_distributed
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
before = model.weight.detach().clone()
x, y = torch.randn(16, 8), torch.randn(16, 1)
def cell():
    device = torch.device("cuda", dist.get_rank())
    assert next(model.parameters()).device == device and dist.get_backend() == "nccl"
    ddp = DDP(model, device_ids=[device.index])
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad(); F.mse_loss(ddp(x.to(device)), y.to(device)).backward(); opt.step()
result = run_distributed(cell, nproc=1, models=[model], timeout=120)
print(json.dumps({"status": result.status, "steps": result.steps, "kernel_cuda": torch.cuda.is_initialized(),
                  "changed": not torch.equal(before, model.weight), "device": str(model.weight.device)}))
"""


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() == 0, reason="needs a CUDA device")
def test_one_rank_with_nccl_on_the_gpu():
    # a fresh interpreter: CUDA initialised by other tests in this process would refuse the fork
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_NCCL_SCRIPT)],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"status": "completed", "steps": 5, "kernel_cuda": False, "changed": True, "device": "cpu"}
