"""When to take the costly statistics: a pure function of the step number."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepSchedule:
    """Sample on step 1 and then every ``every`` steps (``every=0`` never samples).

    Like ``torch.profiler.schedule`` it depends on the step number only, so two runs of the
    same loop sample the same steps.
    """

    every: int = 10

    def __call__(self, step: int) -> bool:
        if self.every <= 0:
            return False
        return step == 1 or step % self.every == 0
