"""Small vectorised drawing helpers shared by the image generators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["generate_stack", "grid", "smooth_noise", "smoothstep", "stamp_discs", "to_uint8"]


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in units of the image side, both (size, size) in (0, 1)."""
    axis = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(axis, axis, indexing="ij")


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation.

    `sigma` is in units of the image side, so a texture looks the same at every size.
    """
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), max(sigma * size, 0.3), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def stamp_discs(size: int, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Exact union of discs: pixel (i, j) is set when its centre lies within radius r_k of point k.

    `points` is (K, 2) as (row, col) in pixels (pixel centres at i + 0.5), `radii` (K,) in pixels.
    Each disc only tests the pixels of its bounding window, so the cost is K * window, not K * H * W.
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
    """
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 0, 1)


Drawn = tuple[np.ndarray, np.ndarray, dict[str, Any]]


def generate_stack(
    name: str, draw: Callable[[np.random.Generator, int], Drawn], n: int, size: int, seed: int
) -> dict[str, Any]:
    """Draw `n` images with independent per-image generators spawned from `seed`.

    Each image has its own stream, so image k is the same whatever `n` is.
    """
    images, masks, meta = [], [], []
    for child in np.random.SeedSequence(seed).spawn(n):
        image, mask, info = draw(np.random.default_rng(child), size)
        images.append(to_uint8(image))
        masks.append(mask)
        meta.append(info)
    ids = [f"{name}_{k:04d}" for k in range(n)]
    return {"images": np.stack(images), "masks": np.stack(masks), "ids": ids, "meta": meta}
