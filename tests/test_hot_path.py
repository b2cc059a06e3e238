"""What an ordinary step costs the monitor, pinned by behaviour (never by timing): no global module
hook outside the watched steps, history rows of constant size, and what is still caught on the
steps nobody watches (a new input shape, the batch size, a non-finite loss)."""

from __future__ import annotations

import gc
import math
import os
import signal
import threading
import time

import pytest
import torch
import torch.nn as nn
from torch.nn.modules import module as nn_module

from tests.conftest import global_hook_state
from torchmagic.core import TrainingMonitor, TrainingStopped
from torchmagic.core.alerts import AlertBook
from torchmagic.core.history import Column
from torchmagic.core.nonfinite import NonfiniteAlerts
from torchmagic.core.pending import PendingSteps
from torchmagic.core.recording import StepRecorder
from torchmagic.core.result import RunResult
from torchmagic.core.schedule import StepSchedule
from torchmagic.core.stepstate import NamedTensors, StepValues
from torchmagic.core.transfer import PendingStep


def _global_hooks() -> int:
    return len(nn_module._global_forward_pre_hooks) + len(nn_module._global_forward_hooks)


class _Probe(nn.Module):
    """A layer that notes, from inside the model's forward, whether global module hooks are installed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(_global_hooks())
        return self.fc(x)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(_Probe(), nn.ReLU(), nn.Linear(8, 2))


def _step(model, opt, x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def test_unscheduled_steps_run_without_global_module_hooks():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    before_forward = []
    with TrainingMonitor([model], [opt], every=5) as mon:
        for _ in range(12):
            before_forward.append(_global_hooks())
            _step(model, opt, x, y)
    watched = [i + 1 for i, n in enumerate(model[0].seen) if n]
    assert watched == [1, 5, 10]  # the schedule's steps; every other forward took torch's fast path
    assert [i + 1 for i, n in enumerate(before_forward) if n] == [1, 5, 10]
    assert mon.result.history["samples_per_s"].notna().all()  # the batch is still counted on every step
    assert set(mon.result.layer_stats["step"]) == {1, 5, 10}


def test_a_new_input_shape_on_an_unwatched_step_is_traced_that_step():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    before_forward = []
    with TrainingMonitor([model], [opt]) as mon:
        for n in (32, 32, 32, 10, 32, 32):
            before_forward.append(_global_hooks())
            _step(model, opt, x[:n], y[:n])
    assert before_forward[3] == 0 and model[0].seen[3] > 0  # step 4 was not watched until its input changed
    layers = {layer.name: layer for layer in mon.result.layers}
    assert layers["0.fc"].shape_changes == 2 and layers["0.fc"].last_change_step == 5
    assert layers["2"].output == "f32[32, 2]"
    h = mon.result.history
    samples = (h["samples_per_s"] * h["step_time"]).round().tolist()
    assert samples == [32, 32, 32, 10, 32, 32]  # the short batch is counted as it was


class _Cut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.width = 8

    def forward(self, x):
        return x[:, : self.width]


class _CutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cut, self.fc = _Cut(), nn.Linear(8, 2)

    def forward(self, x):
        h = self.cut(x)
        return self.fc(nn.functional.pad(h, (0, 8 - h.shape[1])))


def test_a_shape_change_inside_the_model_shows_on_the_next_watched_step():
    """What is given up: with the model's input unchanged, a new inner shape waits for a watched step."""
    torch.manual_seed(0)
    model = _CutNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    with TrainingMonitor([model], [opt], every=5) as mon:
        for step in range(1, 7):
            model.cut.width = 8 if step < 3 else 4  # from step 3 (not watched) the cut's output is narrower
            _step(model, opt, x, y)
    cut = next(layer for layer in mon.result.layers if layer.name == "cut")
    assert (cut.output, cut.shape_changes, cut.last_change_step) == ("f32[16, 4]", 1, 5)


def test_history_costs_the_same_bytes_per_row_on_a_short_and_a_long_run():
    def bytes_per_row(steps: int) -> float:
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
        with TrainingMonitor([model], [opt], refresh_interval=0.0) as mon:
            for _ in range(steps):
                _step(model, opt, x, y)
        cols = mon.result.columns
        assert cols.rows == steps and all(isinstance(c, Column) and len(c) == steps for c in cols.values())
        return cols.nbytes / steps

    short, long = bytes_per_row(50), bytes_per_row(1500)
    assert short == long <= 7 * 8 + 1  # seven 8-byte columns and a missing-value mask for grad_norm


