"""What a training cell tells before it runs: the names it reads and how long its loop is."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

_SAFE_BINOPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
}


def names_read(tree: ast.AST) -> list[str]:
    """Names the cell loads, in order of first appearance."""
    seen: dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            seen.setdefault(node.id, None)
    return sorted(seen, key=lambda n: _first_position(tree, n))


def _first_position(tree: ast.AST, name: str) -> tuple[float, float]:
    best: tuple[float, float] = (math.inf, math.inf)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name:
            best = min(best, (node.lineno, node.col_offset))
    return best


def calls_method(tree: ast.AST, method: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == method for n in ast.walk(tree))


def loop_total(tree: ast.Module, namespace: dict[str, Any]) -> int | None:
    """Iterations of the innermost loop that calls backward(), when every loop's length is known.

    ``for epoch in range(3): for x, y in loader:`` gives ``3 * len(loader)``. Only literals,
    integer names, ``len()``, simple arithmetic and objects with ``__len__`` are evaluated; the
    iterables themselves are never iterated.
    """
    chain = _loop_chain(tree.body)
    if not chain:
        return None
    total = 1
    for loop in chain:
        n = _length(loop.iter, namespace)
        if n is None:
            return None
        total *= n
    return total if total > 0 else None


def _loop_chain(body: list[ast.stmt], backward_only: bool = False) -> list[ast.For]:
    """The loops down to the innermost that trains. Inside a loop that calls backward(), an inner loop
    counts only if it calls backward() too: ``for opt in opts: opt.step()`` (an optimizer per layer)
    steps each optimizer of one iteration, it is no loop of its own."""
    for stmt in body:
        if isinstance(stmt, ast.For) and _has_backward(stmt, backward_only):
            inner = _loop_chain(stmt.body, backward_only or calls_method(stmt, "backward"))
            return [stmt, *inner]
        if isinstance(stmt, (ast.With, ast.If, ast.Try)) and _has_backward(stmt, backward_only):
            bodies = [stmt.body] + ([stmt.orelse] if isinstance(stmt, ast.If) else [])
            for b in bodies:
                chain = _loop_chain(b, backward_only)
                if chain:
                    return chain
    return []


def _has_backward(node: ast.AST, backward_only: bool = False) -> bool:
    return calls_method(node, "backward") or (not backward_only and calls_method(node, "step"))


def _length(node: ast.expr, ns: dict[str, Any]) -> int | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fname, args = node.func.id, node.args
        if fname == "range" and 1 <= len(args) <= 3 and not node.keywords:
            bounds = [v for v in (_int(a, ns) for a in args) if v is not None]
            return len(range(*bounds)) if len(bounds) == len(args) else None
        if fname == "enumerate" and args:
            return _length(args[0], ns)
        if fname == "zip" and args:
            lengths = [n for n in (_length(a, ns) for a in args) if n is not None]
            return min(lengths) if len(lengths) == len(args) else None
        if fname in ("tqdm", "progress_bar", "iter") and args:
            return _length(args[0], ns)
    obj = _resolve(node, ns)
    if obj is not None and hasattr(obj, "__len__") and not isinstance(obj, (str, bytes)):
        try:
            return len(obj)
        except Exception:  # noqa: BLE001 - e.g. an IterableDataset's loader
            return None
    return None


def _int(node: ast.expr, ns: dict[str, Any]) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _SAFE_BINOPS:
        a, b = _int(node.left, ns), _int(node.right, ns)
        if a is None or b is None or (isinstance(node.op, ast.FloorDiv) and b == 0):
            return None
        return _SAFE_BINOPS[type(node.op)](a, b)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" and len(node.args) == 1:
        return _length(node.args[0], ns)
    value = _resolve(node, ns)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _resolve(node: ast.expr, ns: dict[str, Any]) -> Any:
    """A Name or a chain of plain attributes looked up in the namespace; None otherwise."""
    if isinstance(node, ast.Name):
        return ns.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, ns)
        if base is None or isinstance(getattr(type(base), node.attr, None), property):
            return None
        return getattr(base, node.attr, None)
    return None
