"""On a CUDA device: no synchronisation on the hot path, identical numbers, OOM cleanup, memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tests.conftest import global_hook_state
from torchmagic.core import TrainingMonitor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.1),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
    ).cuda()


def _data(n=8):
    g = torch.Generator(device="cuda").manual_seed(1)
    xs = torch.randn(n, 32, 3, 32, 32, device="cuda", generator=g)
    ys = torch.randint(0, 10, (n, 32), device="cuda", generator=g)
    return xs, ys


def _train(model, opt, xs, ys):
    losses = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def test_hot_path_never_synchronises():
    model = _cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = _data()
    _train(model, opt, xs[:2], ys[:2])  # warm up kernels and optimizer state
    torch.cuda.synchronize()
    mon = TrainingMonitor([model], [opt], every=1, histograms=True, refresh_interval=3600.0)
    with mon:
        torch.cuda.set_sync_debug_mode("error")
        try:
            _train(model, opt, xs, ys)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    r = mon.result
    assert r.steps == len(xs) and r.history["loss"].notna().all()
    assert r.histograms["steps"] and r.memory["cuda_allocated"][-1] > 0


def test_numbers_are_bitwise_identical_on_cuda():
    xs, ys = _data()

    def outcome(watch: bool):
        model = _cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        torch.manual_seed(5)
        torch.cuda.manual_seed(5)
        if watch:
            with TrainingMonitor([model], [opt], every=1, histograms=True):
                losses = _train(model, opt, xs, ys)
        else:
            losses = _train(model, opt, xs, ys)
        return losses, [p.detach().clone() for p in model.parameters()], torch.cuda.get_rng_state()

    torch.backends.cudnn.deterministic = True
    bare, watched = outcome(False), outcome(True)
    assert torch.equal(bare[0], watched[0])
    assert all(torch.equal(a, b) for a, b in zip(bare[1], watched[1]))
    assert torch.equal(bare[2], watched[2])


def test_cuda_out_of_memory_cleans_up():
    model = _cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = global_hook_state()
    free, total = torch.cuda.mem_get_info()
    with pytest.raises(torch.OutOfMemoryError):
        with TrainingMonitor([model], [opt]) as mon:
            x = torch.randn(32, 3, 32, 32, device="cuda")
            nn.functional.cross_entropy(model(x), torch.zeros(32, dtype=torch.long, device="cuda")).backward()
            opt.step()
            torch.empty(int(total * 4), dtype=torch.uint8, device="cuda")
    assert mon.result.status == "failed" and any(a.kind == "oom" for a in mon.result.alerts)
    assert global_hook_state() == before
    assert mon.result.steps == 1


def test_nonfinite_activation_is_localised_on_cuda():
    model = _cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the poisoned bias stays as it is
    xs, ys = _data(12)
    with TrainingMonitor([model], [opt], refresh_interval=0.0) as mon:
        for i, (x, y) in enumerate(zip(xs, ys)):
            if i == 3:
                with torch.no_grad():
                    model[4].bias.fill_(float("nan"))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    nonfinite = [a for a in mon.result.alerts if a.kind == "nonfinite"]
    assert nonfinite and nonfinite[0].step == 4
    assert any(a.module == "4" for a in nonfinite), nonfinite
