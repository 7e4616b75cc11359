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
    """Short description of a value for error messages (shape and dtype for arrays).

    Parameters
    ----------
    value : object
        Anything a caller passed; tensors and arrays are described by shape and dtype, everything
        else by its ``repr`` cut to 80 characters.

    Examples
    --------
    >>> describe(np.zeros((2, 3), dtype=np.float32))
    'array of shape (2, 3) and dtype float32'
    >>> describe("abc")
    "'abc'"
    """
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`, else a ``ValueError`` that names `name` and the choices.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed.
    choices : iterable
        The allowed values.

    Examples
    --------
    >>> check_choice("intervention", "zero", ("natural", "zero"))
    'zero'
    >>> check_choice("intervention", "noise", ("natural", "zero"))
    Traceback (most recent call last):
    ...
    ValueError: intervention='noise' is not supported; expected one of ['natural', 'zero']
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """`value` as a Python int; refuses booleans, non-integers and values below `minimum`.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed (``int`` or a NumPy integer).
    minimum : int, optional
        Smallest allowed value.

    Examples
    --------
    >>> check_int("block", np.int64(8), minimum=1)
    8
    >>> check_int("block", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: block=0 is too small; expected an integer >= 1
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} is too small; expected an integer >= {minimum}")
    return int(value)


def check_float(name: str, value: Any, *, minimum: float | None = None) -> float:
    """`value` as a finite Python float; refuses booleans, non-numbers, NaN, Inf and values below `minimum`.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed (any real number).
    minimum : float, optional
        Smallest allowed value.

    Examples
    --------
    >>> check_float("tau", 1)
    1.0
    >>> check_float("tau", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: tau=nan must be finite
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value} must be finite")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} is too small; expected a number >= {minimum}")
    return value


def as_tensor(name: str, value: Any, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert an array-like to a tensor of `dtype` (no copy when it already is one).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : Tensor or array-like
        Numeric or boolean values; object arrays and strings are refused with a ``TypeError``.
    dtype : torch.dtype
        dtype of the result (default float32).

    Examples
    --------
    >>> as_tensor("mask", [[True, False]], dtype=torch.bool)
    tensor([[ True, False]])
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype)
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a tensor or array, got {describe(value)}") from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must be a numeric tensor or array, got {describe(value)}")
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def as_image(name: str, value: Any, *, volumes: bool = False) -> torch.Tensor:
    """An image as a finite float32 (C, H, W) tensor (or a (C, D, H, W) volume when `volumes`).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : Tensor or array-like of shape (C, H, W), or (C, D, H, W) when `volumes`
        Pixel values; NaN and Inf are refused.
    volumes : bool
        Also accept volumes (the 3-D engine).

    Examples
    --------
    >>> as_image("image", np.zeros((1, 4, 4))).shape
    torch.Size([1, 4, 4])
    >>> as_image("image", np.zeros((4, 4)))
    Traceback (most recent call last):
    ...
    ValueError: image must have shape (C, H, W), got array of shape (4, 4) and dtype float64; ...
    """
    image = as_tensor(name, value)
    if image.ndim != 3 and not (volumes and image.ndim == 4):
        expected = "(C, H, W) or a volume (C, D, H, W)" if volumes else "(C, H, W)"
        raise ValueError(
            f"{name} must have shape {expected}, got {describe(value)}; "
            "pass a single image with channels first (add a channel axis for grey images)"
        )
    if image.shape[-1] in (1, 3, 4) and image.shape[0] > 4:
        raise ValueError(
            f"{name} of shape {tuple(image.shape)} looks channels-last (H, W, C); pdcr_lab takes channels "
            f"first (C, H, W): pass image.permute(2, 0, 1) (torch) or np.moveaxis(image, -1, 0) (numpy)"
        )
    if not torch.isfinite(image).all():
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf values; expected finite pixel values")
    return image


def as_mask(name: str, value: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """A boolean (H, W) (or volume's (D, H, W)) mask of the given shape; accepts bool, 0/1 or 0/255 arrays.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : Tensor or array-like of shape (H, W) or (1, H, W); for a volume (D, H, W) or (1, D, H, W)
        Binary values: bool, 0/1 or 0/255.
    shape : (int, int) or (int, int, int)
        The expected (H, W) or (D, H, W), usually the image's.

    Examples
    --------
    >>> as_mask("target", np.array([[0, 255], [255, 0]]), (2, 2))
    tensor([[False,  True],
            [ True, False]])
    """
    mask = as_tensor(name, value, dtype=torch.float32)
    if mask.ndim == len(shape) + 1 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(shape):
        axes = "D, H, W" if len(shape) == 3 else "H, W"
        raise ValueError(f"{name} must have shape {tuple(shape)} (the image's {axes}), got {describe(value)}")
    values = torch.unique(mask)
    if not bool(torch.isin(values, torch.tensor([0.0, 1.0, 255.0])).all()):
        raise ValueError(
            f"{name} must be binary (bool, 0/1 or 0/255), found values {values[:6].tolist()}"
        )
    return mask > 0
