"""transformers' and Lightning's Trainer report through their own callback APIs: planned steps, logged
values, epochs, steps counted by optimizer steps from step 1, stops after the current step.
Through a real IPython shell, tiny models built from configs (no download), numbers unchanged."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import close_shell, global_hook_state, new_shell

pytest.importorskip("transformers")
pytest.importorskip("lightning")

HF_SETUP = """
import tempfile, torch, torchmagic
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
g = torch.Generator().manual_seed(1)
data = [{"input_ids": (ids := torch.randint(0, 64, (12,), generator=g)), "labels": ids} for _ in range(48)]
args = TrainingArguments(
    output_dir=tempfile.mkdtemp(), report_to=[], max_steps=8, logging_steps=1, save_strategy="no", use_cpu=True,
    disable_tqdm=True, per_device_train_batch_size=4, gradient_accumulation_steps={accumulation},
    eval_strategy="steps", eval_steps=4, per_device_eval_batch_size=8,
)
trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:16])
"""

PL_SETUP = """
import torch, torchmagic
import lightning.pytorch as pl

class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

class StopAt(pl.Callback):
    def __init__(self, step):
        self.step = step
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            torchmagic.core.active_monitor().stop_request.request()

torch.manual_seed(0)
model = Regression()
g = torch.Generator().manual_seed(1)
xs = torch.randn(64, 4, generator=g)
ds = torch.utils.data.TensorDataset(xs, xs.sum(1, keepdim=True))
train_loader = torch.utils.data.DataLoader(ds, batch_size=8)
val_loader = torch.utils.data.DataLoader(ds, batch_size=32)
trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks={callbacks})
"""

RUN = "with torchmagic.train(display='none') as run:\n    {call}\n"


@pytest.fixture
def sh():
    shell = new_shell()
    shell.run_line_magic("load_ext", "torchmagic")
    yield shell
    shell.run_line_magic("unload_ext", "torchmagic")
    close_shell(shell)


def _weights(sh) -> list[torch.Tensor]:
    return [p.detach().clone() for p in sh.user_ns["model"].parameters()]


def _run(sh, cell: str) -> None:
    sh.run_cell(cell).raise_error()


def _train_bare_then_watched(sh, setup: str, call: str):
    _run(sh, setup)
    _run(sh, call)
    bare = _weights(sh), list(sh.user_ns["trainer"].state.log_history) if "transformers" in setup else None
    _run(sh, setup)
    before = global_hook_state()
    _run(sh, RUN.format(call=call))
    assert global_hook_state() == before
    return bare


@pytest.mark.parametrize("accumulation", [1, 2])
def test_transformers_trainer_steps_losses_logs_and_plan_reach_the_history(sh, accumulation):
    setup = HF_SETUP.replace("{accumulation}", str(accumulation))
    (bare_weights, bare_log) = _train_bare_then_watched(sh, setup, "trainer.train()")
    run, trainer = sh.user_ns["run"].result, sh.user_ns["trainer"]
    assert run.status == "completed" and run.steps == 8 and run.total_steps == 8
    assert list(run.columns["step"]) == list(range(1, 9))  # not split at the first step
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == list(range(1, 9))
    assert list(run.columns["loss"]) == [e["loss"] for e in train_logs]  # what the Trainer logs, exactly
    assert list(run.columns["learning_rate"]) == [e["learning_rate"] for e in train_logs]
    assert list(run.columns["lr"]) == [e["learning_rate"] for e in train_logs]  # the scheduler's, as used
    assert list(run.columns["epoch"]) == [e["epoch"] for e in train_logs]
    evals = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    assert list(evals) == [4, 8]
    assert [v for v in run.columns["eval_loss"] if v is not None] == list(evals.values())
    assert run.columns["eval_loss"][3] == evals[4]
    assert not [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "TorchmagicCallback"]
    assert all(torch.equal(a, b) for a, b in zip(_weights(sh), bare_weights))
    numbers = ("loss", "eval_loss", "grad_norm", "learning_rate")
    assert [[e.get(k) for k in numbers] for e in trainer.state.log_history] == [[e.get(k) for k in numbers] for e in bare_log]


def test_transformers_trainer_stops_after_the_current_step_when_asked(sh):
    _run(sh, HF_SETUP.replace("{accumulation}", "1"))
    cell = (
        "from transformers import TrainerCallback\n"
        "class StopAt(TrainerCallback):\n"
        "    def on_step_end(self, args, state, control, **kw):\n"
        "        if state.global_step == 3:\n"
        "            torchmagic.core.active_monitor().stop_request.request()\n"
        "trainer.add_callback(StopAt())\n"
    )
    _run(sh, cell)
    _run(sh, RUN.format(call="trainer.train()"))
    run = sh.user_ns["run"].result
    assert run.status == "interrupted" and run.steps == 3 == sh.user_ns["trainer"].state.global_step


def test_lightning_trainer_logs_epochs_validation_and_plan_reach_the_history(sh):
    setup = PL_SETUP.replace("{callbacks}", "[]")
    call = "trainer.fit(model, train_loader, val_loader)"
    bare_weights, _ = _train_bare_then_watched(sh, setup, call)
    run, trainer = sh.user_ns["run"].result, sh.user_ns["trainer"]
    assert run.status == "completed" and run.steps == 16 and run.total_steps == 16
    assert list(run.columns["evaluations"]) == [1] * 16  # automatic optimization: step(closure)
    assert list(run.columns["loss"]) == pytest.approx(list(run.columns["train_loss"]), rel=0, abs=0)
    assert list(run.columns["epoch"]) == [0.0] * 8 + [1.0] * 8
    val = run.columns["val_loss"]
    assert [i for i, v in enumerate(val) if v is not None] == [7, 15]  # after each epoch, not the sanity check
    assert val[15] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    assert all(g is not None for g in list(run.columns["grad_norm"])[:1])  # step 1 has its own gradients
    assert not [c for c in trainer.callbacks if type(c).__name__ == "TorchmagicCallback"]
    assert all(torch.equal(a, b) for a, b in zip(_weights(sh), bare_weights))


def test_lightning_trainer_stops_after_the_current_step_when_asked(sh):
    _run(sh, PL_SETUP.replace("{callbacks}", "[StopAt(5)]"))
    _run(sh, RUN.format(call="trainer.fit(model, train_loader)"))
    run = sh.user_ns["run"].result
    assert run.status == "interrupted" and run.steps == 5 == sh.user_ns["trainer"].global_step


def test_the_engine_imports_no_framework_the_loop_did_not(sh):
    _run(sh, "import torch, torchmagic\nmodel = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)")
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in ("transformers", "lightning")}
    try:
        loop = "for _ in range(3):\n    opt.zero_grad(); model(torch.ones(1, 2)).sum().backward(); opt.step()"
        _run(sh, f"%%train --display none\n{loop}")
        assert not [n for n in sys.modules if n.split(".")[0] in ("transformers", "lightning")]
    finally:
        sys.modules.update(hidden)


def test_train_magic_runs_a_trainer_train_cell(sh):
    _run(sh, HF_SETUP.replace("{accumulation}", "2"))
    _run(sh, "%%train --display none\ntrainer.train()")
    run, trainer = sh.user_ns["torchmagic"].last_run(), sh.user_ns["trainer"]
    assert run.status == "completed" and run.steps == 8 and run.total_steps == 8
    assert list(run.columns["loss"]) == [e["loss"] for e in trainer.state.log_history if "loss" in e]
