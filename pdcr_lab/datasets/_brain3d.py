"""Real brain MRI sub-volumes: cubes cut from nilearn's bundled MNI152 template (no download).

Mask = grey matter, by the same rule as the 2-D ``brain`` slices. The template is one averaged
brain, so the splits are disjoint regions of it: the volume is cut into octants around the brain's
centre, each octant (less a gap at the cut planes) belongs to one split, and cubes on a regular grid
inside an octant overlap each other but never a cube of another octant.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._brain import _GM_MIN, mni152

__all__ = ["DESCRIPTION", "SIDE", "VERSION", "cubes", "split_sizes"]

VERSION = 2  # 2: the grey-matter mask restricted to the brain mask (caches of version 1 may predate it)
SIDE = 32  # cube side in template voxels (2 mm): 64 mm, about a third of the brain's length
_STRIDE = 8  # largest grid step of the cubes in an octant (16 mm): neighbours overlap by >= 75%
_GAP = 1  # voxels left out on each side of a cut plane
_MIN_BRAIN = 0.25  # skip cubes whose brain covers less than this fraction
_MIN_GM = 0.05  # ... or whose grey matter covers less than this fraction
_ORDER = ("train", "val", "test")
# Octants as (x, y, z) halves, 0 = low (left, posterior, inferior). Val and test are one octant each
# and their mirror images (x flipped) stay in train, so neither held-out split mirrors the other.
_SPLIT_OF = {(0, 0, 0): "val", (1, 1, 1): "test"}
_HALF_NAMES = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))

DESCRIPTION = (
    f"Cubes of {SIDE} voxels (2 mm, 64 mm a side) cut from the MNI152 2009 T1 template (nilearn, 2 mm), "
    "resampled to `size` voxels a side, one channel; mask = grey matter (voxels where nilearn's GM "
    f"probability is >= {_GM_MIN} and >= the WM probability, inside the brain mask; resampled masks keep "
    "voxels >= 50% GM). "
    "One averaged brain, not several subjects: the volume is cut into octants at the brain's centre "
    f"(with a {2 * _GAP}-voxel gap at the cut planes), the left-posterior-inferior octant is val, the "
    "right-anterior-superior octant is test and the other six are train; cubes on a grid of "
    f"steps <= {_STRIDE} voxels overlap within an octant, never across splits. Cubes with less than "
    f"{_MIN_BRAIN:.0%} brain or {_MIN_GM:.0%} grey matter are skipped. What this limits: there is no "
    "inter-subject variability (no anatomy, contrast, scanner or pathology differences), splits are "
    "regions rather than subjects, the template is smooth (averaging blurs the cortical ribbon), and "
    "the test octant's mirror image (the left-anterior-superior octant) is in train, as is val's, so by "
    "the brain's near-symmetry test anatomy is largely seen in training; scores measure generalisation across "
    "regions of one brain, not across people."
)


def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image in [0, 1], grey-matter mask, brain mask, affine) at 2 mm, all (X, Y, Z)."""
    template, grey, brain, affine = mni152(2, "brain3d")
    inside = brain > 0.5
    # The template is skull-stripped with this mask: a few hundred GM-probable voxels outside it are
    # black in the image, so no model could find them.
    image = np.clip(template, 0.0, None)
    return image / image.max(), grey & inside, inside, affine


