"""The catalogue for ``%tensor_inspect``, ``%%tensor_inspect`` and the Python API behind them.

Bad inputs get a one-line ``UsageError`` that says what is wrong; every tensor kind gets its card
and either statistics or a one-line reason; faults inside the inspected code surface as the
user's own exception (explained where torchmagic can); every user-controlled string reaches the
HTML escaped. Each case runs under ``leaves_no_trace``.
"""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest
import sympy  # noqa: F401 - the first FLOP count imports it, and it adds a warnings filter of its own
import torch
from IPython.core.error import UsageError

from torchmagic.core.celltrace import OpRecorder
from torchmagic.core.modtrace import trace_module
from torchmagic.core.tensorstats import inspect_tensor
from torchmagic.display.inspect_view import explanation_html, html, text

XSS = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"

DEFINITIONS = f"""
import torch, torch.nn as nn, numpy as np

class Shapeless:
    @property
    def shape(self):
        raise RuntimeError("a property that raises")

class NoInit(nn.Module):
    def __init__(self):
        pass

class Interrupting(nn.Module):
    def forward(self, x):
        raise KeyboardInterrupt

class _X(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.n = n

    def forward(self, x):
        return self.fc(x) @ torch.ones(self.n, 2)

_X.__name__ = _X.__qualname__ = {XSS!r}
x = torch.arange(12.0).reshape(3, 4)
net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
emb = nn.Embedding(10, 4)
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch.jit.script is deprecated
    scripted = torch.jit.script(net)
"""


def usage_error(shell, line: str, cell: str | None = None) -> str:
    """The message of the UsageError the magic raises; it must be one line."""
    with pytest.raises(UsageError) as info:
        if cell is None:
            shell.run_line_magic("tensor_inspect", line)
        else:
            shell.run_cell_magic("tensor_inspect", line, cell)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def ns(shell):
    shell.run_cell(DEFINITIONS)
    return shell.user_ns


# (line, words the one-line UsageError must hold)
LINE_USAGE = {
    "undefined_name": ("nothing_here", ["`nothing_here`", "not defined", "run the cell that defines it"]),
    "raising_expression": ("1 / 0", ["ZeroDivisionError", "division by zero"]),
    "exception_without_message": ("(_ for _ in ()).throw(ValueError())", ["raised ValueError"]),
    "multiline_exception_message": ("(_ for _ in ()).throw(ValueError('one\\ntwo'))", ["ValueError: one"]),
    "syntax_error": ("x[", ["`x[`", "not a Python expression"]),
    "string": ("'text'", ["is a str", "not a torch.Tensor or torch.nn.Module"]),
    "dict_of_tensors": ("{'a': x}", ["is a dict of 1 item", "%tensor_inspect ({'a': x})['a']"]),
    "list_of_tensors": ("[x, x]", ["is a list of 2 items", "%tensor_inspect ([x, x])[0]"]),
    "none": ("None", ["`None` is None"]),
    "module_class": ("nn.Linear", ["the class Linear", "create an instance first, e.g. nn.Linear(...)"]),
    "tensor_class": ("torch.Tensor", ["the class Tensor"]),
    "numpy_array": ("np.zeros((2, 3))", ["numpy.ndarray of shape (2, 3)", "torch.as_tensor"]),
    "shape_property_raises": ("Shapeless()", ["Shapeless", "not a torch.Tensor"]),
    "module_without_super_init": ("NoInit()", ["NoInit", "never called super().__init__()"]),
    "no_expression": ("", ["give a tensor or module expression"]),
    "unknown_option": ("x --bogus", ["unrecognized arguments: --bogus"]),
    "input_for_a_tensor": ("x --input x", ["--input is for modules", "`x` is a tensor"]),
    "train_mode_for_a_tensor": ("x --train-mode", ["--train-mode is for modules"]),
    "module_option_without_input": ("net --no-flops", ["need --input"]),
    "input_undefined": ("net --input nope", ["--input `nope`", "not defined"]),
    "input_syntax_error": ("net --input torch.zeros(2,", ["--input", "not a Python expression"]),
    "input_raises": ("net --input torch.zeros(-1)", ["evaluating --input", "RuntimeError"]),
    "input_wrong_arity": ("net --input (x, x)", ["--input does not match", "forward"]),
    "input_on_meta": (
        "net --input torch.zeros(2, 4, device='meta')",
        ["the input is on meta", "parameters are on cpu", "give the input values"],
    ),
    "input_to_script_module": ("scripted --input x", ["ScriptModule", "takes no hooks"]),
}