def test_steps_waiting_for_the_refresh_leave_no_objects_for_the_garbage_collector():
    """A plain step is a row of typed arrays until the refresh: the objects the collector tracks do
    not grow with the steps (one record per step made its full passes come round every few thousand)."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
    with TrainingMonitor([model], [opt], every=0, refresh_interval=1e9) as mon:
        for _ in range(20):
            _step(model, opt, x, y)
        gc.collect()
        before = len(gc.get_objects())
        for _ in range(2000):
            _step(model, opt, x, y)
        gc.collect()
        grown = len(gc.get_objects()) - before
        waiting = len(mon._pending)
    assert waiting == 2020 and mon.result.columns.rows == 2020  # all rows reached the history at the end
    assert grown < 100, f"{grown} objects for 2000 waiting steps"


def test_history_columns_read_like_lists_and_build_the_frame_on_demand():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
    with TrainingMonitor([model], [opt], every=3) as mon:
        losses = [_step(model, opt, x, y).item() for _ in range(7)]
    cols = mon.result.columns
    assert cols["step"][:] == list(range(1, 8)) and cols["loss"][-1] == losses[-1]
    assert cols["grad_norm"][1] is None and cols["grad_norm"][2] is not None and cols["grad_norm"].last is not None
    assert list(reversed(cols["step"]))[0] == 7
    assert mon.result.history["loss"].tolist() == losses and mon.result.final_loss == losses[-1]


class _Overflow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.explode = False

    def forward(self, x):
        h = self.b(self.a(x))
        return self.head(h * 1e39 if self.explode else h)  # float32 overflows to inf in b's output


def test_a_nonfinite_loss_on_an_unwatched_step_names_its_step_then_its_module():
    torch.manual_seed(0)
    net = _Overflow()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    with TrainingMonitor([net], [opt]) as mon:
        for i in range(8):
            net.explode = i in (3, 4)  # the 4th forward and the one after
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            if torch.isfinite(loss):  # the loop skips bad updates: the parameters stay finite
                opt.step()
    alert = next(a for a in mon.result.alerts if a.kind == "nonfinite")
    assert alert.step == 4  # the step it happened in, not watched
    assert alert.module == "(model)"  # h * 1e39 is made in _Overflow.forward itself, not in head that takes it
    assert "first seen at step 4, an unwatched step; located in a later forward of that step, watched" in alert.message
    assert "first made in _Overflow.forward itself, not in a submodule" in alert.message
    assert global_hook_state()["forward_pre"] == {}


def test_the_alert_says_so_when_the_watched_step_cannot_name_the_module():
    torch.manual_seed(0)
    net = _Overflow()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    with TrainingMonitor([net], [opt]) as mon:
        for i in range(6):
            net.explode = i == 3
            _step(net, opt, x, y)  # the non-finite gradients of step 4 reach every parameter
    alert = next(a for a in mon.result.alerts if a.kind == "nonfinite")
    assert alert.step == 4 and alert.module is None
    assert "by step 5 the update of step 4 had made parameter" in alert.message and "not known" in alert.message


def test_accelerator_path_reads_the_loss_at_the_refresh_and_names_the_module_from_a_later_check():
    """On a GPU the loss is read only at the refresh; the recorder's side of that, on CPU tensors."""
    result, alerts = RunResult(), AlertBook()
    recorder = StepRecorder(result, alerts, StepSchedule(10), lambda ps: [f"p{i}" for i in range(len(ps))], list)

    def step(n: int, loss: float, check: NamedTensors | None = None) -> PendingStep:
        values = StepValues(micro_batches=1, loss=torch.tensor(loss), watched=check is not None)
        values.finite_checks = [check] if check is not None else []
        return PendingStep(n, float(n), 0.1, [0.1], values)

    recorder.absorb(PendingSteps.of([step(3, 1.0), step(4, float("nan"))]))
    pending = recorder.nonfinite.unlocated
    assert pending is not None and pending.step == 4 and pending.at is None  # the monitor now watches a step
    pending.at = 6
    norms = NamedTensors(["<parameter a.weight>", "a", "b"], [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(float("inf"))])
    recorder.absorb(PendingSteps.of([step(5, float("nan")), step(6, float("nan"), norms)]))
    alert = alerts.alerts[0]
    assert (alert.step, alert.module, alert.count) == (4, "b", 3)
    assert "first seen at step 4, an unwatched step; located on step 6, the next step whose modules were watched" in alert.message
    assert alert.message.endswith("non-finite activation first seen in b")
    assert not recorder.nonfinite.locating and len(alerts.alerts) == 1
    first, second = result.columns["loss"][:2]
    assert first == 1.0 and second is not None and math.isnan(second)  # a NaN loss is a value, not a gap


