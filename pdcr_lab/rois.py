"""Choosing regions of interest reproducibly (for demos, reports and sweeps).

The paper explains 32 x 32 RoIs at 256 x 256 whose corners sit on the 8-pixel block grid, placed on
the structure being segmented. :func:`boundary_roi` picks such an RoI from a mask automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .checks import as_mask, check_int, describe

__all__ = ["boundary_roi", "parse_rois", "Roi"]

Roi = Any  # (row, col, height, width) | bool (H, W) mask | a sequence of those | (R, H, W) masks


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


def parse_rois(roi: Roi, shape: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray, bool]:
    """RoI argument -> (R, H, W) bool masks, (R, 4) bounding boxes, and whether several were given.

    A box is ``(row, col, height, width)`` in pixels and must lie inside the image.
    """
    h, w = shape
    if _is_box(roi):
        items, multi = [roi], False
    elif isinstance(roi, (np.ndarray, torch.Tensor)) and np.ndim(roi) == 2:
        items, multi = [roi], False
    elif isinstance(roi, (np.ndarray, torch.Tensor)) and np.ndim(roi) == 3:
        items, multi = list(roi), True
    elif isinstance(roi, Sequence) and not isinstance(roi, str) and len(roi) > 0:
        items, multi = list(roi), True
    else:
        raise ValueError(
            f"roi must be a (row, col, height, width) box, a boolean (H, W) mask or a list of them, got {describe(roi)}"
        )
    masks, boxes = [], []
    for i, item in enumerate(items):
        name = f"roi[{i}]" if multi else "roi"
        if _is_box(item):
            r, c, bh, bw = (int(v) for v in item)
            if bh < 1 or bw < 1:
                raise ValueError(f"{name}={tuple(item)} is empty; height and width must be >= 1")
            if r < 0 or c < 0 or r + bh > h or c + bw > w:
                raise ValueError(
                    f"{name}={tuple(item)} (row, col, height, width) is out of bounds for an image of {h}x{w}"
                )
            mask = torch.zeros(h, w, dtype=torch.bool)
            mask[r : r + bh, c : c + bw] = True
        else:
            try:
                mask = as_mask(name, item, (h, w))
            except TypeError:
                raise ValueError(
                    f"{name} must be a (row, col, height, width) box or a boolean (H, W) mask, got {describe(item)}"
                ) from None
            if not mask.any():
                raise ValueError(f"{name} is an empty mask: it covers no pixel of the {h}x{w} image")
        rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
        boxes.append((int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)))
        masks.append(mask)
    return torch.stack(masks), np.asarray(boxes, dtype=np.int64), multi


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 4
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    )
