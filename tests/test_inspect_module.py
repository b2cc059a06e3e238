"""%tensor_inspect on modules: parameter table, FLOPs, a layer-by-layer shape trace that leaves no trace."""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from tests.conftest import global_hook_state, module_hook_state
from torchmagic.core.modtrace import parameter_rows, shapes_of, trace_module


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.emb(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(h[-1])


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: tuple
    extra: None = None


class Structured(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x, mask=None):
        y = self.bn(self.drop(self.a(x)))
        return Output(y, (y, [y.sum(0)]), None), OrderedDict(score=y.mean(1))


def test_parameter_table_has_rows_for_parameters_and_buffers_and_totals():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[0].bias.requires_grad_(False)
    rows, totals = parameter_rows(model)
    names = [(r["name"], r["kind"]) for r in rows]
    assert ("0.weight", "parameter") in names and ("1.running_mean", "buffer") in names
    weight = next(r for r in rows if r["name"] == "0.weight")
    assert weight["shape"] == [4, 3] and weight["count"] == 12 and weight["bytes"] == 48 and weight["trainable"]
    assert totals["params"] == 12 + 4 + 8 and totals["trainable"] == 12 + 8 and totals["buffers"] == 4 + 4 + 1


def test_trace_of_nested_structures_and_model_state_is_restored():
    torch.manual_seed(0)
    model = Structured().train()
    x = torch.randn(5, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, mods = global_hook_state(), module_hook_state(model)
    rng, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    r = trace_module(model, (x,), {"mask": None}, name="model")
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state()) and py == random.getstate()
    assert np.array_equal(npy, np.random.get_state()[1])
    # the first FlopCounterMode imports sympy, which adds a warnings filter of its own
    hooks.pop("filters")
    after = global_hook_state()
    after.pop("filters")
    assert after == hooks and module_hook_state(model) == mods
    t = r.trace
    assert list(t["module"]) == ["", "a", "drop", "bn"]
    assert t.loc[0, "input_shapes"] == [[5, 4], {"mask": None}]
    out = t.loc[0, "output_shapes"]
    assert out == [{"logits": [5, 4], "hidden": [[5, 4], [[4]]], "extra": None}, {"score": [5]}]
    assert t.loc[1, "params"] == 20 and t.loc[3, "params"] == 8 and t.loc[1, "type"] == "Linear"
    assert r.flops == 2 * 5 * 4 * 4 and t.loc[1, "flops"] == 160


def test_lstm_over_packed_sequence():
    model = LSTMClassifier()
    tokens, lengths = torch.randint(0, 20, (4, 7)), torch.tensor([7, 5, 3, 2])
    r = trace_module(model, (tokens, lengths))
    t = r.trace.set_index("module")
    assert t.loc["lstm", "input_shapes"] == [{"data": [17, 6], "batch_sizes": [7]}]
    assert t.loc["lstm", "output_shapes"] == [{"data": [17, 8], "batch_sizes": [7]}, [[1, 4, 8], [1, 4, 8]]]
    assert t.loc["head", "output_shapes"] == [4, 3] and "Packed(f32[17, 6], batch=4)" in t.loc["lstm", "input"]


def test_lazy_model_never_run_is_traced_on_a_copy():
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(5))
    r = trace_module(model, (torch.randn(2, 3, 4),))
    assert isinstance(model[1].weight, nn.parameter.UninitializedParameter)
    assert r.trace.loc[2, "output_shapes"] == [2, 5] and r.totals["params"] == 12 * 5 + 5 and "copy" in r.note


def test_meta_model_and_input():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    r = trace_module(model, (torch.empty(2, 3, 32, 32, device="meta"),))
    assert r.trace.loc[4, "output_shapes"] == [2, 10] and r.flops > 0 and r.totals["devices"] == ["meta"]


def test_shapes_of_other_values():
    assert shapes_of((torch.zeros(2), [None, {"k": torch.zeros(1, 3)}], 5)) == [[2], [None, {"k": [1, 3]}], None]


def test_a_failing_forward_keeps_the_partial_trace_and_state():
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(5, 2)).train()
    with pytest.raises(RuntimeError) as info:
        trace_module(model, (torch.randn(3, 4),))
    rows = info.value.inspect_result.trace_rows
    assert [r["output"] for r in rows] == ["✗ raised", "f32[3, 6]", "✗ raised"] and model.training


def test_hundred_layers_trace_quickly():
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(100)])
    r = trace_module(model, (torch.randn(4, 32),))
    assert len(r.trace_rows) == 101 and r.elapsed < 5.0


def test_magic_with_tuple_and_dict_inputs(shell):
    shell.user_ns.update(torch=torch, model=LSTMClassifier(), tok=torch.randint(0, 20, (2, 5)))
    shell.run_cell("r = %tensor_inspect model --input (tok, torch.tensor([5, 3]))")
    r = shell.user_ns["r"]
    assert r.kind == "module" and r.trace.loc[0, "output_shapes"] == [2, 3]
    shell.run_cell("r2 = %tensor_inspect model --input {'tokens': tok, 'lengths': torch.tensor([5, 3])}")
    assert shell.user_ns["r2"].trace.loc[0, "input_shapes"] == [{"tokens": [2, 5], "lengths": [2]}]
    shell.run_cell("r3 = %tensor_inspect model")
    r3 = shell.user_ns["r3"]
    assert r3.trace.empty and r3.params.shape[0] == len(list(model_params(shell.user_ns["model"])))


def model_params(model):
    return list(model.parameters()) + list(model.buffers())


def test_magic_input_mismatch_says_what_forward_expects(shell):
    from IPython.core.error import UsageError

    shell.user_ns.update(torch=torch, model=LSTMClassifier())
    with pytest.raises(UsageError, match=r"forward\(tokens, lengths\)") as info:
        shell.run_line_magic("tensor_inspect", "model --input torch.zeros(2, 5)")
    assert "\n" not in str(info.value)


def test_magic_text_and_html(shell):
    from torchmagic.display.inspect_view import html, text

    shell.user_ns.update(torch=torch, net=nn.Sequential(nn.Linear(4, 3)))
    r = shell.run_line_magic("tensor_inspect", "net --input torch.zeros(2, 4)")
    assert "Linear" in text(r) and "f32[2, 3]" in text(r)
    page = html(r)
    assert "layer-by-layer trace" in page and "0.weight" in page and "<script" not in page
