"""Profiling on a CUDA device: device times are recorded and steps follow the optimizer (engine only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from torchmagic.core.profiling import ProfileSession

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_ops_get_device_time():
    a = torch.randn(2048, 2048, device="cuda")
    with ProfileSession() as session:
        a @ a
    table = session.result.table
    mm = table[table.name == "aten::mm"].iloc[0]
    assert mm.device_time_total_us > 0 and mm.device_time_total_us >= mm.self_device_time_us
    # the kernel's time is someone's self time (on torch 2.11 it lands below aten::mm, not on it)
    assert table.self_device_time_us.sum() > 0
    assert any(lane.startswith("cuda:0") for lane in session.result.timeline.lanes)


def test_training_steps_on_cuda_follow_the_optimizer():
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 256, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    with ProfileSession(steps=3, wait=1, warmup=1, profile_memory=True) as session:
        for _ in range(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    r = session.result
    assert r.steps_profiled == 3
    assert (r.table.self_device_time_us > 0).any()
