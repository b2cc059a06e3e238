"""%%tensor_inspect on a cell: ops by line and module, shape errors explained, broadcasting flagged."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.conftest import global_hook_state
from torchmagic.core.celltrace import OpRecorder

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Net(nn.Module):
    def __init__(self, in_features=4000):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc1 = nn.Linear(in_features, 10)

    def forward(self, x):
        return self.fc1(F.relu(self.conv(x)).flatten(1))


def run(code: str, ns: dict) -> tuple[OpRecorder, BaseException | None]:
    compiled = compile(code, "<cell-test>", "exec")
    with OpRecorder("<cell-test>", ns) as rec:
        try:
            exec(compiled, ns)
        except Exception as exc:  # noqa: BLE001
            return rec, exc
    return rec, None


def test_ops_grouped_by_line_and_module_with_shapes():
    ns = {"torch": torch, "net": Net(in_features=4 * 6 * 6)}
    rec, exc = run("x = torch.randn(2, 3, 8, 8)\ny = net(x)\nfor i in range(3):\n    z = y * 2\n", ns)
    assert exc is None
    by = {(o.line, o.module, o.op): o for o in rec.ops}
    assert by[(1, None, "randn")].outputs == "f32[2, 3, 8, 8]"
    conv = by[(2, "conv", "conv2d")]
    assert conv.inputs.startswith("f32[2, 3, 8, 8], f32[4, 3, 3, 3]") and conv.outputs == "f32[2, 4, 6, 6]"
    assert by[(2, "net", "flatten")].outputs == "f32[2, 144]" and by[(2, "fc1", "linear")].outputs == "f32[2, 10]"
    assert by[(4, None, "mul")].count == 3


def test_wrong_in_features_names_the_module_and_its_config():
    hooks = global_hook_state()
    ns = {"torch": torch, "model": Net(in_features=4000)}
    rec, exc = run("out = model(torch.randn(2, 3, 34, 34))", ns)
    assert isinstance(exc, RuntimeError)
    f = rec.finding_for(exc)
    assert f.kind == "shape_error" and f.module == "fc1" and f.op == "linear" and f.line == 1
    assert "Linear(in_features=4000, out_features=10" in f.message and "f32[2, 4096]" in f.message
    assert f.shapes[:2] == [[2, 4096], [10, 4000]]
    assert global_hook_state() == hooks and torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize(
    "code, words",
    [
        ("torch.randn(3, 4) @ torch.randn(5, 6)", ["matmul", "[3, 4] @ [5, 6]"]),
        ("torch.randn(3, 4).view(-1, 5)", ["view", "not a multiple of 5"]),
        ("torch.randn(3, 4).reshape(5, 2)", ["reshape", "has 12 elements"]),
        ("torch.cat([torch.randn(2, 3), torch.randn(2, 4)], 0)", ["cat", "[2, 3], [2, 4]"]),
        ("torch.stack([torch.randn(3), torch.randn(4)])", ["stack", "[3], [4]"]),
        ("torch.randn(3, 4) + torch.randn(5)", ["add", "4 vs 5"]),
        ("nn.Conv2d(3, 8, 3)(torch.randn(1, 4, 9, 9))", ["conv2d", "4 channels", "in_channels=3", "Conv2d(3, 8"]),
    ],
)
def test_each_kind_of_shape_error_is_explained(code, words):
    rec, exc = run(code, {"torch": torch, "nn": nn})
    f = rec.finding_for(exc)
    assert f is not None and f.kind == "shape_error"
    for w in words:
        assert w in f.message, f.message


@pytest.mark.parametrize(
    "code, words",
    [
        ("nn.ConvTranspose2d(4, 6, 3, groups=2)(torch.randn(1, 5, 8, 8))", ["5 channels", "in_channels=4"]),
        ("F.conv_transpose2d(torch.randn(1, 5, 8, 8), torch.randn(4, 6, 3, 3))", ["in_channels=4"]),
        ("torch.hstack([torch.randn(2, 3), torch.randn(3, 3)])", ["hstack along dim 1", "[2, 3], [3, 3]"]),
        ("torch.hstack([torch.randn(3), torch.randn(3, 1)])", ["hstack along dim 1"]),
        ("torch.vstack([torch.randn(3), torch.randn(4)])", ["vstack along dim 0", "[3], [4]"]),
        ("torch.dstack([torch.randn(2, 3), torch.randn(2, 4)])", ["dstack along dim 2"]),
        ("torch.randn(2, 3, 4) @ torch.randn(5, 4, 6)", ["batch dimensions [2] of the left and [5]"]),
        ("torch.bmm(torch.randn(2, 3, 4), torch.randn(5, 4, 6))", ["bmm needs equal batch sizes"]),
        ("torch.randn(3).add_(torch.randn(2, 3))", ["add_(", "in-place", "broadcast to [2, 3]"]),
        ("torch.where(torch.ones(3, dtype=torch.bool), torch.randn(2, 3), torch.randn(4))", ["[3] and [4] do not broadcast"]),
    ],
)
def test_transposed_convs_stacks_and_batched_products_are_explained_right(code, words):
    rec, exc = run(code, {"torch": torch, "nn": nn, "F": F})
    f = rec.finding_for(exc)
    assert f is not None and f.kind == "shape_error"
    for w in words:
        assert w in f.message, f.message


@pytest.mark.parametrize(
    "code, words",
    [
        ("emb = nn.Embedding(10, 4)\nemb(torch.tensor([1, 12]))", ["`emb`", "index 12 is out of range: num_embeddings is 10"]),
        ("F.embedding(torch.tensor([-1, 3]), torch.randn(10, 4))", ["index -1 is negative", "0…9"]),
        ("F.embedding(torch.tensor([1.0]), torch.randn(10, 4))", ["indices are f32", ".long()"]),
        ("torch.index_select(torch.randn(10, 4), 0, torch.tensor([1, 12]))", ["dimension 0 of [10, 4] has size 10"]),
        ("F.cross_entropy(torch.randn(4, 10), torch.tensor([1, 2, -100, 12]))", ["target 12", "10 classes", "1 of 3"]),
        ("torch.gather(torch.randn(3, 4), 1, torch.tensor([[5]]))", ["index 5 is out of bounds"]),
        ("torch.randn(10, 4)[torch.tensor([12])]", ["index 12 is out of bounds"]),
        ("torch.take(torch.randn(3), torch.tensor([5]))", ["tried to access index 5"]),
        ("torch.zeros(3).scatter_(0, torch.tensor([7]), 1.0)", ["index 7 is out of bounds"]),
    ],
)
def test_index_errors_say_which_index_and_never_blame_broadcasting(code, words):
    rec, exc = run(code, {"torch": torch, "nn": nn, "F": F})
    f = rec.finding_for(exc)
    assert f is not None and f.kind == "op_error" and not f.message.startswith("Shape error")
    assert "broadcast" not in f.message, f.message
    for w in words:
        assert w in f.message, f.message


def test_loss_broadcasting_is_flagged_with_both_shapes():
    code = (
        "pred = torch.randn(16, 1)\ny = torch.randn(16)\n"
        "import warnings\nwarnings.simplefilter('ignore')\n"
        "a = torch.nn.functional.mse_loss(pred, y)\nb = ((pred - y) ** 2).mean()\nc = ((pred.squeeze(1) - y) ** 2).mean()\n"
    )
    rec, exc = run(code, {"torch": torch})
    assert exc is None
    flagged = [(f.line, f.shapes) for f in rec.findings if f.kind == "broadcast"]
    assert flagged == [(5, [[16, 1], [16]]), (6, [[16, 1], [16]])]
    assert "[16, 16]" in rec.findings[0].message


def test_cell_magic_reraises_with_note_and_shows_explanation(shell, capsys):
    shell.user_ns.update(torch=torch, nn=nn, Net=Net)
    result = shell.run_cell("%%tensor_inspect\nmodel = Net()\nout = model(torch.randn(2, 3, 34, 34))\n")
    exc = result.error_in_exec
    assert isinstance(exc, RuntimeError) and "mat1 and mat2" in str(exc)
    note = exc.__notes__[0]
    assert "`fc1`" in note and "Linear(in_features=4000, out_features=10" in note and "linear(" in note
    printed = capsys.readouterr().out
    assert printed.index("Shape error in module `fc1`") < printed.index("RuntimeError")
    assert exc.inspect_result.ops[0].op == "randn" or any(o.module == "conv" for o in exc.inspect_result.ops)


def test_cell_magic_returns_result_and_cleans_up(shell):
    hooks = global_hook_state()
    shell.user_ns.update(torch=torch)
    res = shell.run_cell("%%tensor_inspect\nx = torch.ones(3)\ny = x.sum()\n")
    r = res.result
    assert r.kind == "cell" and [(o.line, o.op) for o in r.ops] == [(1, "ones"), (2, "sum")]
    assert r.ops_table.shape == (2, 6) and torch._C._len_torch_function_stack() == 0
    assert global_hook_state() == hooks


def test_module_magic_failure_is_explained_too(shell):
    shell.user_ns.update(torch=torch, model=Net())
    res = shell.run_cell("%tensor_inspect model --input torch.randn(2, 3, 34, 34)")
    exc = res.error_in_exec
    assert "`fc1`" in exc.__notes__[0]
    assert [r["module"] for r in exc.inspect_result.trace_rows] == ["", "conv", "fc1"]


@pytest.mark.slow
def test_demo_notebook_runs_headless_and_explains_the_failure(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "demo_notebooks" / "inspect.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1, [o.get("evalue") for _, o in errors]
    failing = nb.cells[errors[0][0]]
    html = [o["data"]["text/html"] for o in failing.outputs if "text/html" in o.get("data", {})]
    assert html and "fc1" in html[0] and "in_features=4000" in html[0]
    assert any("in_features=4000" in line for line in errors[0][1]["traceback"])
    blob = "\n".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "data:image/png;base64," in blob and "layer-by-layer trace" in blob and "<script" not in blob
    assert "PackedSequence" in blob or "Packed(" in blob
    assert "attn" in blob and "(f32[4, 10, 32], f32[4, 10, 10])" in blob