@pytest.mark.parametrize("case", LINE_USAGE, ids=list(LINE_USAGE))
def test_line_magic_bad_input_is_a_one_line_usage_error(shell, ns, leaves_no_trace, case):
    line, words = LINE_USAGE[case]
    message = usage_error(shell, line)
    for word in words:
        assert word in message, message


CELL_USAGE = {
    "empty_cell": ("", "", ["cell body is empty"]),  # IPython's own check, before the magic runs
    "blank_cell": ("", "  \n\t\n", ["the cell is empty"]),
    "syntax_error_cell": ("", "y = x * 2\nz = (y +\n", ["line 2 of the cell is not valid Python"]),
    "expression_on_cell_line": ("x", "y = x * 2\n", ["takes no expression or options"]),
    "module_option_on_cell": ("--input x", "y = x * 2\n", ["takes no expression or options"]),
    "unknown_cell_option": ("--bogus", "y = x * 2\n", ["unrecognized arguments: --bogus"]),
}


@pytest.mark.parametrize("case", CELL_USAGE, ids=list(CELL_USAGE))
def test_cell_magic_bad_input_is_a_one_line_usage_error(shell, ns, leaves_no_trace, case):
    line, cell, words = CELL_USAGE[case]
    message = usage_error(shell, line, cell)
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------------------------------
# every tensor kind answers: a card, and statistics or one line saying why there are none

NO_STATISTICS = {"bits", "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7", "int1", "int2", "int3"}
NO_STATISTICS |= {"int4", "int5", "int6", "int7"}
DTYPES = sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)


