"""The catalogue for ``%%train``, ``torchmagic.train()`` and ``torchmagic.log()``, each case under ``leaves_no_trace``:
one-line errors naming the argument (one check for magic and API), odd cells, faults at every stage of a step,
Ctrl-C, user strings escaped in the dashboard, malformed front-end messages ignored with a log line."""

from __future__ import annotations

import logging
import math
import textwrap
from typing import Any

import psutil
import pytest
from IPython.core.error import UsageError

import torchmagic
import torchmagic.display.dashboard  # noqa: F401 - bokeh adds warnings filters when first imported
from tests.catalogue.conftest import LOOP
from torchmagic.core import TrainingStopped
from torchmagic.display import frontend, kernel_status, protocol
from torchmagic.display.testing import recording_comms

pytestmark = pytest.mark.usefixtures("leaves_no_trace")

RANGE = "must be between 0.01 and 30 (refreshes per second), got"
XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def one_line(kind: type[BaseException], call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def usage_error(shell, line: str, cell: str = LOOP) -> str:
    return one_line(UsageError, shell.run_cell_magic, "train", line, cell)


def api_error(kind: type[Exception], *args: Any, **kwargs: Any) -> str:
    return one_line(kind, torchmagic.train, *args, **kwargs)  # raised before anything is attached


def train_cell(shell, cell: str, line: str = "--display none"):
    return shell.run_cell(f"%%train {line}\n" + textwrap.dedent(cell))


def every_step(code: str) -> str:  # LOOP, running code after each optimizer step
    return LOOP.replace("optimizer.step()", f"optimizer.step()\n    {code}")


def after_step_2(code: str) -> str:  # LOOP, running code right after the second optimizer step
    indented = textwrap.indent(textwrap.dedent(code), "        ")
    return LOOP.replace("optimizer.step()", f"optimizer.step()\n    if i == 16:\n{indented}")


MAGIC_OPTIONS = {
    "every_not_a_number": ("--every abc", "argument --every: invalid int value: 'abc'"),
    "every_a_float": ("--every 1.5", "invalid int value: '1.5'"),
    "every_negative": ("--every -1", "%%train: --every must be 0 or more, got -1"),
    "every_abbreviated": ("--ev -3", "%%train: --ev must be 0 or more, got -3"),
    "every_with_equals": ("--every=-4", "%%train: --every must be 0 or more, got -4"),
    "total_negative": ("--total -5", "%%train: --total must be positive, got -5"),
    "total_zero": ("--total 0", "%%train: --total must be positive, got 0"),
    "total_not_a_number": ("--total ten", "argument --total: invalid int value: 'ten'"),
    "refresh_nan": ("--refresh nan", f"%%train: --refresh {RANGE} nan"),
    "refresh_inf": ("--refresh inf", f"%%train: --refresh {RANGE} inf"),
    "refresh_zero": ("--refresh 0", f"%%train: --refresh {RANGE} 0"),
    "refresh_negative": ("--refresh -4", f"%%train: --refresh {RANGE} -4"),
    "refresh_too_high": ("--refresh 1000", f"%%train: --refresh {RANGE} 1000"),
    "refresh_not_a_number": ("--refresh fast", "argument --refresh: invalid float value: 'fast'"),
    "display_unknown": ("--display fancy", "argument --display: invalid choice: 'fancy'"),
    "display_without_value": ("--display", "argument --display: expected one argument"),
    "histograms_empty_patterns": ("--histograms ' , '", "%%train: --histograms must name at least one parameter pattern"),
    "histograms_abbreviated": ("--hist ''", "%%train: --hist must name at least one parameter pattern, got ''"),
    "model_a_tensor": ("-m X", "%%train: -m 'X' is a Tensor, not a torch.nn.Module"),
    "model_long_option": ("--model X", "%%train: --model 'X' is a Tensor, not a torch.nn.Module"),
    "model_second_of_list": ("-m model,X", "%%train: -m 'X' is a Tensor, not a torch.nn.Module"),
    "model_an_optimizer": ("-m model -m optimizer", "%%train: -m 'optimizer' is a SGD, not a torch.nn.Module"),
    "optimizer_a_model": ("-o model", "%%train: -o 'model' is a Sequential, not a torch.optim.Optimizer"),
    "optimizer_a_loss": ("-o criterion", "%%train: -o 'criterion' is a CrossEntropyLoss, not a torch.optim.Optimizer"),
    "model_undefined": ("-m nothere", "%%train: name 'nothere' is not defined in the notebook (-m nothere)"),
    "optimizer_an_attribute": ("-o optimizer.param_groups", "%%train: -o 'optimizer.param_groups' is not a variable name"),
    "model_name_with_html": (f"-m {XSS}", f"%%train: -m '{XSS}' is not a variable name"),
}


@pytest.mark.parametrize("line, expected", MAGIC_OPTIONS.values(), ids=MAGIC_OPTIONS)
def test_bad_magic_options_are_one_line_usage_errors(shell, line, expected):
    assert expected in usage_error(shell, line)
    assert torchmagic.last_run() is None or torchmagic.last_run().status != "running"


MUST = "must be a torch.nn.Module or a list of them"
API_ARGUMENTS = {  # the arguments of torchmagic.train(...), in the notebook's namespace
    "model_a_string": ("'model'", TypeError, f"model {MUST}, got 'model' (str)"),
    "optimizer_a_string": ("model, 'opt'", TypeError, "optimizer must be a torch.optim.Optimizer or a list of them, got 'opt'"),
    "swapped": ("optimizer, model", TypeError, f"model {MUST}, got a SGD"),
    "model_a_tensor": ("X", TypeError, f"model {MUST}, got a Tensor"),
    "model_list_bad_item": ("[model, 'x']", TypeError, "model[1] is a str, not a torch.nn.Module"),
    "optimizer_list_bad_item": ("model, (optimizer, model)", TypeError, "optimizer[1] is a Sequential, not a torch.optim"),
    "parameters_for_optimizer": ("model, model.parameters()", TypeError, "optimizer must be a torch.optim.Optimizer or a list"),
    "every_a_string": ("every='abc'", TypeError, "every must be an integer, got 'abc' (str)"),
    "every_a_bool": ("every=True", TypeError, "every must be an integer, got True (bool)"),
    "every_a_float": ("every=2.5", TypeError, "every must be an integer, got 2.5 (float)"),
    "every_negative": ("every=-1", ValueError, "every must be 0 or more, got -1"),
    "total_negative": ("total=-5", ValueError, "total must be positive, got -5"),
    "total_zero": ("total=0", ValueError, "total must be positive, got 0"),
    "total_a_bool": ("total=True", TypeError, "total must be an integer, got True (bool)"),
    "total_a_float": ("total=10.0", TypeError, "total must be an integer, got 10.0 (float)"),
    "refresh_nan": ("refresh=float('nan')", ValueError, f"refresh {RANGE} nan"),
    "refresh_inf": ("refresh=float('inf')", ValueError, f"refresh {RANGE} inf"),
    "refresh_zero": ("refresh=0", ValueError, f"refresh {RANGE} 0"),
    "refresh_negative": ("refresh=-2.0", ValueError, f"refresh {RANGE} -2"),
    "refresh_beyond_float": ("refresh=10**400", ValueError, f"refresh {RANGE} inf"),
    "refresh_a_string": ("refresh='4'", TypeError, "refresh must be a number (refreshes per second), got '4' (str)"),
    "refresh_a_bool": ("refresh=True", TypeError, "refresh must be a number (refreshes per second), got True (bool)"),
    "display_unknown": ("display='fancy'", ValueError, "display must be one of auto, widgets, stock, text, none; got 'fancy'"),
    "display_none": ("display=None", TypeError, "display must be one of auto, widgets, stock, text, none; got None"),
    "histograms_an_int": ("histograms=1", TypeError, "histograms must be True, False or parameter name patterns"),
    "histograms_none": ("histograms=None", TypeError, "histograms must be True, False or parameter name patterns"),
    "histograms_empty_list": ("histograms=[]", ValueError, "histograms must name at least one parameter pattern, got []"),
    "histograms_empty_string": ("histograms=','", ValueError, "histograms must name at least one parameter pattern, got ','"),
    "histograms_bad_item": ("histograms=['fc', 3]", TypeError, "histograms[1] must be a string (a parameter name pattern)"),
}


@pytest.mark.parametrize("arguments, kind, expected", API_ARGUMENTS.values(), ids=API_ARGUMENTS)
def test_bad_api_arguments_raise_naming_the_argument(shell, arguments, kind, expected):
    args, kwargs = eval(f"(lambda *a, **k: (a, k))({arguments})", shell.user_ns)
    assert expected in api_error(kind, *args, **kwargs)


SHARED = {
    "--every -2": {"every": -2},
    "--total -5": {"total": -5},
    "--refresh nan": {"refresh": math.nan},
    "--refresh 0": {"refresh": 0},
}


@pytest.mark.parametrize("line, kwargs", SHARED.items())
def test_the_magic_and_the_api_share_one_check(shell, line, kwargs):
    (argument,) = kwargs
    api = api_error(ValueError, shell.user_ns["model"], **kwargs)
    assert usage_error(shell, line) == f"%%train: --{argument}{api.removeprefix(argument)}"


def test_numpy_numbers_and_tuples_are_accepted(shell):
    shell.run_cell("import numpy as np, torchmagic")
    shell.run_cell("run = torchmagic.train((model,), (optimizer,), every=np.int64(2), refresh=np.float32(2), display='none')")
    with shell.user_ns["run"] as run:
        shell.run_cell(LOOP)
    assert run.result.status == "completed" and run.result.steps == 4


NO_LOOP = {
    "empty": ("  \n\t\n", "the cell is empty"),
    "comments": ("# a loop\n  # later\n", "holds only comments"),
}


@pytest.mark.parametrize("cell, expected", NO_LOOP.values(), ids=NO_LOOP)
def test_a_cell_without_a_loop_is_a_usage_error(shell, cell, expected):
    assert expected in usage_error(shell, "", cell)


def test_a_cell_without_a_model_runs_and_says_it_trained_nothing(shell, capsys):
    assert train_cell(shell, "x = 1").error_in_exec is None  # a framework call would train what it finds at run time
    assert shell.user_ns["x"] == 1 and torchmagic.last_run().steps == 0
    assert "%%train: the cell trained nothing" in capsys.readouterr().out


def test_a_syntax_error_is_reported_as_itself(shell):
    with pytest.raises(SyntaxError) as info:
        shell.run_cell_magic("train", "", "for i in range(3)\n    model(X)\n")
    assert "\n" not in str(info.value) and info.value.lineno == 1
    assert isinstance(train_cell(shell, "for i in range(3)\n    model(X)\n").error_in_exec, SyntaxError)


IPYTHON_SYNTAX = {"system": "!echo hi", "line_magic": "%time 1 + 1", "capture": "x = !echo hi", "cell_magic": "%%time"}


@pytest.mark.parametrize("first_line", IPYTHON_SYNTAX.values(), ids=IPYTHON_SYNTAX)
def test_ipython_syntax_in_the_cell_runs(shell, first_line, capfd):
    result = train_cell(shell, first_line + "\n" + textwrap.dedent(LOOP))  # under %%time: the model found in its body
    assert result.error_in_exec is None, result.error_in_exec
    assert torchmagic.last_run().status == "completed" and torchmagic.last_run().steps == 4


NESTED = {
    "train_in_train": ("%%train --display none\n" + textwrap.dedent(LOOP), UsageError, "%%train: a run is already in progress"),
    "api_in_train": (
        "import torchmagic\nwith torchmagic.train(model, display='none'):\n    pass",
        RuntimeError,
        "runs cannot be nested",
    ),
}


@pytest.mark.parametrize("inner, kind, expected", NESTED.values(), ids=NESTED)
def test_a_run_inside_a_run_is_refused(shell, inner, kind, expected):
    error = train_cell(shell, inner).error_in_exec
    assert type(error) is kind and expected in str(error) and "\n" not in str(error)
    assert torchmagic.last_run().status == "failed" and torchmagic.last_run().steps == 0


FAULTS = """
def third(stage):
    if steps[0] == 2 and stage == fault:
        raise RuntimeError(f"boom in {stage}")
class Net(nn.Module):
    def __init__(self, body):
        super().__init__(); self.body = body
    def forward(self, x):
        third("forward"); return self.body(x)
class Twice(torch.autograd.Function):
    forward = staticmethod(lambda ctx, x: x * 2)
    backward = staticmethod(lambda ctx, grad: third("backward") or grad * 2)
class Stepper(torch.optim.SGD):
    def step(self, closure=None):
        third("optimizer.step"); super().step(closure); steps[0] += 1
steps, loss_of, model = [0], criterion, Net(model)
criterion = lambda out, y: third("loss") or loss_of(Twice.apply(out), y)
optimizer = Stepper(model.parameters(), lr=0.05)
hook = model.body[0].register_forward_hook(lambda module, args, output: third("forward hook"))
"""


@pytest.mark.parametrize("stage", ["forward", "loss", "backward", "optimizer.step", "forward hook"])
def test_a_fault_in_a_step_is_the_users_exception(shell, stage):
    shell.user_ns["fault"] = stage
    shell.run_cell(FAULTS)
    try:
        error = train_cell(shell, LOOP).error_in_exec
    finally:
        shell.user_ns["hook"].remove()
    assert type(error) is RuntimeError and str(error) == f"boom in {stage}"
    r = torchmagic.last_run()
    assert r.status == "failed" and r.steps == 2 and r.error == f"RuntimeError: boom in {stage}"


def test_a_fault_in_a_dataloader_worker(shell):
    workers_before = {p.pid for p in psutil.Process().children(recursive=True)}
    cell = """
    class Faulty(torch.utils.data.Dataset):
        __len__ = lambda self: 8
        def __getitem__(self, i):
            if i >= 4:
                raise ValueError("boom in a worker")
            return X[i], Y[i]
    for x, y in torch.utils.data.DataLoader(Faulty(), batch_size=2, num_workers=1):
        optimizer.zero_grad(); criterion(model(x), y).backward(); optimizer.step()
    """
    error = train_cell(shell, cell).error_in_exec
    assert type(error) is ValueError and "boom in a worker" in str(error)
    assert torchmagic.last_run().status == "failed" and torchmagic.last_run().steps == 2
    # The worker belongs to the user's DataLoader, whose iterator the traceback IPython keeps for
    # %debug holds alive (as without torchmagic); end it so later tests start without children.
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in workers_before]
    assert all(p.name() == "pt_data_worker" for p in new), new
    for p in new:
        p.terminate()
    psutil.wait_procs(new, timeout=20)


