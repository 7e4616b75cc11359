"""Block grids of images and volumes: a block's sides per axis and the blocks of a tensor as a view.

An image (C, H, W) has 2 spatial axes and square blocks; a volume (C, D, H, W) has 3 and cuboid
blocks (one side, or one side per axis). Everything that cuts a tensor into blocks goes through here,
so images and volumes share one rule for the grid's order (row-major, depth first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .checks import describe

__all__ = ["block_sides", "block_view", "grid_shape", "cell_coords"]


def block_sides(block: Any, ndim: int, *, name: str = "block") -> tuple[int, ...]:
    """The block's side along each of `ndim` spatial axes: an int is a square or cube, a sequence gives each side.

    Parameters
    ----------
    block : int or sequence of int
        One side for every axis, or one per axis (the explainers take per-axis sides for volumes only).
    ndim : {2, 3}
        Spatial axes of the image.
    name : str
        Argument name used in error messages.

    Examples
    --------
    >>> block_sides(4, 3), block_sides((2, 4, 4), 3), block_sides(8, 2)
    ((4, 4, 4), (2, 4, 4), (8, 8))
    """
    if isinstance(block, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer or a tuple of integers, got {describe(block)}")
    if isinstance(block, (int, np.integer)):
        sides = (int(block),) * ndim
    elif isinstance(block, Sequence) and not isinstance(block, str):
        if len(block) != ndim or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in block):
            axes = "(depth, height, width)" if ndim == 3 else "(height, width)"
            raise ValueError(f"{name}={block!r} must give {ndim} integer sides {axes}")
        sides = tuple(int(b) for b in block)
    else:
        raise TypeError(f"{name} must be an integer or a tuple of integers, got {describe(block)}")
    if min(sides) < 1:
        raise ValueError(f"{name}={block!r} is too small; expected sides >= 1")
    return sides


def grid_shape(spatial: Sequence[int], sides: Sequence[int]) -> tuple[int, ...]:
    """Blocks along each axis of a tensor of `spatial` size cut into blocks of `sides` (sides must tile).

    Parameters
    ----------
    spatial : sequence of int
        The tensor's spatial size, e.g. (D, H, W).
    sides : sequence of int
        Block side along each axis.

    Examples
    --------
    >>> grid_shape((32, 32, 32), (4, 8, 8))
    (8, 4, 4)
    """
    return tuple(int(s) // int(b) for s, b in zip(spatial, sides))


def block_view(tensor: torch.Tensor, sides: Sequence[int]) -> torch.Tensor:
    """(..., C, *S) -> (..., *G, C, *b): the blocks of the last len(sides) axes, as a view (no copy).

    Parameters
    ----------
    tensor : Tensor (..., C, H, W) or (..., C, D, H, W)
        Leading dims are kept; the spatial size must be a multiple of `sides`.
    sides : sequence of int
        Block side along each spatial axis.

    Examples
    --------
    >>> volume = torch.arange(64.0).reshape(1, 4, 4, 4)
    >>> view = block_view(volume, (2, 2, 2))
    >>> tuple(view.shape)
    (2, 2, 2, 1, 2, 2, 2)
    >>> view[1, 0, 0, 0, 0]                              # the first slice of block (1, 0, 0)
    tensor([[32., 33.],
            [36., 37.]])
    """
    k = len(sides)
    *lead, c = tensor.shape[: tensor.dim() - k]
    spatial = tensor.shape[-k:]
    split: list[int] = []
    for size, side in zip(spatial, sides):
        split += [size // side, side]
    view = tensor.reshape(*lead, c, *split)
    n = len(lead)
    grid_axes = [n + 1 + 2 * i for i in range(k)]
    block_axes = [n + 2 + 2 * i for i in range(k)]
    return view.permute(*range(n), *grid_axes, n, *block_axes)


def cell_coords(cells: np.ndarray | torch.Tensor, grid: Sequence[int]) -> list[np.ndarray]:
    """Grid coordinates (one array per axis) of flat, row-major cell indices.

    Parameters
    ----------
    cells : array or Tensor of int
        Flat cell indices.
    grid : sequence of int
        Blocks along each axis.

    Examples
    --------
    >>> [c.tolist() for c in cell_coords(np.array([0, 5, 7]), (2, 2, 2))]
    [[0, 1, 1], [0, 0, 1], [0, 1, 1]]
    """
    return list(np.unravel_index(np.asarray(cells), tuple(grid)))
