"""The kernel side of the side panel: status messages, subscriptions, the publisher thread.

Most tests drive a real ipykernel through jupyter_client, talking to it over the ``torchmagic``
comm exactly as the lab extension does; the rest use the publisher on its own.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import subprocess
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from torchmagic.display import frontend, kernel_status, protocol

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a real kernel


class KernelDriver:
    """A kernel plus the front end's half of the comm."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
        self.comm_id: str | None = None
        self.comm_closed = False
        self.statuses: list[dict[str, Any]] = []
        self.outputs: list[str] = []
        self.kernel_states: list[tuple[str | None, str]] = []  # IOPub status: (parent msg_id, execution_state)

    def _handle(self, msg: dict[str, Any]) -> None:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "comm_open" and content["target_name"] == protocol.COMM_TARGET:
            self.comm_id = content["comm_id"]
            self.hello = content["data"]
        elif kind == "comm_msg" and content["comm_id"] == self.comm_id:
            if content["data"].get("kind") == protocol.STATUS:
                self.statuses.append(content["data"])
        elif kind == "comm_close" and content["comm_id"] == self.comm_id:
            self.comm_closed = True
        elif kind == "status":
            self.kernel_states.append((msg["parent_header"].get("msg_id"), content["execution_state"]))
        elif kind == "stream":
            self.outputs.append(content["text"])
        elif kind == "error":
            self.outputs.append("\n".join(content["traceback"]))

    def drain(self, seconds: float = 0.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._handle(self.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return

    def drain_until(self, done: Callable[[], bool], timeout: float = 30) -> None:
        """Handles iopub messages until ``done()``, or for ``timeout`` seconds at most."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            try:
                self._handle(self.kc.get_iopub_msg(timeout=0.1))
            except queue.Empty:
                pass

    def execute(self, code: str, timeout: float = 60) -> str:
        """Runs a cell; handles every iopub message until the kernel is idle again."""
        msg_id = self.kc.execute(code)
        self.outputs = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            self._handle(msg)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return "".join(self.outputs)
        raise TimeoutError(f"cell did not finish: {code!r}")

    def send(self, data: Any) -> None:
        assert self.comm_id is not None
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    def close_comm(self) -> None:
        msg = self.kc.session.msg("comm_close", {"comm_id": self.comm_id, "data": {}})
        self.kc.shell_channel.send(msg)

    def threads(self) -> list[str]:
        out = self.execute("import threading; print(sorted(t.name for t in threading.enumerate()))")
        return eval(out.strip().splitlines()[-1])

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelDriver]:
    driver = KernelDriver()
    try:
        driver.execute("%load_ext torchmagic")
        assert driver.comm_id is not None, "the kernel did not open the torchmagic comm"
        yield driver
    finally:
        driver.shutdown()


def test_hello_then_events_after_each_cell(kernel):
    assert kernel.hello == {"kind": protocol.HELLO, "version": kernel.hello["version"]}
    kernel.statuses.clear()
    kernel.execute("x = 1")
    kernel.drain(0.2)
    # Events only until the front end asks for more: one status message after the cell.
    assert len(kernel.statuses) == 1
    status = kernel.statuses[0]
    assert set(status) == set(typing.get_type_hints(protocol.StatusMessage))
    assert status["interval"] is None
    assert status["devices"][0]["id"] == "cpu" and status["devices"][0]["used"] > 10_000_000
    assert status["memory"]["rss_peak"] >= status["memory"]["rss"] > 10_000_000
    assert "torchmagic-status" not in kernel.threads()


def test_train_publishes_its_step_while_the_cell_runs(kernel):
    kernel.execute(
        "import torch, time\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Linear(4, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.01)\n"
        "x, y = torch.randn(32, 4), torch.randn(32, 1)"
    )
    kernel.statuses.clear()
    kernel.kernel_states.clear()
    kernel.execute(
        "%%train --display none\n"
        "for i in range(160):\n"
        "    opt.zero_grad()\n"
        "    loss = torch.nn.functional.mse_loss(model(x), y)\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    time.sleep(0.02)\n"
    )
    runs = [s["run"] for s in kernel.statuses if s["run"] is not None]
    running = [r for r in runs if r["status"] == "running"]
    assert len({r["step"] for r in running}) >= 2, runs  # ~3.5 s of training, one message a second
    assert runs[-1]["status"] == "completed" and runs[-1]["step"] == 160
    assert runs[-1]["loss"] is not None and runs[-1]["loss"] > 0
    assert set(runs[-1]) == set(typing.get_type_hints(protocol.RunStatus))
    # The kernel also says "busy" for the cell while it runs, not only as it starts: a page loaded
    # meanwhile (its kernel_info request waits behind the cell) reads Busy, not Unknown.
    cell = kernel.kernel_states[-1][0]
    states = [state for parent, state in kernel.kernel_states if parent == cell]
    assert states[-1] == "idle" and states.count("busy") >= 2 and set(states) == {"busy", "idle"}, states


def test_subscription_starts_and_stops_the_publisher_thread(kernel):
    kernel.send({"kind": protocol.SUBSCRIBE, "interval": 0.25})
    kernel.execute("pass")
    assert "torchmagic-status" in kernel.threads()
    kernel.statuses.clear()
    # The kernel is idle: only the thread sends now, every 0.25 s, or later on a loaded machine.
    kernel.drain_until(lambda: len(kernel.statuses) >= 3)
    assert len(kernel.statuses) >= 3, len(kernel.statuses)
    assert all(s["interval"] == 0.25 for s in kernel.statuses)
    seqs = [s["seq"] for s in kernel.statuses]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    kernel.send({"kind": protocol.UNSUBSCRIBE})
    kernel.execute("pass")
    assert "torchmagic-status" not in kernel.threads()
    kernel.statuses.clear()
    kernel.execute("y = 2")
    kernel.drain(0.6)
    assert kernel.statuses == []  # unsubscribed: not even the after-cell event


def test_a_page_loaded_during_a_run_finds_the_comm_and_the_run(kernel):
    """What a reloaded page relies on: the comm listed on the control channel while the cell
    runs, and the run reported although no page is subscribed."""
    kernel.send({"kind": protocol.UNSUBSCRIBE})
    kernel.execute("import torch, time\nmodel = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.01)")
    kernel.statuses.clear()
    kernel.kc.execute(
        "%%train --display none\n"
        "x, y = torch.randn(32, 4), torch.randn(32, 1)\n"
        "for i in range(100_000):\n"
        "    opt.zero_grad()\n"
        "    torch.nn.functional.mse_loss(model(x), y).backward()\n"
        "    opt.step()\n"
        "    time.sleep(0.01)\n"
    )

    def run_status() -> str | None:
        runs = [s["run"] for s in kernel.statuses if s["run"] is not None]
        return runs[-1]["status"] if runs else None

    kernel.drain_until(lambda: run_status() == "running")
    assert run_status() == "running"
    request = kernel.kc.session.msg("comm_info_request", {"target_name": protocol.COMM_TARGET})
    kernel.kc.control_channel.send(request)
    reply = kernel.kc.control_channel.get_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert reply["content"]["comms"] == {kernel.comm_id: {"target_name": protocol.COMM_TARGET}}
    # The cell was still running when the kernel answered: only the interrupt ends it.
    kernel.km.interrupt_kernel()
    kernel.drain_until(lambda: run_status() == "interrupted")
    assert run_status() == "interrupted"
    assert kernel.statuses[-1]["version"] == kernel.hello["version"]
    kernel.execute("pass")


def test_invalid_messages_are_ignored_with_a_log_line(kernel):
    kernel.send({"kind": protocol.SUBSCRIBE, "interval": 0.25})
    for bad in (
        {"kind": "torchmagic.bogus"},
        {"kind": protocol.SUBSCRIBE, "interval": "fast"},
        [1, 2],
        {"kind": protocol.SUBSCRIBE, "interval": 0.001},
    ):
        kernel.send(bad)
    out = kernel.execute("print('still alive')")
    assert out.strip().endswith("still alive")  # nothing of the above reached a cell's output
    assert "torchmagic-status" in kernel.threads()  # the valid subscription held
    kernel.send({"kind": protocol.UNSUBSCRIBE})
    kernel.execute("pass")


def test_closing_the_comm_stops_the_thread(kernel):
    kernel.send({"kind": protocol.SUBSCRIBE, "interval": 0.25})
    kernel.execute("pass")
    assert "torchmagic-status" in kernel.threads()
    kernel.close_comm()
    kernel.execute("pass")
    assert "torchmagic-status" not in kernel.threads()
    # Loading again opens a fresh comm; unloading stops its thread and closes it.
    kernel.comm_id = None
    kernel.execute("%reload_ext torchmagic")
    assert kernel.comm_id is not None
    kernel.send({"kind": protocol.SUBSCRIBE, "interval": 0.25})
    kernel.execute("pass")
    assert "torchmagic-status" in kernel.threads()
    kernel.execute("%unload_ext torchmagic")
    kernel.drain(0.2)
    assert kernel.comm_closed
    assert not any(name.startswith("torchmagic") for name in kernel.threads())
    out = kernel.execute("import torch; print(torch.cuda.is_initialized())")
    assert out.strip() == "False"  # nothing above initialised CUDA


# --------------------------------------------------------------------------- without a kernel


def test_front_end_messages_are_validated():
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE, "interval": None}) is None
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE, "interval": 1}) is None
    assert frontend.message_problem({"kind": protocol.UNSUBSCRIBE}) is None
    assert frontend.message_problem({"kind": protocol.HELLO, "version": "0.1.0"}) is None
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE}) is not None
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE, "interval": True}) is not None
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE, "interval": float("nan")}) is not None
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE, "interval": 1000}) is not None
    assert frontend.message_problem({"kind": protocol.SUBSCRIBE, "interval": 10**400}) is not None  # no OverflowError
    assert frontend.message_problem({"kind": protocol.HELLO}) is not None
    assert frontend.message_problem({"kind": "torchmagic.other"}) == "unknown kind"
    assert frontend.message_problem("torchmagic.hello") is not None


def test_unknown_kind_logs_one_line(caplog):
    sent: list[dict[str, Any]] = []
    kernel_status.install(sent.append)
    try:
        with caplog.at_level(logging.WARNING, logger="torchmagic.display.frontend"):
            frontend._on_message({"content": {"data": {"kind": "torchmagic.bogus"}}})
        assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
        assert "torchmagic.bogus" in caplog.records[0].getMessage()
        frontend._on_message({"content": {"data": {"kind": protocol.SUBSCRIBE, "interval": 0.25}}})
        publisher = kernel_status.current()
        assert publisher is not None and publisher.thread is not None and publisher.thread.is_alive()
        thread = publisher.thread
    finally:
        kernel_status.shutdown()
    assert not thread.is_alive()
    assert sent and sent[0]["kind"] == protocol.STATUS


def test_run_hook_reports_steps_and_final_status():
    sent: list[dict[str, Any]] = []
    publisher = kernel_status.install(sent.append)
    try:
        hook = kernel_status.run_hook("net")
        assert hook is not None
        result = SimpleNamespace(
            columns={"loss": [0.9, 0.5], "time": [0.1, 0.2]}, steps=2, status="running", total_steps=10, elapsed=0.0
        )
        hook(SimpleNamespace(result=result, eta=1.5, final=False))
        result.status, result.steps, result.elapsed = "interrupted", 3, 0.3
        hook(SimpleNamespace(result=result, eta=None, final=True))  # final: sent at once
    finally:
        kernel_status.shutdown()
    assert publisher.thread is None
    assert [m["run"]["status"] for m in sent] == ["running", "interrupted"]
    assert sent[0]["run"] == {
        "title": "net",
        "status": "running",
        "step": 2,
        "total": 10,
        "loss": 0.5,
        "eta": 1.5,
        "elapsed": 0.2,
    }
    assert kernel_status.run_hook() is None  # nobody listens: %%train adds nothing


def test_status_message_passes_the_typescript_validator():
    """A real status message from Python through `statusProblem` of the compiled protocol.ts."""
    node = shutil.which("node")
    tsc = REPO / "labextension" / "node_modules" / ".bin" / "tsc"
    if node is None or not tsc.exists():
        pytest.skip("node or the extension's node_modules are missing")
    from torchmagic.core import memtrack

    publisher = kernel_status.StatusPublisher(lambda m: None)
    memtrack.record(memtrack.CellMemory(cell=3, code="x = 1", duration=0.5, rss_delta=4096, rss_peak=1 << 30))
    try:
        publisher.on_run_refresh(
            SimpleNamespace(
                result=SimpleNamespace(columns={"loss": [0.25]}, steps=7, status="running", total_steps=None, elapsed=1.0),
                eta=None,
                final=False,
            ),
            "m",
        )
        message = publisher.build()
    finally:
        memtrack.clear_history()
        publisher.close()
    bad = json.loads(json.dumps(message))
    bad["devices"][0]["used"] = "lots"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                str(tsc),
                "--outDir",
                tmp,
                "--module",
                "commonjs",
                "--target",
                "ES2018",
                "--skipLibCheck",
                str(REPO / "labextension" / "src" / "protocol.ts"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        script = (
            f"const p = require({json.dumps(str(Path(tmp) / 'protocol.js'))});"
            "const [good, bad] = JSON.parse(process.argv[1]);"
            "console.log(JSON.stringify([p.statusProblem(good), p.statusProblem(bad)]));"
        )
        out = subprocess.run(
            [node, "-e", script, json.dumps([message, bad])], check=True, capture_output=True, text=True, timeout=60
        )
    assert json.loads(out.stdout) == [None, "device.used is malformed"]


def test_thread_is_joined_on_close():
    publisher = kernel_status.StatusPublisher(lambda m: None)
    publisher.subscribe(0.25)
    thread = publisher.thread
    assert thread is not None and thread.is_alive()
    publisher.close()
    assert not thread.is_alive() and publisher.thread is None
    assert not any(t.name == "torchmagic-status" for t in threading.enumerate())


GPU_PROBE = """
import json, torch
from torchmagic.display.kernel_status import StatusPublisher
publisher = StatusPublisher(lambda m: None)
before = publisher.build()["devices"]
initialised_by_us = torch.cuda.is_initialized()
kept = torch.zeros(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
after = publisher.build()["devices"]
publisher.close()
print(json.dumps([before, initialised_by_us, after]))
print(json.dumps(before), file=__import__("sys").stderr)
"""


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_devices_without_initialising_cuda():
    import sys

    out = subprocess.run([sys.executable, "-c", GPU_PROBE], check=True, capture_output=True, text=True, timeout=120, cwd=REPO)
    before, initialised_by_us, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert initialised_by_us is False  # reading devices never initialised CUDA
    assert before[0]["id"] == "cpu"
    for device in before[1:]:  # NVML, where pynvml is importable
        assert device["source"] == "nvml" and device["total"] > 0 and device["allocated"] is None
    cuda = [d for d in after if d["id"] == "cuda:0"]
    assert cuda and cuda[0]["source"] == "torch"
    assert cuda[0]["allocated"] >= 256 * 1024 * 1024 and cuda[0]["reserved"] >= cuda[0]["allocated"]
    assert cuda[0]["total"] > cuda[0]["reserved"]
