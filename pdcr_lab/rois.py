"""Everything about regions of interest: parsing, choosing, snapping and reading them.

The paper explains 32 x 32 RoIs at 256 x 256 whose corners sit on the 8-pixel block grid, placed on
the structure being segmented.

* :func:`parse_rois`: the ``roi`` argument of every explainer (a box, a mask or a list of them)
  as masks and bounding boxes;
* :func:`boundary_roi`: an RoI on the border of a mask, picked automatically;
* :func:`snap_roi`: the RoI on the block grid nearest a clicked point (widgets, dashboard);
* :func:`read_roi_list` / :class:`RoiSpec`: the reference's RoI coordinate lists.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import as_mask, check_int, describe

__all__ = ["Roi", "RoiSpec", "boundary_roi", "parse_rois", "read_roi_list", "snap_roi"]

#: (row, col, height, width) | bool (H, W) mask | a sequence of those | (R, H, W) masks; for a volume
#: (z, row, col, depth, height, width) | bool (D, H, W) mask | a sequence of those | (R, D, H, W) masks
Roi = Any
_BOX_TEXT = {2: "(row, col, height, width)", 3: "(z, row, col, depth, height, width)"}


def boundary_roi(mask: Any, size: int = 16, block: int = 8) -> tuple[int, ...]:
    """A grid-aligned ``size x size`` RoI where the mask is closest to half foreground.

    An RoI on the border of the segmented structure holds both foreground and background, so its
    Dice responds to changes in either direction. Ties go to the window nearest the mask's centroid.
    A volume's (D, H, W) mask gets a ``size``-sided cube.

    Parameters
    ----------
    mask : bool array (H, W), or (D, H, W) for a volume
        Ground truth or predicted mask.
    size : int
        RoI side in pixels; a multiple of `block`.
    block : int
        Grid the RoI corner is aligned to.

    Returns
    -------
    (row, col, height, width), or (z, row, col, depth, height, width) for a volume

    Examples
    --------
    >>> mask = np.zeros((16, 16, 16), bool); mask[:, :, 8:] = True
    >>> boundary_roi(mask, size=8, block=4)
    (4, 4, 4, 8, 8, 8)
    """
    size = check_int("size", size, minimum=1)
    block = check_int("block", block, minimum=1)
    array = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    k = 3 if array.ndim == 3 and array.shape[0] != 1 else 2
    m = as_mask("mask", array, array.shape[-k:]).numpy()
    shape = m.shape
    if size > min(shape):
        raise ValueError(f"size={size} does not fit in the {'x'.join(map(str, shape))} mask")
    if not m.any():
        raise ValueError("mask is empty: there is no structure to place the RoI on")
    corners = np.meshgrid(*(np.arange(0, n - size + 1, block) for n in shape), indexing="ij")
    integral = m.astype(np.int64)
    for axis in range(k):
        integral = integral.cumsum(axis)
    integral = np.pad(integral, [(1, 0)] * k)
    inside = np.zeros(corners[0].shape, dtype=np.int64)
    for offsets in itertools.product((0, 1), repeat=k):  # inclusion-exclusion over the window's corners
        sign = (-1) ** (k - sum(offsets))
        inside += sign * integral[tuple(c + o * size for c, o in zip(corners, offsets))]
    balance = np.abs(inside / size**k - 0.5)
    centroid = np.argwhere(m).mean(axis=0)
    distance = np.sqrt(sum((c + size / 2 - centre) ** 2 for c, centre in zip(corners, centroid)))
    best = np.lexsort((distance.ravel(), balance.ravel()))[0]
    start = tuple(int(c.ravel()[best]) for c in corners)
    return (*start, *(size,) * k)


def parse_rois(roi: Roi, shape: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray, bool]:
    """RoI argument -> (R, *shape) bool masks, (R, 2 * ndim) bounding boxes, and whether several were given.

    A box is ``(row, col, height, width)`` in pixels (``(z, row, col, depth, height, width)`` in a
    volume) and must lie inside the image.

    Parameters
    ----------
    roi : box, bool mask of the image's shape, a list of them, or (R, *shape) masks
        The ``roi`` argument of an explainer.
    shape : (H, W) or (D, H, W)
        The image's (or volume's) size.

    Examples
    --------
    >>> from pdcr_lab.rois import parse_rois
    >>> masks, boxes, multi = parse_rois([(0, 0, 2, 2), (2, 2, 2, 4)], (8, 8))
    >>> tuple(masks.shape), boxes.tolist(), multi
    ((2, 8, 8), [[0, 0, 2, 2], [2, 2, 2, 4]], True)
    >>> masks, boxes, multi = parse_rois((4, 0, 0, 4, 8, 8), (8, 8, 8))
    >>> tuple(masks.shape), boxes.tolist(), int(masks.sum())
    ((1, 8, 8, 8), [[4, 0, 0, 4, 8, 8]], 256)
    """
    k = len(shape)
    kind = "image" if k == 2 else "volume"
    size_text = "x".join(map(str, shape))
    _refuse_fractional_box("roi", roi, k)
    if _is_box(roi, k):
        items, multi = [roi], False
    elif isinstance(roi, (np.ndarray, torch.Tensor)) and np.ndim(roi) == k:
        items, multi = [roi], False
    elif isinstance(roi, (np.ndarray, torch.Tensor)) and np.ndim(roi) == k + 1:
        items, multi = list(roi), True
    elif isinstance(roi, Sequence) and not isinstance(roi, str) and len(roi) > 0 and not _numbers(roi):
        items, multi = list(roi), True
    else:
        raise ValueError(
            f"roi must be a {_BOX_TEXT[k]} box, a boolean {'(D, H, W)' if k == 3 else '(H, W)'} mask or a list of "
            f"them for this {size_text} {kind}, got {describe(roi)}"
        )
    masks, boxes = [], []
    for i, item in enumerate(items):
        name = f"roi[{i}]" if multi else "roi"
        _refuse_fractional_box(name, item, k)
        if _is_box(item, k):
            start, extent = [int(v) for v in item[:k]], [int(v) for v in item[k:]]
            if min(extent) < 1:
                raise ValueError(f"{name}={tuple(item)} is empty; every extent of {_BOX_TEXT[k]} must be >= 1")
            if min(start) < 0 or any(s + e > n for s, e, n in zip(start, extent, shape)):
                raise ValueError(f"{name}={tuple(item)} {_BOX_TEXT[k]} is out of bounds for an {kind} of {size_text}")
            mask = torch.zeros(*shape, dtype=torch.bool)
            mask[tuple(slice(s, s + e) for s, e in zip(start, extent))] = True
        else:
            try:
                mask = as_mask(name, item, tuple(shape))
            except TypeError:
                raise ValueError(
                    f"{name} must be a {_BOX_TEXT[k]} box or a boolean mask of the {kind}'s shape, got {describe(item)}"
                ) from None
            if not mask.any():
                raise ValueError(f"{name} is an empty mask: it covers no pixel of the {size_text} {kind}")
        where = torch.nonzero(mask)
        low, high = where.min(dim=0).values, where.max(dim=0).values
        boxes.append((*(int(v) for v in low), *(int(v) for v in high - low + 1)))
        masks.append(mask)
    return torch.stack(masks), np.asarray(boxes, dtype=np.int64), multi


def _refuse_fractional_box(name: str, value: Any, ndim: int = 2) -> None:
    """A box-sized tuple of numbers that are not all whole: a box with fractional pixels, said as such."""
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2 * ndim
        and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)
        and not _is_box(value, ndim)
    ):
        raise ValueError(
            f"{name}={tuple(value)} has non-integer coordinates; a box is {_BOX_TEXT[ndim]} in whole "
            f"pixels: round it, e.g. tuple(int(round(v)) for v in {name})"
        )


def _numbers(value: Sequence) -> bool:
    """A flat sequence of numbers: a box (of the wrong length, when it is not this image's box)."""
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)


