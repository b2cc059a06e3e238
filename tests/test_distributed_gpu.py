"""``%%train --nproc N`` on the GPU: NCCL, one GPU per rank (N = 2 where there are two GPUs, else 1).

The run happens in a fresh interpreter that hosts a real IPython shell: CUDA initialised in the
test process by other tests would (rightly) refuse the fork. The script prints one JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psutil
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() == 0, reason="needs a CUDA device")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30

_SCRIPT = """
import json, sys
import numpy as np, psutil, torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config
import torchmagic
from torchmagic.display.testing import recording_comms

nproc = int(sys.argv[1])
config = Config()
config.HistoryManager.enabled = False
shell = InteractiveShell.instance(config=config)
shell.run_line_magic("load_ext", "torchmagic")
shell.run_cell('''
import torch, torch.nn.functional as F, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
torch.manual_seed(0); model = torch.nn.Linear(64, 8); before = model.weight.detach().clone()
x, y = torch.randn(64, 64), torch.randn(64, 8)
''')
cell = '''
device = torch.device("cuda", dist.get_rank())
assert next(model.parameters()).device == device and dist.get_backend() == "nccl", dist.get_backend()
ddp = DDP(model, device_ids=[device.index]); opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
r, n = dist.get_rank(), dist.get_world_size()
for _ in range(STEPS):
    opt.zero_grad(); F.mse_loss(ddp(x[r::n].to(device)), y[r::n].to(device)).backward(); opt.step()
'''.replace("STEPS", sys.argv[2])
with recording_comms() as rec, capture_output() as shown:
    out = shell.run_cell(f"%%train --nproc {nproc} --display widgets --refresh 20\\n" + cell)
result = torchmagic.last_run()
history, memory = result.history.reset_index(drop=True), result.memory_history
finite = {}  # curve column -> how many finite points reached the widget
for kind, data, buffers in rec.messages:
    if kind == "comm_msg" and data.get("method") == "custom" and data["content"].get("kind") == "torchmagic.refresh":
        for batch in data["content"]["streams"] + data["content"]["replace"]:
            for name, i in batch["columns"].items():
                finite[name] = finite.get(name, 0) + int(np.isfinite(np.frombuffer(buffers[i], dtype="<f4")).sum())
html = [o.data["text/html"] for o in shown.outputs if "tm-dash" in o.data.get("text/html", "")]
on_cuda = memory[memory["cuda_allocated"].notna()] if "cuda_allocated" in memory else memory.iloc[:0]
print(json.dumps({
    "success": out.success,
    "error": repr(out.error_in_exec),
    "status": result.status,
    "steps": result.steps,
    "ranks": sorted(int(r) for r in set(history["rank"])),
    "cuda_allocated_by_rank": sorted(int(r) for r in set(on_cuda["rank"])),
    "kernel_cuda": torch.cuda.is_initialized(),
    "changed": not torch.equal(shell.user_ns["before"], shell.user_ns["model"].weight),
    "device": str(shell.user_ns["model"].weight.device),
    "children": [p.pid for p in psutil.Process().children(recursive=True)],
    "streamed": finite,
    "frozen": html[-1] if html else "",
}))
"""


def test_train_magic_on_ranks_with_nccl_on_the_gpu():
    nproc = min(2, torch.cuda.device_count())
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(nproc), str(STEPS)],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["success"], report["error"]
    assert (report["status"], report["steps"], report["ranks"]) == ("completed", STEPS, list(range(nproc)))
    assert not report["kernel_cuda"] and report["changed"] and report["device"] == "cpu"  # rank 0's weights, back on the CPU
    assert report["cuda_allocated_by_rank"] == list(range(nproc))  # every rank's CUDA memory is in the history
    assert report["children"] == []  # no rank left behind
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    streamed = report["streamed"]  # finite points per curve
    assert streamed.get("cuda_allocated", 0) > 0  # the run's own memory chart shows CUDA
    if nproc > 1:  # the curves by rank, CUDA memory included
        assert all(streamed.get(f"{k}{i}", 0) > 0 for k in "lmrc" for i in range(nproc)), streamed
        assert "CUDA allocated by rank" in report["frozen"]
    else:
        assert "by rank" not in report["frozen"]
