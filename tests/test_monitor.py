"""The engine on CPU: steps, losses, statistics, alerts, interrupts and cleanup."""

from __future__ import annotations

import os
import signal
import warnings

import pytest
import torch
import torch.nn as nn

import torchmagic
from tests.conftest import global_hook_state, module_hook_state, optimizer_hook_state
from torchmagic.core import TrainingMonitor, TrainingStopped


def _loop(model, opt, x, y, steps, accumulate=1, on_step=None, criterion=None):
    criterion = criterion or nn.CrossEntropyLoss()
    losses = []
    for i in range(steps):
        opt.zero_grad()
        for k in range(accumulate):
            xb = x[k::accumulate]
            yb = y[k::accumulate]
            loss = criterion(model(xb), yb) / accumulate
            loss.backward()
            losses.append(loss.item())
        opt.step()
        if on_step:
            on_step(i + 1)
    return losses


def test_counts_optimizer_steps_and_records_loss(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt], every=1) as mon:
        losses = _loop(model, opt, x, y, 12)
    r = mon.result
    assert r.status == "completed"
    assert r.steps == 12
    h = r.history
    assert list(h["step"]) == list(range(1, 13))
    assert h["loss"].tolist() == pytest.approx(losses, rel=1e-6)
    assert h["lr"].tolist() == [0.05] * 12
    assert (h["grad_norm"] > 0).all()
    assert (h["samples_per_s"] > 0).all()
    assert h["time"].is_monotonic_increasing


def test_gradient_norms_follow_the_schedule(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt], every=5) as mon:
        _loop(model, opt, x, y, 12)
    h = mon.result.history
    assert h.loc[h.grad_norm.notna(), "step"].tolist() == [1, 5, 10]
    norms = mon.result.layer_stats.query("stat == 'grad_norm' and step == 10")
    assert h.loc[10, "grad_norm"] == pytest.approx(sum(v * v for v in norms.value) ** 0.5)


def test_gradient_accumulation_makes_one_step_with_summed_loss(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt]) as mon:
        losses = _loop(model, opt, x, y, 5, accumulate=4)
    r = mon.result
    assert r.steps == 5
    expected = [sum(losses[i * 4 : (i + 1) * 4]) for i in range(5)]
    assert r.history["loss"].tolist() == pytest.approx(expected, rel=1e-5)


def test_without_optimizer_each_backward_is_a_step(tiny_setup):
    model, _, x, y = tiny_setup
    with TrainingMonitor([model], every=1) as mon:
        for _ in range(7):
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
    assert mon.result.steps == 7
    assert mon.result.history["grad_norm"].notna().all()


def test_optimizer_created_inside_the_loop_is_found(tiny_setup):
    model, _, x, y = tiny_setup
    with TrainingMonitor() as mon:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        _loop(model, opt, x, y, 6)
    assert mon.result.steps == 6
    assert mon.result.history["lr"].tolist() == [0.1] * 6


def test_grad_scaler_skipped_steps_are_counted(tiny_setup):
    model, opt, x, y = tiny_setup
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    with TrainingMonitor([model], [opt]) as mon:
        for i in range(6):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            if i == 2:
                loss = loss * float("inf")  # this step's gradients are non-finite: the scaler skips it
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    r = mon.result
    assert r.skipped_steps == 1
    assert r.steps == 5
    assert all(v < 10 for v in r.history["loss"])  # the unscaled loss, not loss * scale