KILL = "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n"


CTRL_C = {"once": (KILL, TrainingStopped), "twice": (KILL * 2 + "raise AssertionError('ran on')", KeyboardInterrupt)}
CTRL_C["raised_by_the_loop"] = ("raise KeyboardInterrupt", KeyboardInterrupt)


@pytest.mark.parametrize("code, kind", CTRL_C.values(), ids=CTRL_C)
def test_ctrl_c_after_step_2(shell, code, kind):
    error = train_cell(shell, after_step_2(code)).error_in_exec
    assert type(error) is kind and isinstance(error, KeyboardInterrupt)  # a KeyboardInterrupt: the kernel drops queued cells
    assert "\n" not in str(error) and torchmagic.last_run().status == "interrupted" and torchmagic.last_run().steps == 2


@pytest.fixture
def reloaded(shell):
    """``%reload_ext`` before ``leaves_no_trace`` looks: it replaces the event callbacks by new ones, compared here by name."""

    def callbacks() -> dict[str, list[str]]:
        return {event: [cb.__qualname__ for cb in cbs] for event, cbs in shell.events.callbacks.items()}

    before = callbacks()
    shell.run_line_magic("reload_ext", "torchmagic")
    assert callbacks() == before


@pytest.mark.usefixtures("reloaded")  # the closer mark: set up before the module's leaves_no_trace
def test_reloading_the_extension_then_training(shell):
    assert train_cell(shell, LOOP).error_in_exec is None and torchmagic.last_run().steps == 4