def test_nonfinite_alerts_stop_looking_once_one_is_named():
    book = AlertBook()
    nonfinite = NonfiniteAlerts(book)
    assert nonfinite.locating
    nonfinite.add("activation", "fc1", 3)
    assert not nonfinite.locating and book.has("nonfinite")


def _raw_loop(w, opt, x, y, steps, on_step):
    for i in range(steps):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()  # no nn.Module anywhere
        loss.backward()
        opt.step()
        on_step(i + 1)


@pytest.mark.parametrize("how", ["sigint", "stop_request"])
def test_a_loop_on_raw_tensors_stops_after_the_current_step(how):
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32)
    w = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    before = global_hook_state()

    def stop_after_two(done):
        if done == 2:
            os.kill(os.getpid(), signal.SIGINT) if how == "sigint" else mon.stop_request.request()

    with pytest.raises(TrainingStopped, match="after step 2"):
        with TrainingMonitor() as mon:
            _raw_loop(w, opt, x, y, 50, stop_after_two)
    assert (mon.result.status, mon.result.steps, len(mon.result.history)) == ("interrupted", 2, 2)
    expected = torch.zeros(4, requires_grad=True)
    _raw_loop(expected, torch.optim.SGD([expected], lr=0.1), x, y, 2, lambda done: None)
    assert torch.equal(w, expected)  # exactly two updates
    assert global_hook_state() == before


def test_a_loop_without_optimizer_stops_at_its_next_backward():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32)
    w = torch.zeros(4, requires_grad=True)
    with pytest.raises(TrainingStopped):
        with TrainingMonitor() as mon:
            for i in range(50):
                ((x @ w - y) ** 2).mean().backward()
                with torch.no_grad():
                    w -= 0.1 * w.grad
                    w.grad = None
                if i == 2:
                    mon.stop_request.request()
    assert (mon.result.status, mon.result.steps) == ("interrupted", 3)


def test_a_stop_never_raises_in_a_thread_the_user_started():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    errors: list[BaseException] = []
    done = threading.Event()

    def evaluate():  # a background thread calling the model while the loop trains
        try:
            while not done.is_set():
                with torch.no_grad():
                    model(x)
        except BaseException as exc:  # noqa: BLE001 - what the test looks for
            errors.append(exc)

    thread = threading.Thread(target=evaluate)
    try:
        with pytest.raises(TrainingStopped):
            with TrainingMonitor([model], [opt], every=1) as mon:
                thread.start()
                for i in range(200):
                    _step(model, opt, x, y)
                    if i == 3:
                        mon.stop_request.request()
                    time.sleep(0.001)
    finally:
        done.set()
        thread.join()
    assert errors == [] and mon.result.steps == 4


def test_the_default_schedule_doubles_its_period_for_fast_loops_only():
    schedule = StepSchedule(10, auto=True)
    assert not schedule.adapt(150.0) and schedule.period == 10  # 15 statistics steps a second: kept
    assert schedule.adapt(5000.0) and schedule.period == 320  # 5000/320 = 15.6 a second
    assert schedule(1) and schedule(640) and not schedule(10) and not schedule(330)
    assert schedule.adapt(100.0) and schedule.period == 10  # the loop slowed down: back to every 10
    fixed = StepSchedule(10)
    assert not fixed.adapt(1e6) and fixed.period == 10  # a period the user chose is kept
    never = StepSchedule(0, auto=True)
    assert not never.adapt(1e6) and not never(1)


def test_statistics_steps_follow_the_period_in_force_and_an_explicit_every_is_kept():
    """Whatever the machine's speed: under the default schedule every statistics step is step 1 or
    a multiple of 10 (each longer period samples a subset of a shorter one's steps), and with an
    explicit ``every`` exactly steps 1, N, 2N, ... have statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 8), torch.randn(4, 1)
    for every, steps in ((None, 3000), (7, 300)):
        with TrainingMonitor([model], [opt], every=every, catch_sigint=False) as mon:
            for _ in range(steps):
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
        sampled = sorted({row.step for row in mon.result.layer_rows if row.stat == "grad_norm"})
        if every is None:
            assert sampled[:2] == [1, 10] and all(s % 10 == 0 for s in sampled[1:])
            assert mon.schedule.period % 10 == 0
        else:
            assert sampled == [1, *range(7, steps + 1, 7)]