def test_logged_metrics_become_columns(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt]) as mon:
        for i in range(4):
            opt.zero_grad()
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()
            torchmagic.log(accuracy=(out.argmax(1) == y).float().mean(), epoch=i // 2)
    h = mon.result.history
    assert "accuracy" in h and "epoch" in h
    assert h["epoch"].tolist() == [0, 0, 1, 1]
    assert ((h["accuracy"] >= 0) & (h["accuracy"] <= 1)).all()


def test_scheduled_layer_statistics_and_histograms(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt], every=5, histograms=True) as mon:
        _loop(model, opt, x, y, 20)
    r = mon.result
    stats = r.layer_stats
    assert set(stats["step"]) == {1, 5, 10, 15, 20}
    assert {"grad_norm", "update_ratio", "act_mean", "act_std", "act_zeros"} <= set(stats["stat"])
    assert set(stats[stats.stat == "grad_norm"]["name"]) == {"0", "2"}
    assert r.histograms["steps"] == [1, 5, 10, 15, 20]
    assert r.histograms["names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    counts = r.histograms["counts"][-1]
    assert [sum(c) for c in counts] == [128, 16, 32, 2]  # every sampled element lands in a bin
    relu = next(layer for layer in r.layers if layer.name == "1")
    assert 0 < relu.act_zeros < 1


def test_shape_table_marks_shapes_that_change(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt]) as mon:
        for n in (32, 32, 32, 10):  # the last batch is short
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[:n]), y[:n]).backward()
            opt.step()
    layers = {layer.name: layer for layer in mon.result.layers}
    assert layers["0"].input == "(f32[10, 8])" and layers["0"].output == "f32[10, 16]"
    assert layers["0"].shape_changes == 1 and layers["0"].last_change_step == 4
    assert layers[""].type == "Sequential"


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.explode = False

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Block() for _ in range(4)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_first_nonfinite_module_is_named():
    torch.manual_seed(0)
    net = _Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    with TrainingMonitor([net], [opt]) as mon:
        for i in range(6):
            if i == 3:
                with torch.no_grad():
                    net.encoder.layers[2].fc1.bias.fill_(float("inf"))
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    nonfinite = [a for a in mon.result.alerts if a.kind == "nonfinite"]
    assert nonfinite, mon.result.alerts
    assert nonfinite[0].step == 4
    assert nonfinite[0].module == "encoder.layers.2.fc1"


def test_python_warnings_counted_once_each_and_still_shown(tiny_setup):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(3, 4), torch.randn(3)  # target [3] against prediction [3, 1]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with TrainingMonitor([model], [opt]) as mon:
            for _ in range(5):
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
    alerts = [a for a in mon.result.alerts if a.kind == "warning"]
    assert len(alerts) == 1
    assert "target size" in alerts[0].message and alerts[0].count == 5 and alerts[0].step == 1
    assert sum("target size" in str(w.message) for w in shown) == 1


def test_exploding_gradient_is_flagged(tiny_setup):
    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt], every=1) as mon:
        for i in range(30):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            (loss * (1e6 if i == 25 else 1.0)).backward()
            opt.step()
    kinds = {a.kind: a for a in mon.result.alerts}
    assert "exploding_grad" in kinds and kinds["exploding_grad"].step == 26


def _hook_snapshot(model, opt):
    return global_hook_state(), module_hook_state(model), optimizer_hook_state(opt)


def test_every_exit_path_restores_hooks_including_the_users(tiny_setup):
    model, opt, x, y = tiny_setup
    model[0].register_forward_hook(lambda m, i, o: None)
    opt.register_step_post_hook(lambda o, a, k: None)
    before = _hook_snapshot(model, opt)

    with TrainingMonitor([model], [opt]):
        _loop(model, opt, x, y, 2)
    assert _hook_snapshot(model, opt) == before

    with pytest.raises(ValueError, match="boom"):
        with TrainingMonitor([model], [opt]):
            _loop(model, opt, x, y, 1)
            raise ValueError("boom")
    assert _hook_snapshot(model, opt) == before

    with pytest.raises(torch.OutOfMemoryError):
        with TrainingMonitor([model], [opt]) as mon:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert mon.result.status == "failed" and mon.result.alerts[0].kind == "oom"
    assert _hook_snapshot(model, opt) == before


def test_first_interrupt_stops_after_the_step_second_stops_at_once(tiny_setup):
    model, opt, x, y = tiny_setup
    before = _hook_snapshot(model, opt)
    reference = [p.detach().clone() for p in model.parameters()]

    def interrupt_at(step):
        def on_step(done):
            if done == step:
                os.kill(os.getpid(), signal.SIGINT)

        return on_step

    with pytest.raises(TrainingStopped):
        with TrainingMonitor([model], [opt]) as mon:
            _loop(model, opt, x, y, 50, on_step=interrupt_at(5))
    assert mon.result.status == "interrupted"
    assert mon.result.steps == 5
    assert _hook_snapshot(model, opt) == before

    # the stopped model equals a model trained for exactly 5 steps
    torch.manual_seed(0)
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    for p, r in zip(fresh.parameters(), reference):
        p.data.copy_(r)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
    _loop(fresh, fresh_opt, x, y, 5)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)

    with pytest.raises(KeyboardInterrupt) as info:
        with TrainingMonitor([model], [opt]) as mon:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the second one raises right here
            _loop(model, opt, x, y, 3)
    assert type(info.value) is KeyboardInterrupt
    assert mon.result.status == "interrupted" and mon.result.steps == 0
    assert _hook_snapshot(model, opt) == before