def test_a_background_thread_survives_a_stop_request(shell):
    cell = """
    import threading
    thread_errors, go = [], threading.Event()
    def worker():
        try:
            go.wait(); model(X[:2])
        except BaseException as error:
            thread_errors.append(repr(error))
    thread = threading.Thread(target=worker); thread.start()
    """
    train_cell(shell, textwrap.dedent(cell) + after_step_2(KILL + "go.set(); thread.join()"))
    assert torchmagic.last_run().status == "interrupted" and torchmagic.last_run().steps == 2
    assert shell.user_ns["thread_errors"] == []  # its forward ran, not stopped


USER_STRINGS = {  # each reaches a different part: the layer table, a chart's title, the alerts, the error line
    "module_class_name": f"model[1].__class__ = type({XSS!r}, (nn.ReLU,), {{}})\n" + LOOP,
    "logged_metric_name": "import torchmagic\n" + every_step(f"torchmagic.log(**{{{XSS!r}: 1.0}})"),
    "warning_message": "import warnings\n" + every_step(f"warnings.warn({XSS!r})"),
    "exception_message": after_step_2(f"raise ValueError({XSS!r})"),
}


@pytest.mark.parametrize("cell", USER_STRINGS.values(), ids=USER_STRINGS)
def test_user_strings_reach_the_dashboard_escaped(shell, monkeypatch, cell):
    published: list[str] = []  # the frozen snapshot; the live sections go through the widget's comm
    monkeypatch.setattr(shell.display_pub, "publish", lambda data, *a, **k: published.append(data.get("text/html", "")))
    with recording_comms() as rec:
        shell.run_cell("%%train --display widgets --every 1\n" + textwrap.dedent(cell))
    sections = [
        html
        for kind, data, _ in rec.messages
        if kind == "comm_msg" and data.get("method") == "custom" and data["content"].get("kind") == protocol.REFRESH
        for html in data["content"]["sections"].values()
    ]
    assert sections and any(published), "the dashboard sent nothing"
    html = "".join(sections + published)
    assert XSS not in html and "<script" not in html and ESCAPED in html


