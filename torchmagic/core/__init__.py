"""The engine: torch (and the standard library) only. Usable from any script."""

from torchmagic.core.alerts import Alert
from torchmagic.core.interrupt import TrainingStopped
from torchmagic.core.monitor import Snapshot, TrainingMonitor, active_monitor
from torchmagic.core.result import LayerInfo, RunResult
from torchmagic.core.runs import last_run, set_last_run
from torchmagic.core.schedule import StepSchedule

__all__ = [
    "Alert",
    "LayerInfo",
    "RunResult",
    "Snapshot",
    "StepSchedule",
    "TrainingMonitor",
    "TrainingStopped",
    "active_monitor",
    "last_run",
    "set_last_run",
]
