"""Errors of a distributed run, each saying what happened and what to do."""

from __future__ import annotations

from torchmagic.core.result import RunResult


class DistributedError(RuntimeError):
    """A distributed run could not start (bad ``nproc``, a kernel that cannot fork workers)."""


class CudaInitializedError(DistributedError):
    """The kernel already initialised CUDA, so workers forked from it could not use it."""

    def __init__(self) -> None:
        super().__init__(
            "CUDA is already initialised in this kernel, and processes forked from it cannot use CUDA: "
            "restart the kernel and run the --nproc cell before anything touches CUDA "
            "(.cuda(), .to('cuda'), torch.cuda calls)"
        )


class RankFailed(DistributedError):
    """A rank raised (or died); the others were ended. ``result`` holds what every rank recorded."""

    def __init__(self, rank: int, details: str, result: RunResult) -> None:
        self.rank = rank
        self.details = details
        self.result = result
        super().__init__(
            f"rank {rank} of the distributed run failed; the other ranks were stopped and the notebook's "
            f"models keep their weights from before the run.\n{details.rstrip()}"
        )