S = protocol.SUBSCRIBE
MALFORMED = {  # the data of a comm message, or (the envelope cases) the whole message
    "message_not_a_dict": ("torchmagic.subscribe", False),
    "content_missing": ({}, False),
    "data_a_list": ([1, 2], True),
    "data_none": (None, True),
    "unknown_kind": ({"kind": "torchmagic.bogus"}, True),
    "kind_not_a_string": ({"kind": [S]}, True),
    "kind_huge": ({"kind": "x" * 100_000}, True),
    "hello_without_version": ({"kind": protocol.HELLO}, True),
    "subscribe_without_interval": ({"kind": S}, True),
    "interval_a_string": ({"kind": S, "interval": "fast"}, True),
    "interval_a_bool": ({"kind": S, "interval": True}, True),
    "interval_negative": ({"kind": S, "interval": -1}, True),
    "interval_too_small": ({"kind": S, "interval": 0.001}, True),
    "interval_nan": ({"kind": S, "interval": math.nan}, True),
    "interval_inf": ({"kind": S, "interval": math.inf}, True),
    "interval_huge_float": ({"kind": S, "interval": 1e300}, True),
    "interval_huge_int": ({"kind": S, "interval": 10**400}, True),  # JSON allows it
}


@pytest.mark.parametrize("data, wrapped", MALFORMED.values(), ids=MALFORMED)
def test_malformed_front_end_messages_are_ignored_with_one_log_line(shell, data, wrapped, caplog):
    message = {"content": {"data": data}} if wrapped else data
    sent: list[dict[str, Any]] = []
    publisher = kernel_status.install(sent.append)
    try:
        with caplog.at_level(logging.WARNING, logger="torchmagic.display.frontend"):
            frontend._on_message(message)  # type: ignore[arg-type]  # what arrives is not what it should be
        assert publisher.thread is None and publisher.interval is None and sent == []
    finally:
        kernel_status.shutdown()
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and len(record.getMessage()) < 300


