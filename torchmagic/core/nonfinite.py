"""Where a non-finite value first appeared, told as alerts.

Every module's output is seen only on the steps the monitor watches (scheduled statistics, the
first step, a new input shape). A non-finite loss on another step still says at once what that
step shows for free (a non-finite input, a non-finite parameter); otherwise its alert says the
step was not watched, the monitor watches one more step (``Unlocated.at``), and the alert is
revised with what that step shows. Names of checked tensors tell what they are: a module's
qualified name, ``<input of NAME>`` or ``<parameter NAME>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torchmagic.core.alerts import Alert, AlertBook

INPUT_PREFIX = "<input of "  # "<input of NAME>": a root forward's input
PARAM_PREFIX = "<parameter "  # "<parameter NAME>": a parameter, by its qualified name


@dataclass
class Unlocated:
    """A non-finite loss seen on a step whose modules were not watched."""

    alert: Alert
    step: int
    at: int | None = None  # the step the monitor watches to name the module, once it has chosen it


@dataclass(frozen=True)
class _Finding:
    what: str  # "input", "parameter" or "activation"
    module: str | None
    text: str
    subject: str = ""  # "parameter NAME"


def _finding(name: str) -> _Finding:
    if name.startswith(INPUT_PREFIX):
        root = name[len(INPUT_PREFIX) : -1]
        return _Finding("input", root, f"the input to {root or 'the model'} is already non-finite")
    if name.startswith(PARAM_PREFIX):
        param = name[len(PARAM_PREFIX) : -1]
        module = param.rsplit(".", 1)[0] if "." in param else ""
        return _Finding("parameter", module, f"parameter {param} is non-finite", f"parameter {param}")
    return _Finding("activation", name, f"non-finite activation first seen in {name}")


class NonfiniteAlerts:
    """The "nonfinite" alerts of a run, and the one that still waits for its module."""

    def __init__(self, alerts: AlertBook) -> None:
        self.alerts = alerts
        self.unlocated: Unlocated | None = None
        self.locating = True  # a non-finite value is still looked for: until the first is named (read every step)

    def _set(self, unlocated: Unlocated | None) -> None:
        self.unlocated = unlocated
        self.locating = unlocated is not None or not self.alerts.has("nonfinite")

    def add(self, what: str, module: str | None, step: int, note: str | None = None) -> Alert | None:
        where = f" first seen in {module}" if module else ""
        alert = self.alerts.add("nonfinite", step, note or f"non-finite {what}{where}", module=module, key=f"nonfinite:{what}")
        self._set(self.unlocated)
        return alert

    def _pending_at(self, step: int) -> Unlocated | None:
        pending = self.unlocated
        return pending if pending is not None and pending.at == step else None

    def name_first(self, names: list[str], norms: list[float], step: int) -> bool:
        """Alert on the first non-finite norm among a step's checked tensors (in the order checked);
        False when all are finite, or when the check cannot speak for a waiting alert."""
        bad = next((name for name, norm in zip(names, norms) if not math.isfinite(norm)), None)
        if bad is None:
            return False
        found = _finding(bad)
        if self.unlocated is not None and self.unlocated.at != step and step > self.unlocated.step:
            return False  # checked before the forward watched for the waiting alert
        pending = self._pending_at(step)
        if pending is None:
            self.add(found.what, found.module, step, note=None if found.what == "activation" else found.text)
        elif found.what == "parameter":  # finite at the alert's step: an update since spread the value
            self._settle(
                pending,
                f"by step {step} the update of step {pending.step} had made {found.subject} non-finite, "
                "so the module where it began is not known",
            )
        elif found.what == "input":
            self._settle(pending, f"at step {step}, watched, {found.text}", found.module)
        else:
            self._settle(pending, f"at step {step}, watched, it first appeared in {found.module}", found.module)
        return True

    def nonfinite_loss(self, step: int, watched: bool) -> Alert | None:
        """A non-finite loss none of the checked tensors explains (counted if already alerted)."""
        pending = self._pending_at(step)
        if pending is not None and watched:
            self._settle(pending, f"at step {step}, watched, every module's output was finite: it arises in the loss")
            return pending.alert
        note = None
        if not watched:
            note = (
                f"non-finite loss at step {step} (not watched: modules are watched on some steps only); "
                "the next forward is watched to name the module where it first appears"
            )
        alert = self.add("loss", None, step, note=note)
        if alert is not None and not watched:
            self._set(Unlocated(alert, step))
        return alert

    def watched_step_done(self, step: int) -> None:
        """The step watched for a waiting alert ended without naming a module: its values were finite."""
        pending = self._pending_at(step)
        if pending is not None:
            self._settle(pending, f"step {step}, watched, was finite, so the module is not known")

    def _settle(self, pending: Unlocated, outcome: str, module: str | None = None) -> None:
        self._set(None)
        message = f"non-finite loss at step {pending.step} (not watched); {outcome}"
        self.alerts.revise(pending.alert, message, module, located_at=pending.at)
