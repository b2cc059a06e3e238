"""Keep Kineto's own notes (``STAGE:… Completed Stage: Warm Up``, ``USDT:… profiler_start``) out of the output.

Kineto writes them from C++ straight to file descriptor 2 each time the profiler starts, warms up or
stops, and no environment variable turns them off; a Jupyter kernel forwards that descriptor into
the cell's output. Around those calls only, descriptor 2 goes to a temporary file; afterwards every
line that is not one of those notes is written back, so nothing else printed meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

KINETO_NOTE = re.compile(rb"^(STAGE|USDT):\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ [\w./-]+:\d+\] ")


def without_kineto_notes(data: bytes) -> bytes:
    return b"".join(line for line in data.splitlines(keepends=True) if not KINETO_NOTE.match(line))


@contextlib.contextmanager
def kineto_notes_dropped() -> Iterator[None]:
    """Run the block with Kineto's notes on descriptor 2 dropped and anything else written there kept."""
    try:
        sys.stderr.flush()  # what Python buffered goes out before the swap, in order
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon, a closed stderr): nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = without_kineto_notes(held.read())
            if kept:
                os.write(2, kept)
