"""Choosing regions of interest reproducibly (for demos, reports and sweeps).

The paper explains 32 x 32 RoIs at 256 x 256 whose corners sit on the 8-pixel block grid, placed on
the structure being segmented. :func:`boundary_roi` picks such an RoI from a mask automatically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._checks import as_mask, check_int

__all__ = ["boundary_roi"]


def boundary_roi(mask: Any, size: int = 16, block: int = 8) -> tuple[int, int, int, int]:
    """A grid-aligned ``size x size`` RoI where the mask is closest to half foreground.

    An RoI on the border of the segmented structure holds both foreground and background, so its
    Dice responds to changes in either direction. Ties go to the window nearest the mask's centroid.

    Parameters
    ----------
    mask : bool array (H, W)
        Ground truth or predicted mask.
    size : int
        RoI side in pixels; a multiple of `block`.
    block : int
        Grid the RoI corner is aligned to.

    Returns
    -------
    (row, col, height, width)
    """
    size = check_int("size", size, minimum=1)
    block = check_int("block", block, minimum=1)
    array = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    m = as_mask("mask", array, array.shape[-2:]).numpy()
    h, w = m.shape
    if size > min(h, w):
        raise ValueError(f"size={size} does not fit in the {h}x{w} mask")
    if not m.any():
        raise ValueError("mask is empty: there is no structure to place the RoI on")
    rows = np.arange(0, h - size + 1, block)
    cols = np.arange(0, w - size + 1, block)
    integral = np.pad(m.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = np.meshgrid(rows, cols, indexing="ij")
    inside = integral[r + size, c + size] - integral[r, c + size] - integral[r + size, c] + integral[r, c]
    balance = np.abs(inside / size**2 - 0.5)
    cy, cx = np.argwhere(m).mean(axis=0)
    distance = np.hypot(r + size / 2 - cy, c + size / 2 - cx)
    order = np.lexsort((distance.ravel(), balance.ravel()))
    best = order[0]
    return int(r.ravel()[best]), int(c.ravel()[best]), size, size
