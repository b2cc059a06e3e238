"""Alerts raised while training: non-finite values, Python warnings, gradient norms out of range."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Alert:
    kind: str  # "nonfinite", "warning", "exploding_grad", "vanishing_grad", "oom", "error"
    step: int  # the optimizer step during which it first happened (1-based; 0 before the first)
    message: str
    module: str | None = None  # qualified module name as in named_modules(), when known
    count: int = 1
    details: dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        where = f" in {self.module}" if self.module else ""
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"[{self.kind}] step {self.step}{where}: {self.message}{times}"


class AlertBook:
    """Alerts in the order they first happened; a repeated alert only bumps its count."""

    def __init__(self, limit: int = 200) -> None:
        self._by_key: dict[tuple[str, str], Alert] = {}
        self.alerts: list[Alert] = []
        self._kinds: set[str] = set()
        self._limit = limit
        self.version = 0  # bumped on every change, so displays redraw only when needed

    def add(
        self, kind: str, step: int, message: str, module: str | None = None, key: str | None = None, **details: object
    ) -> Alert | None:
        k = (kind, key if key is not None else message)
        seen = self._by_key.get(k)
        self.version += 1
        if seen is not None:
            seen.count += 1
            return None
        if len(self.alerts) >= self._limit:
            return None
        alert = Alert(kind, step, message, module, 1, dict(details))
        self._by_key[k] = alert
        self.alerts.append(alert)
        self._kinds.add(kind)
        return alert

    def revise(self, alert: Alert, message: str, module: str | None = None, **details: object) -> None:
        """Say more about an alert already raised (the module found later, say)."""
        alert.message = message
        if module is not None:
            alert.module = module
        alert.details.update(details)
        self.version += 1

    def has(self, kind: str) -> bool:
        return kind in self._kinds
