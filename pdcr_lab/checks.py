"""Input checks shared by the public functions.

Every check names the argument, echoes the value it got and says what was expected, so that a bad
call fails at the boundary with a readable message instead of deep inside torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def describe(value: Any) -> str:
    """Short description of a value for error messages (shape and dtype for arrays)."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} is too small; expected an integer >= {minimum}")
    return int(value)


def check_float(name: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value} must be finite")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} is too small; expected a number >= {minimum}")
    return value


def as_tensor(name: str, value: Any, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert an array-like to a tensor of `dtype` (no copy when it already is one)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype)
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a tensor or array, got {describe(value)}") from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must be a numeric tensor or array, got {describe(value)}")
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def as_image(name: str, value: Any) -> torch.Tensor:
    """An image as a finite float32 (C, H, W) tensor."""
    image = as_tensor(name, value)
    if image.ndim != 3:
        raise ValueError(
            f"{name} must have shape (C, H, W), got {describe(value)}; "
            "pass a single image with channels first (add a channel axis for grey images)"
        )
    if not torch.isfinite(image).all():
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf values; expected finite pixel values")
    return image


def as_mask(name: str, value: Any, shape: tuple[int, int]) -> torch.Tensor:
    """A boolean (H, W) mask of the given shape; accepts bool, 0/1 or 0/255 arrays."""
    mask = as_tensor(name, value, dtype=torch.float32)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (the image's H, W), got {describe(value)}")
    values = torch.unique(mask)
    if not bool(torch.isin(values, torch.tensor([0.0, 1.0, 255.0])).all()):
        raise ValueError(
            f"{name} must be binary (bool, 0/1 or 0/255), found values {values[:6].tolist()}"
        )
    return mask > 0
