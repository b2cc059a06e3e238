"""A recording comm, so widget traffic can be counted without a browser or a kernel.

``with recording_comms() as rec:`` makes every comm that ipywidgets and jupyter_bokeh open
record its messages (data and binary buffers) instead of sending them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import comm
from comm.base_comm import BaseComm


@dataclass
class Recorder:
    messages: list[tuple[str, dict[str, Any], list[bytes]]] = field(default_factory=list)

    def record(self, kind: str, data: dict[str, Any] | None, buffers: list[Any] | None) -> None:
        self.messages.append((kind, data or {}, [bytes(b) for b in (buffers or [])]))

    @property
    def nbytes(self) -> int:
        import json

        return sum(len(json.dumps(d, default=str)) + sum(len(b) for b in bufs) for _, d, bufs in self.messages)

    def clear(self) -> None:
        self.messages.clear()


class _RecordingComm(BaseComm):
    recorder: Recorder

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any) -> None:
        self.recorder.record(msg_type, data, buffers)


@contextlib.contextmanager
def recording_comms() -> Iterator[Recorder]:
    recorder = Recorder()

    class Bound(_RecordingComm):
        pass

    Bound.recorder = recorder  # before __init__, which already publishes comm_open

    def create(*args: Any, **kwargs: Any) -> BaseComm:
        return Bound(*args, **kwargs)

    original = comm.create_comm
    comm.create_comm = create
    try:
        yield recorder
    finally:
        comm.create_comm = original
