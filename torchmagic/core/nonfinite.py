"""Where a non-finite value first appeared, told as alerts.

Every module's output is seen only on the steps the monitor watches (scheduled statistics, the
first step, a new input shape). A non-finite loss on another step still says at once what that
step shows for free (a non-finite input, a non-finite parameter); otherwise its alert says the
step was not watched, the monitor watches one more step (``Unlocated.at``), and the alert is
revised with what that step shows. Gradients are read on scheduled steps only (reading them on
every step would cost a norm per parameter tensor), so a gradient alert says between which steps
it appeared. Names of checked tensors tell what they are (see :mod:`~torchmagic.core.finitecheck`):
a leaf module's qualified name, ``<code of NAME in Class.forward>``, ``<input of NAME>`` or
``<parameter NAME>``.

The first "nonfinite" alert of a run stands for what follows from it: a later non-finite loss or
gradient (the value spreads through the updates) counts on it, once per step, rather than
raising an alert of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torchmagic.core.alerts import Alert, AlertBook
from torchmagic.core.naming import MODEL_LABEL

INPUT_PREFIX = "<input of "  # "<input of NAME>": a root forward's input
PARAM_PREFIX = "<parameter "  # "<parameter NAME>": a parameter, by its qualified name
CODE_PREFIX = "<code of "  # "<code of NAME in Class.forward>": made by a module's own code, not a submodule


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
        module = param.rsplit(".", 1)[0] if "." in param else MODEL_LABEL
        return _Finding("parameter", module, f"parameter {param} is non-finite", f"parameter {param}")
    if name.startswith(CODE_PREFIX):
        module, _, forward = name[len(CODE_PREFIX) : -1].rpartition(" in ")
        where = forward if module == MODEL_LABEL else f"{forward} of {module}"
        return _Finding("activation", module, f"non-finite value first made in {where} itself, not in a submodule")
    return _Finding("activation", name, f"non-finite activation first seen in {name}")


class NonfiniteAlerts:
    """The "nonfinite" alerts of a run, and the one that still waits for its module."""

    def __init__(self, alerts: AlertBook) -> None:
        self.alerts = alerts
        self.unlocated: Unlocated | None = None
        self.locating = True  # a non-finite value is still looked for: until the first is named (read every step)
        self.first: Alert | None = None  # the run's first "nonfinite" alert, which later findings count on
        self._counted_step = 0  # the step a finding last counted on ``first``
        self._gradients_finite_at = 0  # the last step whose gradients were read and finite

    def _set(self, unlocated: Unlocated | None) -> None:
        self.unlocated = unlocated
        self.locating = unlocated is not None or not self.alerts.has("nonfinite")

    def add(self, what: str, module: str | None, step: int, note: str | None = None, **details: object) -> Alert | None:
        """The run's first non-finite finding as an alert; a later one (None returned) counts on it."""
        if self.first is not None:
            self._count(step)
            return None
        where = f" first seen in {module}" if module else ""
        message = note or f"non-finite {what}{where}"
        alert = self.alerts.add("nonfinite", step, message, module=module, key=f"nonfinite:{what}", **details)
        self.first, self._counted_step = alert, step
        self._set(self.unlocated)
        return alert

    def _count(self, step: int) -> None:
        """A step with a non-finite value, after the first alert: counted on it, once per step."""
        if self.first is not None and step != self._counted_step:
            self.first.count += 1
            self.alerts.version += 1
            self._counted_step = step

    def gradients_finite(self, step: int) -> None:
        """The gradients of ``step`` were read, and every one was finite."""
        self._gradients_finite_at = max(self._gradients_finite_at, step)

    def gradient(self, name: str | None, step: int) -> Alert | None:
        """A non-finite gradient read at ``step``, said with the steps since the last read."""
        since = self._gradients_finite_at + 1
        text = f"non-finite gradient of {name}" if name else "non-finite gradient"
        if since < step:
            text += (
                f" read at step {step}; gradients are read on some steps only, and those of step {since - 1} "
                f"were finite, so it appeared between steps {since} and {step}"
                if since > 1
                else f" read at step {step}, the first read of the gradients: it appeared between steps 1 and {step}"
            )
        module = (name.rsplit(".", 1)[0] if "." in name else MODEL_LABEL) if name else None
        return self.add("gradient", module, step, note=text, between=(since, step))

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
        if pending is not None:
            self._count(step)
            if found.what == "parameter":  # finite at the alert's step: an update since spread the value
                outcome = (
                    f"by step {step} the update of step {pending.step} had made {found.subject} non-finite, "
                    "so the module where it began is not known"
                )
                self._settle(pending, outcome)
            else:
                self._settle(pending, f"{self._located(pending, step)}: {found.text}", found.module)
        elif found.what == "parameter" and step > 1:
            # read only at a non-finite loss, the first of the run: the previous step's loss was finite
            note = (
                f"{found.text} at step {step}, and step {step - 1}'s loss was finite: it became non-finite after "
                f"step {step - 1}'s forward, in that step's update (a non-finite gradient) or by the loop's own code"
            )
            self.add(found.what, found.module, step, note=note, between=(step - 1, step))
        else:
            self.add(found.what, found.module, step, note=found.text)
        return True

    def nonfinite_loss(self, step: int, watched: bool) -> Alert | None:
        """A non-finite loss none of the checked tensors explains (counted if already alerted)."""
        pending = self._pending_at(step)
        if pending is not None and watched:
            self._settle(pending, f"{self._located(pending, step)}: every module's output was finite, it arises in the loss")
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

    @staticmethod
    def _located(pending: Unlocated, step: int) -> str:
        if step == pending.step:
            return "located in a later forward of that step, watched"
        return f"located on step {step}, the next step whose modules were watched"

    def _settle(self, pending: Unlocated, outcome: str, module: str | None = None) -> None:
        self._set(None)
        message = f"non-finite loss first seen at step {pending.step}, an unwatched step; {outcome}"
        self.alerts.revise(pending.alert, message, module, located_at=pending.at)
