"""A volumetric vessel generator: a branching, tapering tube tree entering through one face of a
textured, noisy volume with bright distractor blobs; the mask is the exact tube voxels.

Like contrast-enhanced angiography (CTA, MRA): vessels are bright on a darker, uneven background.
The blobs are as bright as the vessels but round, so a model has to use shape, not intensity alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._synth import generate_stack

__all__ = ["DESCRIPTION", "SPLITS", "VERSION", "draw_tree", "draw_volume", "generate", "split_sizes", "stamp_tubes"]

VERSION = 1
SPLITS = {"train": 160, "val": 24, "test": 24}
_UNIT = 32.0  # the geometry is drawn in a 32-voxel cube and scaled to `size`
_STEP = 1.5  # centreline step (32-voxel units); curvature is mild, so chords this long follow the curve
_MIN_RADIUS = 0.9  # stamped radius floor, in voxels: below sqrt(3) / 2 a tube can miss voxel centres and break
_END_RADIUS = 0.5  # branches thinner than this (32-voxel units) are not grown
_MAX_PIECES = 96  # cap on branch pieces, to bound the time per volume
_PULL = 0.6  # how strongly a new branch turns back towards the centre (keeps the tree inside)
_FACES = ("z-", "z+", "y-", "y+", "x-", "x+")

DESCRIPTION = (
    "Generated volumes like contrast-enhanced angiography, one channel: one bright branching vessel "
    "tree enters through a random face and tapers as it branches (curved centrelines, radius from "
    "about 3 down to 0.9 voxels at 32), on a dark background with smooth texture, a bias field, white "
    "noise and 2-5 bright round distractor blobs; the tube edges are partial-volume blurred. "
    "mask = the exact vessel voxels (centre within the tapered tube), one 26-connected tree touching "
    "its entry face; blobs are not in the mask. Splits train/val/test = "
    f"{SPLITS['train']}/{SPLITS['val']}/{SPLITS['test']} independent volumes from the seed."
)


def stamp_tubes(size: int, starts: np.ndarray, ends: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Partial-volume occupancy of a union of tapered capsules (segments with a linear radius).

    A voxel's occupancy is ``clip(r(t) - distance + 0.5, 0, 1)`` for its nearest segment point t, so
    ``occupancy > 0.5`` is exactly "centre inside the tube". Each segment only visits the voxels of
    a window around it, so the cost is K * window, not K * size^3.

    Parameters
    ----------
    size : int
        Side of the (size, size, size) volume.
    starts, ends : array (K, 3)
        Segment end points as (d, h, w) in voxels (voxel centres at i + 0.5).
    radii : array (K, 2)
        Radius at the start and at the end of each segment, in voxels.

    Examples
    --------
    >>> tube = stamp_tubes(8, np.array([[4.0, 4.0, 0.0]]), np.array([[4.0, 4.0, 8.0]]), np.array([[1.0, 1.0]]))
    >>> (tube > 0.5).sum(axis=2)[2:6, 2:6]        # four voxels per slice across the tube, all along it
    array([[0, 0, 0, 0],
           [0, 8, 8, 0],
           [0, 8, 8, 0],
           [0, 0, 0, 0]])
    """
    volume = np.zeros(size**3, dtype=np.float32)
    if len(starts) == 0:
        return volume.reshape((size,) * 3)
    starts, ends, radii = (np.asarray(v, dtype=np.float32) for v in (starts, ends, radii))
    axis = ends - starts
    # Segments are grouped by the window they need, so thin twigs do not pay for the trunk's window.
    reach = np.ceil(np.sqrt((axis**2).sum(axis=1)) / 2 + radii.max(axis=1)).astype(int) + 1
    for r in np.unique(reach):
        k = reach == r
        span = np.arange(-r, r + 1, dtype=np.float32)
        offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
        a, ab, rad = starts[k][:, None], axis[k][:, None], radii[k]
        voxels = np.floor((starts[k] + ends[k]) / 2)[:, None, :] + offsets[None]  # (K, W, 3)
        centres = voxels + 0.5
        t = np.clip(((centres - a) * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12), 0.0, 1.0)
        distance = np.sqrt(((centres - a - t[..., None] * ab) ** 2).sum(-1))
        occupancy = np.clip(rad[:, :1] + t * (rad[:, 1:] - rad[:, :1]) - distance + 0.5, 0.0, 1.0)
        keep = (occupancy > 0) & ((voxels >= 0) & (voxels < size)).all(axis=-1)
        flat = np.ravel_multi_index(voxels[keep].astype(np.intp).T, (size,) * 3)
        np.maximum.at(volume, flat, occupancy[keep])
    return volume.reshape((size,) * 3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _path(rng: np.random.Generator, start: np.ndarray, heading: np.ndarray, length: float) -> np.ndarray:
    """A smooth curved centreline: the heading drifts by an integrated (smooth) random walk."""
    n = max(2, int(length / _STEP))
    drift = np.cumsum(np.cumsum(rng.normal(0.0, 0.012, (n, 3)), axis=0), axis=0)
    steps = _STEP * _unit(heading + drift)
    return np.concatenate([start[None], start + np.cumsum(steps, axis=0)])


def _turn(rng: np.random.Generator, heading: np.ndarray, angle: float) -> np.ndarray:
    """`heading` turned by `angle` radians towards a random perpendicular direction."""
    other = _unit(np.cross(heading, rng.normal(size=3)))
    return _unit(np.cos(angle) * heading + np.sin(angle) * other)


def draw_tree(rng: np.random.Generator, root: np.ndarray, heading: np.ndarray, radius: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Grow one vessel tree inside the 32-unit cube.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random stream of the tree.
    root, heading : array (3,)
        Entry point and unit direction (32-voxel units).
    radius : float
        Radius at the root.

    Returns
    -------
    starts, ends : array (K, 3)
        Centreline segments.
    radii : array (K, 2)
        Radius at both ends of each segment.
    pieces : int
        Branch pieces grown.
    """
    starts, ends, radii = [], [], []
    stack = [(root, heading, radius)]
    pieces = 0
    while stack and pieces < _MAX_PIECES:
        start, head, r = stack.pop(0)  # breadth first: the cap trims the thinnest twigs, not a trunk
        pieces += 1
        path = _path(rng, start, head, rng.uniform(6.0, 11.0) * (0.6 + 0.4 * r))
        inside = ((path >= 0.0) & (path < _UNIT)).all(axis=1)
        inside[0] = True  # the root may start just outside its face
        left = not inside.all()
        stop = int(np.argmin(inside)) + 1 if left else len(path)  # keep the first point outside
        taper = np.linspace(r, r * 0.9, len(path))
        starts.append(path[: stop - 1])
        ends.append(path[1:stop])
        radii.append(np.stack([taper[: stop - 1], taper[1:stop]], axis=1))
        if left:
            continue
        end_head = _unit(path[-1] - path[-2])
        end_r = r * 0.9
        main_r, side_r = end_r * rng.uniform(0.85, 0.95), end_r * rng.uniform(0.6, 0.8)
        home = _unit(_UNIT / 2 - path[-1])
        for child_r, angle in ((main_r, rng.uniform(0.15, 0.4)), (side_r, rng.uniform(0.6, 1.2))):
            if child_r >= _END_RADIUS:
                stack.append((path[-1], _unit(_turn(rng, end_head, angle) + _PULL * home), child_r))
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(radii), pieces


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth 3-D noise, zero mean and unit variance; `sigma` is a fraction of the side."""
    field = ndimage.gaussian_filter(rng.standard_normal((size,) * 3), max(sigma * size, 0.3), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def draw_volume(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One (size, size, size) float volume in [0, 1], its bool vessel mask and its metadata.

    Parameters
    ----------
    rng : numpy.random.Generator
        The volume's own random stream.
    size : int
        Volume side in voxels (the geometry is drawn at 32 and scaled).
    """
    scale = size / _UNIT
    face = int(rng.integers(6))
    axis, sign = face // 2, (-1.0 if face % 2 == 0 else 1.0)
    root = rng.uniform(9.0, 23.0, size=3)
    root[axis] = -0.5 if sign < 0 else _UNIT + 0.5  # just outside, so the tube cuts the face
    inward = np.zeros(3)
    inward[axis] = -sign
    heading = _unit(inward + rng.normal(0.0, 0.25, 3))
    starts, ends, radii, pieces = draw_tree(rng, root, heading, rng.uniform(2.5, 3.3))
    tubes = stamp_tubes(size, starts * scale, ends * scale, np.maximum(radii * scale, _MIN_RADIUS))
    mask = tubes > 0.5

    d, h, w = np.meshgrid(*[(np.arange(size) + 0.5) / size] * 3, indexing="ij")
    blobs = np.zeros((size,) * 3)
    n_blobs = int(rng.integers(2, 6))
    for _ in range(n_blobs):
        centre, axes = rng.uniform(0.1, 0.9, 3), rng.uniform(1.5, 3.5, 3) / _UNIT
        r = np.sqrt(sum(((c - m) / a) ** 2 for c, m, a in zip((d, h, w), centre, axes)))
        blobs = np.maximum(blobs, rng.uniform(0.6, 1.1) * np.clip(1.5 - r, 0.0, 1.0))

    level = rng.uniform(0.12, 0.28)
    bias = rng.normal(0.0, 0.15, 3) @ np.stack([d - 0.5, h - 0.5, w - 0.5]).reshape(3, -1)
    texture = 0.05 * _noise(rng, size, 0.08) + 0.025 * _noise(rng, size, 0.02)
    background = level + bias.reshape((size,) * 3) + texture
    contrast = rng.uniform(0.4, 0.6)
    bright = np.maximum(ndimage.gaussian_filter(tubes, 0.4 * max(scale, 1.0)), blobs)
    image = background + contrast * bright + rng.normal(0.0, rng.uniform(0.02, 0.05), (size,) * 3)
    meta = {
        "vessel_fraction": round(float(mask.mean()), 4),
        "entry_face": _FACES[face],
        "entry_dhw": [round(float(v * scale), 2) for v in root],
        "root_radius": round(float(radii[0, 0] * scale), 2),
        "branches": pieces,
        "blobs": n_blobs,
    }
    return np.clip(image, 0.0, 1.0), mask, meta


def generate(size: int, seed: int) -> dict[str, Any]:
    """All volumes of the train, val and test splits, each from its own stream spawned from `seed`.

    Parameters
    ----------
    size : int
        Volume side in voxels.
    seed : int
        Seed the per-volume streams are spawned from (volume k is the same whatever the split sizes).

    Returns
    -------
    dict
        ``images`` (uint8 N, 1, size, size, size), ``masks`` (bool N, size, size, size), ``ids``
        and ``meta``.
    """
    def draw(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        volume, mask, info = draw_volume(rng, side)
        return volume[None], mask, info  # one channel

    return generate_stack("vessels3d", draw, sum(SPLITS.values()), size, seed, channels_first=True)


def split_sizes(arrays: dict[str, Any]) -> dict[str, int]:
    """The fixed split sizes, in the order train, val, test.

    Parameters
    ----------
    arrays : dict
        The output of :func:`generate` (accepted for the registry's common signature; unused).
    """
    return dict(SPLITS)