LOG = "import torchmagic, numpy as np\n"
NOT_SCALARS = {
    "a_string": ("note='text'", TypeError, "'note' is a str"),
    "three_values": ("v=torch.ones(3)", ValueError, "'v' has 3 elements"),
}


@pytest.mark.parametrize("call, kind, expected", NOT_SCALARS.values(), ids=NOT_SCALARS)
def test_logging_what_is_not_a_scalar_is_a_one_line_error(shell, call, kind, expected):
    error = train_cell(shell, LOG + every_step(f"torchmagic.log({call})")).error_in_exec
    assert type(error) is kind and expected in str(error) and "\n" not in str(error)


def test_logging_outside_a_run_does_nothing(shell):
    assert torchmagic.log(accuracy=0.5) is None


def test_logging_numpy_scalars(shell):
    assert train_cell(shell, LOG + every_step("torchmagic.log(acc=np.float32(0.5), count=np.int64(3))")).error_in_exec is None
    history = torchmagic.last_run().history
    assert history["acc"].tolist() == [0.5] * 4 and history["count"].tolist() == [3] * 4


@pytest.mark.parametrize("name", ["loss", "lr", "step"])
def test_logging_a_builtin_column_name_is_refused(shell, name):
    error = train_cell(shell, LOG + every_step(f"torchmagic.log({name}=123.0)")).error_in_exec
    assert type(error) is ValueError and f"{name!r} is a column the monitor records" in str(error) and "\n" not in str(error)
    assert 123.0 not in torchmagic.last_run().history[name].tolist()  # nothing overwritten
