"""Memory readings that never initialise CUDA and never synchronise a device."""

from __future__ import annotations

import os
import sys

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss() -> int:
    """Resident set size of this process, in bytes."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    try:
        import psutil
    except ImportError:
        return 0
    return int(psutil.Process().memory_info().rss)


def cuda_in_use() -> bool:
    """True when this process already initialised CUDA (we never initialise it ourselves)."""
    return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]  # torch leaves it unannotated


def cuda_memory() -> dict[str, int]:
    """Allocated, reserved and peak bytes on the current CUDA device, or {} without CUDA in use."""
    if not cuda_in_use():
        return {}
    return {
        "cuda_allocated": torch.cuda.memory_allocated(),
        "cuda_reserved": torch.cuda.memory_reserved(),
        "cuda_peak": torch.cuda.max_memory_allocated(),
    }


def memory_sample() -> dict[str, int]:
    return {"rss": process_rss(), **cuda_memory()}
