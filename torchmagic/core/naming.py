"""Qualified module names (as in ``named_modules()``) for every module a run sees."""

from __future__ import annotations

import torch

MODEL_LABEL = "(model)"  # how the first model itself is shown, its qualified name being ""


class ModuleNames:
    """Names modules of the models the run knows, and of roots it discovers while running.

    The first model is named without a prefix, so its modules read exactly as in its
    ``named_modules()`` (``encoder.layers.2.fc1``); other roots get their variable or class name.
    """

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._leaf: dict[int, bool] = {}
        self._keep: list[torch.nn.Module] = []  # keeps ids valid for the run
        self.has_primary = False

    def add_root(self, module: torch.nn.Module, prefix: str | None = None) -> None:
        if id(module) in self._names:
            return
        if prefix is None:
            prefix = "" if not self.has_primary and _has_parameters(module) else type(module).__name__
        if prefix == "":
            self.has_primary = True
        self._keep.append(module)
        for name, sub in module.named_modules(remove_duplicate=False):
            if id(sub) in self._names:
                continue
            self._names[id(sub)] = f"{prefix}.{name}" if prefix and name else (name or prefix)
            self._leaf[id(sub)] = next(iter(sub.children()), None) is None

    @property
    def roots(self) -> list[torch.nn.Module]:
        return self._keep

    def name(self, module: torch.nn.Module) -> str | None:
        return self._names.get(id(module))

    def label(self, module: torch.nn.Module) -> str:
        """The qualified name, or the class name of a module no known root contains."""
        name = self._names.get(id(module))
        return type(module).__name__ if name is None else name

    def is_leaf(self, module: torch.nn.Module) -> bool:
        return self._leaf.get(id(module), True)

    def known(self, module: torch.nn.Module) -> bool:
        return id(module) in self._names

    def parameter_names(self) -> dict[int, str]:
        """id(parameter) -> qualified parameter name, over every root seen."""
        names: dict[int, str] = {}
        for root in self.roots:
            prefix = self._names[id(root)]
            for name, p in root.named_parameters(remove_duplicate=True):
                names.setdefault(id(p), f"{prefix}.{name}" if prefix else name)
        return names


class ParameterNames:
    """Qualified names of parameters, looked up again only when a parameter is new to the run."""

    def __init__(self, names: ModuleNames) -> None:
        self._modules = names
        self._by_id: dict[int, str] = {}

    def __call__(self, params: list[torch.Tensor]) -> list[str]:
        if any(id(p) not in self._by_id for p in params):
            self._by_id = self._modules.parameter_names()
        return [self._by_id.get(id(p), f"param{i}") for i, p in enumerate(params)]


def _has_parameters(module: torch.nn.Module) -> bool:
    return next(iter(module.parameters()), None) is not None
