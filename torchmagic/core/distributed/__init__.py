"""Distributed training from the notebook: ranks forked from the kernel, one result for all.

:func:`run_distributed` is the engine behind ``%%train --nproc N`` and ``torchmagic.train(...,
nproc=N)``; :mod:`~torchmagic.core.distributed.torchrun` is its counterpart for scripts launched
by ``torchrun``. Everything between processes goes through ``torch.distributed`` (its process
groups and its ``TCPStore``).
"""

from torchmagic.core.distributed.errors import CudaInitializedError, DistributedError, RankFailed
from torchmagic.core.distributed.launch import run_distributed
from torchmagic.core.distributed.merge import DistributedSnapshot, RankView

__all__ = ["CudaInitializedError", "DistributedError", "DistributedSnapshot", "RankFailed", "RankView", "run_distributed"]