def _is_box(value: Any, ndim: int = 2) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2 * ndim
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    )


def snap_roi(x: float, y: float, *, size: int, block: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The ``size x size`` RoI on the `block` grid whose centre is nearest to the clicked point.

    The RoI stays inside the image. Returns ``(row, col, height, width)``.

    Parameters
    ----------
    x, y : float
        Column and row of the click, in pixels.
    size : int
        Side of the RoI in pixels.
    block : int
        Grid the RoI corner snaps to.
    shape : (H, W)
        The image's size.

    Examples
    --------
    >>> from pdcr_lab.rois import snap_roi
    >>> snap_roi(47.0, 47.0, size=16, block=8, shape=(96, 96))
    (40, 40, 16, 16)
    """
    size = check_int("size", size, minimum=1)
    block = check_int("block", block, minimum=1)
    h, w = (int(v) for v in shape)
    if size > min(h, w):
        raise ValueError(f"size={size} does not fit in the {h}x{w} image")

    def corner(centre: float, extent: int) -> int:
        start = int(round((float(centre) + 0.5 - size / 2) / block)) * block
        last = ((extent - size) // block) * block
        return int(min(max(start, 0), last))

    return corner(y, h), corner(x, w), size, size


@dataclass(frozen=True)
class RoiSpec:
    """A square region of interest: top-left corner (row, col) and its height and width, in pixels.

    Parameters
    ----------
    image_id : str
        The image the RoI belongs to.
    row, col : int
        Top-left corner in pixels of the resized image.
    height, width : int
        Size in pixels.

    Examples
    --------
    >>> spec = RoiSpec("ISIC_0024306", 96, 128, 32, 32)
    >>> spec.box, spec.slices
    ((96, 128, 32, 32), (slice(96, 128, None), slice(128, 160, None)))
    """

    image_id: str
    row: int
    col: int
    height: int
    width: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(row, col, height, width)."""
        return (self.row, self.col, self.height, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index an (..., H, W) array with ``array[..., *roi.slices]``."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def read_roi_list(path: str | os.PathLike, roi: int = 32) -> list[RoiSpec]:
    """Read a coordinate list such as the reference's ``HAM10000_block_coords_p32_b8.txt``.

    Each non-empty line is ``image_id row col`` (whitespace separated, top-left corner of a
    `roi` x `roi` region in the resized image); lines starting with ``#`` are comments.

    Parameters
    ----------
    path : path
        The text file.
    roi : int
        Side of the square RoI (the paper: 32).

    Returns
    -------
    list of RoiSpec
        In file order; pass ``[r.image_id for r in rois]`` as ``explain_ids`` to a loader.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "coords.txt"
    ...     _ = path.write_text("# image_id row col\\nISIC_0024306 96 128\\n")
    ...     rois = read_roi_list(path)
    >>> rois
    [RoiSpec(image_id='ISIC_0024306', row=96, col=128, height=32, width=32)]
    """
    roi = check_int("roi", roi, minimum=1)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RoI list {str(path)!r} does not exist")
    specs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields[1:]):
            raise ValueError(
                f"{str(path)!r}, line {number}: expected 'image_id row col' with non-negative integer "
                f"row and col, got {line!r}"
            )
        specs.append(RoiSpec(fields[0], int(fields[1]), int(fields[2]), roi, roi))
    return specs
