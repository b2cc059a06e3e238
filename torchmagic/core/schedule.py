"""When to take the costly statistics: a function of the step number and of the period in force."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_EVERY = 10
# With the default schedule, statistics steps come at most this often a second: a loop of 0.2 ms
# steps would otherwise spend a tenth of its time on them (a statistics step costs about as much as
# ten plain ones on a tiny model, and the steps after it run slower while caches refill). The charts
# redraw 4 times a second, so more samples than this show nothing more.
MAX_STATS_PER_SECOND = 20.0
MAX_PERIOD = 1 << 20


@dataclass
class StepSchedule:
    """Sample on step 1 and then every ``period`` steps (``every=0`` never samples).

    ``period`` is ``every``, except with ``auto`` (the default schedule, when the user chose no
    period): there :meth:`adapt` makes it ``every`` times the smallest power of two that keeps the
    statistics steps under :data:`MAX_STATS_PER_SECOND`, from the step rate at each refresh. Like
    ``torch.profiler.schedule`` it depends on the step number only between two changes of the
    period, and a longer period samples a subset of the steps a shorter one does.
    """

    every: int = DEFAULT_EVERY
    auto: bool = False
    period: int = field(init=False)
    # steps per loop iteration with several optimizers (see optimizer_book): whole iterations are sampled
    span: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        self.period = self.every

    def __call__(self, step: int) -> bool:
        period = self.period
        if period <= 0:
            return False
        if self.span > 1:
            step = (step - 1) // self.span + 1
        return step == 1 or step % period == 0

    def adapt(self, steps_per_second: float) -> bool:
        """The period for the step rate now (auto schedules only); whether it changed."""
        if not self.auto or self.every <= 0 or not steps_per_second > 0:
            return False
        period = self.every
        while steps_per_second / period > MAX_STATS_PER_SECOND and period < MAX_PERIOD:
            period *= 2
        changed = period != self.period
        self.period = period
        return changed