def test_script_api_prints_a_text_line_and_keeps_the_result(tiny_setup, capsys):
    model, opt, x, y = tiny_setup
    with torchmagic.train(model, opt, display="text") as run:
        _loop(model, opt, x, y, 8)
    out = capsys.readouterr().out
    assert "step 8" in out and "completed: 8 steps" in out
    assert torchmagic.last_run() is run.result
    assert "completed: 8 steps" in repr(run.result)


def test_forwards_without_backward_keep_no_activations_alive(tiny_setup):
    from torchmagic.core.monitor import ROOTS_KEPT

    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt]) as mon:
        _loop(model, opt, x, y, 2)
        for _ in range(50):  # a validation loop that forgot torch.no_grad()
            model(x)
        assert len(mon._outputs) <= ROOTS_KEPT
        assert sum(len(o) for o in mon._outputs) <= ROOTS_KEPT * 3


def test_log_takes_numpy_scalars_and_keeps_nan(tiny_setup):
    import numpy as np

    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt]) as mon:
        for i in range(3):
            _loop(model, opt, x, y, 1)
            torchmagic.log(acc=np.float32(0.5), seen=np.int64(i), ok=np.bool_(True), gap=float("nan"), arr=np.array([2.0]))
    h = mon.result.history
    assert mon.result.status == "completed"
    assert h["acc"].tolist() == [0.5] * 3 and h["seen"].tolist() == [0, 1, 2] and h["ok"].tolist() == [1.0] * 3
    assert h["gap"].isna().all() and mon.result.columns["gap"][0] is not None  # a logged NaN, not a missing value
    assert h["arr"].tolist() == [2.0] * 3


@pytest.mark.parametrize("name", ["loss", "step", "lr", "time", "grad_norm", "samples_per_s", "step_time", "lr_1"])
def test_log_refuses_the_names_of_measured_columns(tiny_setup, name):
    model, opt, x, y = tiny_setup
    with pytest.raises(ValueError, match=f"'{name}' is a column the monitor records itself.*'{name}_logged'"):
        with TrainingMonitor([model], [opt]) as mon:
            losses = _loop(model, opt, x, y, 2)
            torchmagic.log(**{"fine": 1.0, name: 123.0})
    assert mon.result.history["loss"].tolist() == pytest.approx(losses, rel=1e-6)  # measured values untouched
    assert "fine" not in mon.result.columns  # all or nothing: a refused call keeps none of its values


@pytest.mark.parametrize(
    "value, error, message",
    [("high", TypeError, "is a str"), (torch.ones(3), ValueError, "has 3 elements"), (None, TypeError, "NoneType")],
)
def test_log_gives_a_clear_error_for_what_it_cannot_record(tiny_setup, value, error, message):
    model, opt, x, y = tiny_setup
    with pytest.raises(error, match=message):
        with TrainingMonitor([model], [opt]) as mon:
            _loop(model, opt, x, y, 1)
            torchmagic.log(bad=value)
    assert mon.result.status == "failed" and mon.result.steps == len(mon.result.history) == 1


def test_an_error_in_the_final_refresh_leaves_steps_and_history_agreeing(tiny_setup, monkeypatch):
    from torchmagic.core import devicestats

    model, opt, x, y = tiny_setup
    with TrainingMonitor([model], [opt], refresh_interval=3600.0) as mon:  # every step waits for the final refresh
        _loop(model, opt, x, y, 4)
        monkeypatch.setattr(devicestats, "to_host", lambda items: (_ for _ in ()).throw(RuntimeError("device lost")))
    r = mon.result
    assert r.steps == len(r.history) == 4 and r.history["step"].tolist() == [1, 2, 3, 4]
    assert r.history["loss"].isna().all()  # the values that waited on the device are missing, not invented
    assert "final refresh" in r.error and "device lost" in r.error
    assert any(a.kind == "error" for a in r.alerts) and r.status == "completed"
