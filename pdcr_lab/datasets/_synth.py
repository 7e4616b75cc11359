"""Small vectorised drawing helpers shared by the image generators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["generate_stack", "grid", "smooth_noise", "smoothstep", "stamp_discs", "to_uint8"]


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in units of the image side, both (size, size) in (0, 1).

    Parameters
    ----------
    size : int
        Image side in pixels.

    Examples
    --------
    >>> y, x = grid(4)
    >>> x[0]
    array([0.125, 0.375, 0.625, 0.875])
    """
    axis = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(axis, axis, indexing="ij")


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation.

    `sigma` is in units of the image side, so a texture looks the same at every size.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the white noise.
    size : int
        Image side in pixels.
    sigma : float
        Standard deviation of the Gaussian filter, as a fraction of `size` (at least 0.3 pixels).

    Examples
    --------
    >>> field = smooth_noise(np.random.default_rng(0), 32, 0.05)
    >>> field.shape, round(float(field.mean()), 6), round(float(field.std()), 6)
    ((32, 32), 0.0, 1.0)
    """
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), max(sigma * size, 0.3), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """The cubic Hermite step 3t^2 - 2t^3 of t = (x - edge0) / (edge1 - edge0) clipped to [0, 1].

    Parameters
    ----------
    edge0, edge1 : float
        Where the step starts (0) and ends (1); ``edge1 < edge0`` gives a falling step.
    x : array
        Where to evaluate it.

    Examples
    --------
    >>> smoothstep(0.0, 1.0, np.array([-1.0, 0.25, 0.5, 2.0]))
    array([0.     , 0.15625, 0.5    , 1.     ])
    """
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def stamp_discs(size: int, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Exact union of discs: pixel (i, j) is set when its centre lies within radius r_k of point k.

    Each disc only tests the pixels of its bounding window, so the cost is K * window, not K * H * W.

    Parameters
    ----------
    size : int
        Side of the (size, size) mask.
    points : array (K, 2)
        Disc centres as (row, col) in pixels (pixel centres at i + 0.5).
    radii : array (K,)
        Disc radii in pixels.

    Examples
    --------
    >>> stamp_discs(5, np.array([[2.5, 2.5]]), np.array([1.2])).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    mask = np.zeros((size, size), dtype=bool)
    if len(points) == 0:
        return mask
    reach = int(np.ceil(radii.max())) + 1
    offsets = np.arange(-reach, reach + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    rows = np.floor(points[:, 0])[:, None] + dy.ravel()[None, :]
    cols = np.floor(points[:, 1])[:, None] + dx.ravel()[None, :]
    dist2 = (rows + 0.5 - points[:, :1]) ** 2 + (cols + 0.5 - points[:, 1:]) ** 2
    keep = (dist2 < radii[:, None] ** 2) & (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    mask[rows[keep].astype(np.intp), cols[keep].astype(np.intp)] = True
    return mask


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float image -> (C, H, W) uint8, the way a camera stores it.

    Generated images are quantised to 8 bits like real photographs; it also makes the cache
    small and keeps cached and fresh output bit-identical.

    Parameters
    ----------
    image : float array (H, W, C)
        Values in [0, 1] (clipped).

    Examples
    --------
    >>> to_uint8(np.array([[[0.0, 0.5, 2.0]]]))[:, 0, 0]
    array([  0, 128, 255], dtype=uint8)
    """
    return _quantised(image).transpose(2, 0, 1)


def _quantised(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


Drawn = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def generate_stack(
    name: str, draw: Callable[[np.random.Generator, int], Drawn], n: int, size: int, seed: int, *,
    channels_first: bool = False,
) -> dict[str, Any]:
    """Draw `n` images with independent per-image generators spawned from `seed`.

    Each image has its own stream, so image k is the same whatever `n` is.

    Parameters
    ----------
    name : str
        Prefix of the image ids (``<name>_0000``, ...).
    draw : callable(rng, size) -> (image (H, W, C) float, mask (H, W) bool, meta dict)
        Draws one image.
    n : int
        Number of images.
    size : int
        Image side in pixels.
    seed : int
        Seed the per-image streams are spawned from.
    channels_first : bool
        `draw` returns (C, ...) images (volumes (C, D, H, W) included) instead of (H, W, C).

    Returns
    -------
    dict
        ``images`` (uint8 N, C, H, W or N, C, D, H, W), ``masks`` (bool N, ...), ``ids`` and ``meta``.

    Examples
    --------
    >>> def draw(rng, size):
    ...     return np.full((size, size, 1), rng.random()), np.zeros((size, size), bool), {}
    >>> three, two = generate_stack("demo", draw, 3, 4, seed=0), generate_stack("demo", draw, 2, 4, seed=0)
    >>> three["ids"], bool((three["images"][:2] == two["images"]).all())
    (['demo_0000', 'demo_0001', 'demo_0002'], True)
    """
    images, masks, meta = [], [], []
    for child in np.random.SeedSequence(seed).spawn(n):
        image, mask, info = draw(np.random.default_rng(child), size)
        images.append(_quantised(image) if channels_first else to_uint8(image))
        masks.append(mask)
        meta.append(info)
    ids = [f"{name}_{k:04d}" for k in range(n)]
    return {"images": np.stack(images), "masks": np.stack(masks), "ids": ids, "meta": meta}
