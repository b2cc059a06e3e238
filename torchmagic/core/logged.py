"""What ``torchmagic.log()`` accepts: real numbers (numpy's included) and one-element tensors.

A value that cannot be recorded is refused with an error naming it, before anything of the call
is kept, so a bad call never leaves half its values in the history. Names of the columns the
monitor measures itself are refused too: a logged ``loss`` would silently replace the measured one.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from torchmagic.core.recording import is_builtin_column


def checked_values(values: dict[str, Any]) -> dict[str, float | torch.Tensor]:
    """``values`` as the monitor stores them: floats, or detached one-element tensors."""
    return {str(name): _checked(str(name), value) for name, value in values.items()}


def _checked(name: str, value: Any) -> float | torch.Tensor:
    if is_builtin_column(name):
        raise ValueError(
            f"torchmagic.log: {name!r} is a column the monitor records itself; log your value under "
            f"another name, such as {name + '_logged'!r}"
        )
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"torchmagic.log: {name!r} has {value.numel()} elements; log scalars")
        if value.is_complex():
            raise TypeError(f"torchmagic.log: {name!r} is a complex tensor; log real numbers")
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"torchmagic.log: {name!r} has {value.size} elements; log scalars")
        value = value.reshape(()).item()
    if isinstance(value, (numbers.Real, np.bool_)):  # int, float, bool, numpy's integers and floats
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"torchmagic.log: {name!r} = {value!r} is too large for a float") from None
    raise TypeError(
        f"torchmagic.log: {name!r} is a {type(value).__name__}; log numbers (numpy scalars included) or 1-element tensors"
    )
