"""Messages between the kernel and the torchmagic front end (the lab extension).

This module is the single definition of their shapes. The TypeScript side mirrors them in
``labextension/src/protocol.ts``; ``tests/test_protocol.py`` fails when the two drift.

Two channels carry them:

* the dashboard widget (``DashboardModel`` in module ``torchmagic-lab``) receives one custom
  widget message per refresh, :data:`REFRESH`, with float32 columns as binary buffers;
* the comm target :data:`COMM_TARGET` opened by the kernel at ``%load_ext`` time carries
  :data:`HELLO` both ways, so the kernel learns whether the front end has the extension.
"""

from __future__ import annotations

from typing import Literal, TypedDict

MODULE_NAME = "torchmagic-lab"
MODULE_VERSION = "^0.1.0"
COMM_TARGET = "torchmagic"

REFRESH = "torchmagic.refresh"
HELLO = "torchmagic.hello"


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


# Section names the dashboard view lays out, in order.
SECTIONS = ("header", "alerts", "layers", "footer")

MESSAGE_KINDS = (REFRESH, HELLO)