def dtype_sample(dtype: torch.dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ComplexHalf and quantized creation warn of experimental support
        if dtype in (torch.qint8, torch.quint8, torch.qint32, torch.quint4x2, torch.quint2x4):
            return torch.quantize_per_tensor(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0.5, 1, dtype)
        try:
            return torch.tensor([0.0, 1.0, 2.0, 3.0]).to(dtype)
        except (RuntimeError, TypeError, NotImplementedError):
            return torch.zeros(4 * dtype.itemsize, dtype=torch.uint8).view(dtype)


def assert_answers(result, expect_statistics: bool) -> None:
    card = result.card
    assert card.shape is not None and card.dtype and card.device and card.numel >= 0
    assert html(result) and text(result) and result.summary()
    if expect_statistics:
        assert {"min", "max", "mean", "std", "nan", "zeros"} <= set(result.stats), (result.stats, result.note)
    elif result.card.numel == 0:
        assert result.stats["numel"] == 0 and result.stats["min"] is None
    else:
        assert result.stats == {} and result.note and "\n" not in result.note


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def test_every_dtype_gets_a_card_and_statistics_or_a_reason(shell, ns, leaves_no_trace, dtype):
    ns["t"] = dtype_sample(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may warn on the way
        result = shell.run_line_magic("tensor_inspect", "t")
    name = str(dtype).removeprefix("torch.")
    silent = name.startswith("bits") or name in NO_STATISTICS
    assert_answers(result, expect_statistics=not silent)
    assert result.card.nbytes == 4 * dtype.itemsize or dtype in (torch.quint4x2, torch.quint2x4)
    if silent:
        assert "no statistics" in result.note


def _nested(layout: torch.layout) -> torch.Tensor:
    return torch.nested.nested_tensor([torch.ones(2, 3), torch.zeros(4, 3)], layout=layout)


def _fake() -> torch.Tensor:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(2, 5)


LAYOUTS = {
    "strided": (lambda: torch.eye(4), True),
    "sparse_coo": (lambda: torch.eye(4).to_sparse(), True),
    "sparse_csr": (lambda: torch.eye(4).to_sparse_csr(), True),
    "sparse_csc": (lambda: torch.eye(4).to_sparse_csc(), True),
    "sparse_bsr": (lambda: torch.eye(4).to_sparse_bsr((2, 2)), True),
    "sparse_bsc": (lambda: torch.eye(4).to_sparse_bsc((2, 2)), True),
    "mkldnn": (lambda: torch.eye(4).to_mkldnn(), True),
    "nested": (lambda: _nested(torch.strided), True),
    "nested_jagged": (lambda: _nested(torch.jagged), True),
    "meta": (lambda: torch.empty(4, 4, device="meta"), False),
    "fake": (_fake, False),
    "quantized": (lambda: torch.quantize_per_tensor(torch.eye(4), 0.5, 0, torch.quint8), True),
    "quantized_without_quantizer": (lambda: torch.empty(4, dtype=torch.qint8), False),
    "expanded_to_a_trillion": (lambda: torch.ones(1).expand(10**12), True),
    "complex32_image": (lambda: torch.ones(3, 8, 8, dtype=torch.complex64).to(torch.complex32), True),
    "float4_matrix": (lambda: torch.full((4, 4), 0x21, dtype=torch.uint8).view(torch.float4_e2m1fn_x2), True),
    "zero_elements": (lambda: torch.empty(0, 3), False),
    "zero_dimensions": (lambda: torch.tensor(7), True),
    "channels_last": (lambda: torch.rand(2, 3, 4, 4).to(memory_format=torch.channels_last), True),
    "tensor_subclass": (lambda: torch.masked.masked_tensor(torch.ones(3), torch.tensor([True, False, True])), False),
}


@pytest.mark.parametrize("kind", LAYOUTS, ids=list(LAYOUTS))
def test_every_layout_gets_a_card_and_statistics_or_a_reason(shell, ns, leaves_no_trace, kind):
    make, expect_statistics = LAYOUTS[kind]
    with warnings.catch_warnings():
        # beta-state warnings of sparse, nested, ComplexHalf and MaskedTensor, which its every op repeats
        warnings.simplefilter("ignore")
        ns["t"] = make()
        result = shell.run_line_magic("tensor_inspect", "t")
    assert_answers(result, expect_statistics)


def test_the_python_api_refuses_what_is_not_a_tensor_or_module(leaves_no_trace):
    for call, word in ((lambda: inspect_tensor("text"), "torch.Tensor"), (lambda: trace_module(None), "torch.nn.Module")):
        with pytest.raises(TypeError, match=word) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# faults inside the inspected code: the user's own exception, explained where it can be


def test_wrong_input_shape_reraises_with_the_module_named(shell, ns, leaves_no_trace):
    exc = shell.run_cell("%tensor_inspect net --input torch.zeros(2, 5)").error_in_exec
    assert isinstance(exc, RuntimeError) and "`0`" in exc.__notes__[0] and "in_features=4" in exc.__notes__[0]
    assert [r["output"] for r in exc.inspect_result.trace_rows] == ["✗ raised", "✗ raised"]


@pytest.mark.parametrize("how", ["cell", "input"])
def test_embedding_index_out_of_range_names_the_index_and_the_module(shell, ns, leaves_no_trace, how):
    source = "out = emb(torch.tensor([1, 12]))" if how == "cell" else "%tensor_inspect emb --input torch.tensor([1, 12])"
    exc = shell.run_cell(("%%tensor_inspect\n" if how == "cell" else "") + source).error_in_exec
    assert isinstance(exc, IndexError)
    note = exc.__notes__[0]
    assert "`emb`" in note and "Embedding(10, 4)" in note and "index 12 is out of range: num_embeddings is 10" in note
    assert "broadcast" not in note and "Shape error" not in note


def test_a_cell_raising_a_python_error_reraises_it_unexplained(shell, ns, leaves_no_trace):
    exc = shell.run_cell("%%tensor_inspect\ny = x * 2\nraise ValueError('not a shape problem')\n").error_in_exec
    assert isinstance(exc, ValueError) and not getattr(exc, "__notes__", None)
    assert [o.op for o in exc.inspect_result.ops] == ["mul"] and exc.inspect_result.findings == []


def test_a_torch_error_that_is_not_about_shapes_is_not_called_one(shell, ns, leaves_no_trace):
    exc = shell.run_cell(f"%%tensor_inspect\ny = x.to({XSS!r})\n").error_in_exec
    finding = exc.inspect_result.findings[0]
    assert finding.kind == "op_error" and finding.message.startswith("RuntimeError")
    for page in (explanation_html(finding), html(exc.inspect_result)):
        assert ESCAPED in page and XSS not in page


def test_keyboard_interrupt_in_the_cell_leaves_nothing_attached(shell, ns, leaves_no_trace):
    exc = shell.run_cell("%%tensor_inspect\ny = x * 2\nraise KeyboardInterrupt\n").error_in_exec
    assert isinstance(exc, KeyboardInterrupt) and torch._C._len_torch_function_stack() == 0


def test_keyboard_interrupt_in_a_traced_forward_restores_the_model(shell, ns, leaves_no_trace):
    shell.run_cell("m = Interrupting().train()")
    exc = shell.run_cell("%tensor_inspect m --input x").error_in_exec
    assert isinstance(exc, KeyboardInterrupt) and ns["m"].training and not ns["m"]._forward_hooks


def test_keyboard_interrupt_under_the_python_recorder_detaches(leaves_no_trace):
    with pytest.raises(KeyboardInterrupt), OpRecorder("<catalogue>") as recorder:
        torch.ones(2) * 2
        raise KeyboardInterrupt
    assert recorder.ops and torch._C._len_torch_function_stack() == 0


def test_ipython_syntax_in_an_inspected_cell_runs(shell, ns, leaves_no_trace):
    result = shell.run_cell("%%tensor_inspect\ny = x * 2\ninner = %tensor_inspect y\n")
    assert result.error_in_exec is None and ns["inner"].stats["max"] == 22.0


# ---------------------------------------------------------------------------------------------
# every user-controlled string reaches the HTML escaped


def test_module_class_name_is_escaped_in_the_module_view(shell, ns, leaves_no_trace):
    result = shell.run_line_magic("tensor_inspect", "_X(2) --input x")
    page = html(result)
    assert ESCAPED in page and XSS not in page


def test_module_class_name_is_escaped_in_the_explanation(shell, ns, leaves_no_trace):
    exc = shell.run_cell("%%tensor_inspect\nbad = _X(5)\nout = bad(x)\n").error_in_exec
    finding = exc.inspect_result.findings[0]
    assert XSS in finding.message  # the name is kept as it is; only the HTML escapes it
    for page in (explanation_html(finding), html(exc.inspect_result)):
        assert ESCAPED in page and XSS not in page


def test_expression_and_submodule_names_are_escaped(shell, ns, leaves_no_trace):
    shell.run_cell(f"holder = {{{XSS!r}: x}}\nbox = nn.Module()\nbox.add_module({XSS!r}, nn.Linear(2, 2))")
    for line in (f"holder[{XSS!r}]", "box"):
        page = html(shell.run_line_magic("tensor_inspect", line))
        assert ESCAPED in page and XSS not in page, line


def test_cell_source_is_escaped(shell, ns, leaves_no_trace):
    result = shell.run_cell(f"%%tensor_inspect\ny = x * 2  # {XSS}\n").result
    page = html(result)
    assert ESCAPED in page and XSS not in page


def test_a_numpy_scalar_is_told_to_become_a_tensor(shell, ns, leaves_no_trace):
    shell.user_ns["scalar"] = np.float32(1.0)
    message = usage_error(shell, "scalar")
    assert "numpy.float32" in message and "torch.as_tensor" in message


def test_cell_errors_leave_no_recorder_behind_after_many_failures(shell, ns, leaves_no_trace):
    for code in ("torch.ones(3) @ torch.ones(4)", "emb(torch.tensor([99]))", "raise KeyboardInterrupt"):
        shell.run_cell("%%tensor_inspect\n" + textwrap.dedent(code))
    assert torch._C._len_torch_function_stack() == 0
