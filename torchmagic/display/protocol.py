"""Messages between the kernel and the torchmagic front end (the lab extension).

This module is the single definition of their shapes. The TypeScript side is generated from it:
``labextension/scripts/generate_protocol.py`` writes ``labextension/src/protocol.generated.ts``
(the constants, an interface per TypedDict, and the field checks that validate what arrives from
a kernel); the hand-written ``labextension/src/protocol.ts`` builds its validators on those.
After changing anything here, run that script; ``tests/test_protocol.py`` fails while the
generated file is stale. The script reads the class docstrings and the ``#`` comments on fields
and above constants as the doc comments of the TypeScript side, so keep them there.

Two channels carry them:

* the dashboard widget (``DashboardModel`` in module ``torchmagic-lab``) receives one custom
  widget message per refresh, :data:`REFRESH`, with float32 columns as binary buffers;
* the comm target :data:`COMM_TARGET` opened by the kernel at ``%load_ext`` time carries
  :data:`HELLO` both ways, so the kernel learns whether the front end has the extension.
  On the same comm the front end sends :data:`SUBSCRIBE` / :data:`UNSUBSCRIBE` (what the side
  panel and the status bar want to see) and the kernel answers with :data:`STATUS` messages:
  devices, memory, the active ``%%train`` run and the ``%memory`` history.

The kernel handles front-end messages only between cells, so everything the front end must see
while a cell runs is pushed by the kernel: from the ``%%train`` refresh callback, or from a
publisher thread that exists only while a subscription asks for a period.

A page loaded later (a reload during a run) finds the comm with a ``comm_info_request`` for
:data:`COMM_TARGET` on the control channel, which the kernel answers even while a cell runs, and
takes the comm over; its first :data:`STATUS` message tells it the kernel's version.
"""

from __future__ import annotations

from typing import Literal, TypedDict

MODULE_NAME = "torchmagic-lab"
MODULE_VERSION = "^0.1.0"
COMM_TARGET = "torchmagic"

REFRESH = "torchmagic.refresh"
HELLO = "torchmagic.hello"
SUBSCRIBE = "torchmagic.subscribe"
UNSUBSCRIBE = "torchmagic.unsubscribe"
STATUS = "torchmagic.status"

# Publishing periods a subscription may ask for, in seconds.
MIN_INTERVAL = 0.25
MAX_INTERVAL = 60.0
# At most this many rows of the %memory history travel in one status message (the newest).
HISTORY_ROWS = 20


class ColumnBatch(TypedDict):
    """Columns of one bokeh ColumnDataSource; each value is an index into the message buffers.

    Every buffer holds little-endian float32 values, all columns of one batch the same length.
    """

    source: str  # the bokeh model id of the ColumnDataSource
    columns: dict[str, int]
    rollover: int | None  # only for streams: keep at most this many rows


class Progress(TypedDict):
    fraction: float | None  # 0..1, or None when the loop's length is unknown
    label: str


class RefreshMessage(TypedDict):
    kind: Literal["torchmagic.refresh"]
    sections: dict[str, str]  # section name -> escaped HTML; only the sections that changed
    progress: Progress | None  # None: unchanged since the last message
    streams: list[ColumnBatch]  # appended to the source (ColumnDataSource.stream)
    replace: list[ColumnBatch]  # replace the source's data whole (after history compaction)


class HelloMessage(TypedDict):
    kind: Literal["torchmagic.hello"]
    version: str


class SubscribeMessage(TypedDict):
    """Front end -> kernel: send status messages.

    ``interval`` in seconds (MIN_INTERVAL..MAX_INTERVAL) starts a publisher thread with that
    period; ``None`` asks only for events: after each cell, and about once a second while a
    ``%%train`` run goes. A kernel starts in the events-only state when it says hello.
    """

    kind: Literal["torchmagic.subscribe"]
    interval: float | None


class UnsubscribeMessage(TypedDict):
    """Front end -> kernel: send no status messages (the publisher thread stops)."""

    kind: Literal["torchmagic.unsubscribe"]


class DeviceStatus(TypedDict):
    id: str  # "cpu", "cuda:0", ...
    name: str
    source: str  # "host" (/proc), "torch" (CUDA already initialised) or "nvml"
    allocated: int | None  # bytes held by tensors (torch's caching allocator)
    reserved: int | None  # bytes the caching allocator holds from the driver
    peak: int | None  # peak allocated bytes since the last reset
    used: int | None  # bytes in use on the device (host: this process's RSS; nvml: this process)
    total: int | None  # the device's memory


class ProcessMemory(TypedDict):
    rss: int  # resident set size now, bytes
    rss_peak: int  # highest resident set size of the process, bytes


class RunStatus(TypedDict):
    title: str
    status: str  # "running", "completed", "interrupted" or "failed"
    step: int
    total: int | None  # expected steps, when known
    loss: float | None  # the latest loss
    eta: float | None  # seconds
    elapsed: float  # seconds


class MemoryRow(TypedDict):
    """One recorded cell of the ``%memory`` history (sizes in bytes)."""

    cell: int | None  # execution count
    code: str  # the cell's first line
    duration: float  # seconds
    rss_delta: int
    rss_peak: int
    cuda_delta: int | None
    cuda_peak: int | None
    top_module: str | None  # with --by-module: the module whose forward held the most


class StatusMessage(TypedDict):
    kind: Literal["torchmagic.status"]
    version: str  # torchmagic in the kernel (a page loaded later learns it here, not from a hello)
    seq: int  # increases by one with every status message of this kernel
    pid: int
    interval: float | None  # the subscription in force (see SubscribeMessage)
    devices: list[DeviceStatus]
    memory: ProcessMemory
    run: RunStatus | None  # the active or last %%train run of this session
    recording: bool  # %memory on
    history: list[MemoryRow]  # the newest HISTORY_ROWS rows
    history_total: int  # rows recorded in all


# Section names the dashboard view lays out, in order.
SECTIONS = ("header", "alerts", "layers", "footer")

MESSAGE_KINDS = (REFRESH, HELLO, SUBSCRIBE, UNSUBSCRIBE, STATUS)