def _starts(low: int, high: int) -> list[int]:
    """Cube origins spread evenly over [low, high), at most `_STRIDE` apart, the ends flush."""
    if high - low < SIDE:
        return []
    n = -(-(high - SIDE - low) // _STRIDE) + 1
    return sorted({int(round(v)) for v in np.linspace(low, high - SIDE, n)})


def _orient(volume: np.ndarray) -> np.ndarray:
    """(..., X, Y, Z) -> (..., Z, Y, X) with Y reversed: axial slices, anterior up, like ``brain``."""
    return np.ascontiguousarray(np.swapaxes(volume, -1, -3)[..., ::-1, :])


def cubes(size: int, seed: int) -> dict[str, Any]:
    """All kept cubes, ordered train, val, test; `seed` is unused (the template is fixed).

    Parameters
    ----------
    size : int
        Side of the returned cubes in voxels (cut at 32 voxels of 2 mm, then resampled).
    seed : int
        Accepted for the generators' common signature; the template is fixed.

    Returns
    -------
    dict
        ``images`` (uint8 N, 1, size, size, size), ``masks`` (bool N, size, size, size), ``ids`` and
        ``meta``; axes (depth, height, width) = (inferior -> superior, anterior -> posterior,
        left -> right); ``meta["origin_xyz"]`` is the cube's lowest template voxel.
    """
    image, grey, brain, affine = _template()
    centre = [(int(i.min()) + int(i.max()) + 1) // 2 for i in np.nonzero(brain)]
    chosen: dict[str, list[tuple[tuple[int, int, int], tuple[int, int, int]]]] = {s: [] for s in _ORDER}
    for octant in itertools.product((0, 1), repeat=3):
        bounds = [(0, c - _GAP) if half == 0 else (c + _GAP, n) for half, c, n in zip(octant, centre, image.shape)]
        for origin in itertools.product(*(_starts(lo, hi) for lo, hi in bounds)):
            box = tuple(slice(o, o + SIDE) for o in origin)
            if brain[box].mean() >= _MIN_BRAIN and grey[box].mean() >= _MIN_GM:
                chosen[_SPLIT_OF.get(octant, "train")].append((origin, octant))
    order = [entry for s in _ORDER for entry in chosen[s]]
    boxes = [tuple(slice(o, o + SIDE) for o in origin) for origin, _ in order]
    images = torch.from_numpy(_orient(np.stack([image[b] for b in boxes])))[:, None]
    grey_cubes = torch.from_numpy(_orient(np.stack([grey[b] for b in boxes]).astype(np.float32)))[:, None]
    if size != SIDE:
        # Area averaging when shrinking (no aliasing), trilinear when growing; the mask keeps voxels
        # that are at least half grey matter.
        mode = {"mode": "area"} if size < SIDE else {"mode": "trilinear", "align_corners": False}
        images = F.interpolate(images, size=(size,) * 3, **mode)
        grey_cubes = F.interpolate(grey_cubes, size=(size,) * 3, **mode)
    masks = grey_cubes[:, 0] >= 0.5
    meta = []
    for (origin, octant), box, mask in zip(order, boxes, masks):
        centre_mm = affine[:3, :3] @ (np.asarray(origin) + (SIDE - 1) / 2) + affine[:3, 3]
        meta.append({
            "split": _SPLIT_OF.get(octant, "train"),
            "origin_xyz": [int(o) for o in origin],
            "side_voxels": SIDE,
            "voxel_mm": 2.0,
            "centre_mm": [round(float(v), 1) for v in centre_mm],
            "octant": "-".join(names[half] for names, half in zip(_HALF_NAMES, octant)),
            "brain_fraction": round(float(brain[box].mean()), 4),
            "gm_fraction": round(float(mask.float().mean()), 4),
        })
    return {
        "images": np.round(images.clamp(0, 1).numpy() * 255).astype(np.uint8),
        "masks": masks.numpy(),
        "ids": [f"mni152_x{x:02d}_y{y:03d}_z{z:02d}" for (x, y, z), _ in order],
        "meta": meta,
    }


def split_sizes(arrays: dict[str, Any]) -> dict[str, int]:
    """Number of cubes of each split, in the order train, val, test.

    Parameters
    ----------
    arrays : dict
        The output of :func:`cubes` (its ``meta`` names each cube's split).
    """
    splits = [m["split"] for m in arrays["meta"]]
    return {s: splits.count(s) for s in _ORDER}
