"""A fundus-like generator: a branching, tapering vessel tree from the optic disc, with exact masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._synth import grid, smooth_noise, smoothstep, stamp_discs

__all__ = ["VERSION", "draw_fundus"]

VERSION = 1

_FUNDUS = np.array([0.80, 0.36, 0.14])
_DISC = np.array([1.0, 0.86, 0.56])
_VESSEL = np.array([0.42, 0.10, 0.05])
_STEP = 0.5  # walk step, in pixels of a 96-pixel image
_MIN_RADIUS = 0.5  # vessels end when they get thinner than 1 px at 96


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _segment(rng: np.random.Generator, start: np.ndarray, heading: float, target: float, pull: float, length: float):
    """A smooth curved path: heading relaxes towards `target` plus AR(1) curvature noise.

    The recursion theta_t = theta_{t-1} + pull * (target - theta_{t-1}) + c_t is linear, so lfilter
    runs it without a Python loop.
    """
    from scipy.signal import lfilter  # scipy.signal takes ~0.35 s to import: only when generating

    n = max(2, int(length / _STEP))
    curvature = lfilter([1.0], [1.0, -0.9], rng.normal(0.0, 0.012, n))
    drive = pull * target + curvature
    theta = lfilter([1.0], [1.0, -(1.0 - pull)], drive, zi=[(1.0 - pull) * heading])[0]
    steps = _STEP * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    return start + np.cumsum(steps, axis=0), theta


def _tree(rng: np.random.Generator, root: np.ndarray, heading: float, radius: float, target: float,
          pull: float, centre: np.ndarray, fov_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Grow one vessel tree; returns its centreline points and radii (96-pixel units)."""
    points, radii = [], []
    stack = [(root, heading, radius, target, pull)]
    while stack:
        start, head, r, tgt, pl = stack.pop()
        length = rng.uniform(6.0, 14.0) * (0.5 + r)
        path, theta = _segment(rng, start, head, _wrap(tgt - head) + head, pl, length)
        inside = np.hypot(*(path - centre).T) < fov_radius - 0.5
        stop = int(np.argmin(inside)) if not inside.all() else len(path)
        taper = np.linspace(r, r * 0.9, len(path))
        points.append(path[:stop])
        radii.append(taper[:stop])
        if stop < len(path):
            continue  # left the field of view
        end_r = r * 0.9
        main_r, side_r = end_r * rng.uniform(0.85, 0.95), end_r * rng.uniform(0.5, 0.75)
        turn = rng.choice([-1.0, 1.0])
        for child_r, angle in ((main_r, -turn * rng.uniform(0.1, 0.3)), (side_r, turn * rng.uniform(0.5, 1.0))):
            if child_r >= _MIN_RADIUS:
                child_heading = theta[-1] + angle
                # Side branches wander freely; the main continuation keeps the arcade's course.
                child_target, child_pull = (tgt, pl) if child_r == main_r else (child_heading, 0.02)
                stack.append((path[-1], child_heading, child_r, child_target, child_pull))
    return np.concatenate(points), np.concatenate(radii)


def draw_fundus(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One (H, W, 3) float image in [0, 1], its bool vessel mask and its metadata.

    Parameters
    ----------
    rng : numpy.random.Generator
        The image's own random stream.
    size : int
        Image side in pixels (the geometry is drawn at 96 and scaled).
    """
    scale = size / 96.0
    y, x = grid(size)
    centre96 = np.array([48.0, 48.0])
    fov_r96 = 44.0
    side = 1.0 if rng.random() < 0.5 else -1.0  # +1: disc on the right (a right eye)
    disc96 = centre96 + [rng.uniform(-3, 3), side * rng.uniform(22, 27)]
    fovea96 = centre96 + [rng.uniform(-2, 2), -side * rng.uniform(3, 7)]

    vessels = np.zeros((size, size))
    mask = np.zeros((size, size), dtype=bool)
    # Arcades as (initial direction, target direction, pull, radius range), in (row, col) with the
    # temporal side along -side: the temporal arcades leave the disc vertically and bend round the
    # fovea; the nasal ones fan out towards the nasal edge; thin macular branches head to the fovea.
    arcades = [
        ((-1.0, -0.25 * side), (0.12, -side), 0.02, (1.3, 1.5)),
        ((1.0, -0.25 * side), (-0.12, -side), 0.02, (1.3, 1.5)),
        ((-0.8, 0.6 * side), (-0.35, side), 0.015, (1.0, 1.2)),
        ((0.8, 0.6 * side), (0.35, side), 0.015, (1.0, 1.2)),
        ((-0.3, -side), (0.0, -side), 0.02, (0.6, 0.75)),
        ((0.3, -side), (0.0, -side), 0.02, (0.6, 0.75)),
    ]
    for k, (direction, target, pull, radius_range) in enumerate(arcades):
        jitter = rng.normal(0.0, 0.12)
        heading = float(np.arctan2(*direction)) + jitter
        pts, radii = _tree(rng, disc96, heading, rng.uniform(*radius_range), float(np.arctan2(*target)),
                           pull, centre96, fov_r96)
        tree = stamp_discs(size, pts * scale, np.maximum(radii * scale, 0.55))
        mask |= tree
        # Veins (darker) and arteries (lighter) alternate between neighbouring arcades.
        darkness = rng.uniform(0.5, 0.65) if k % 2 else rng.uniform(0.7, 0.85)
        vessels = np.maximum(vessels, ndimage.gaussian_filter(tree.astype(np.float64), 0.45 * max(scale, 1.0)) * darkness)

    centre, fov_r = centre96 / 96.0, fov_r96 / 96.0
    r = np.hypot(y - centre[0], x - centre[1]) / fov_r
    fov = r < 1.0
    mask &= fov

    tone = _FUNDUS * rng.uniform(0.85, 1.1, size=3) * rng.uniform(0.85, 1.05)
    gradient = rng.normal(0, 0.12, size=2)
    light = 1.0 - 0.35 * r**2 + gradient[0] * (y - 0.5) + gradient[1] * (x - 0.5)
    texture = 1.0 + 0.05 * smooth_noise(rng, size, 0.05) + 0.03 * smooth_noise(rng, size, 0.01)
    image = tone[None, None] * (light * texture)[..., None]
    d_fovea = np.hypot(y - fovea96[0] / 96, x - fovea96[1] / 96)
    image *= 1.0 - rng.uniform(0.3, 0.45) * np.exp(-(d_fovea**2) / (2 * 0.05**2))[..., None]
    d_disc = np.hypot(y - disc96[0] / 96, x - disc96[1] / 96)
    disc = 1.0 - smoothstep(0.05, 0.075, d_disc) * 0.75 - smoothstep(0.075, 0.12, d_disc) * 0.25
    image = image * (1 - disc[..., None]) + _DISC * disc[..., None]
    image = image * (1 - vessels[..., None]) + _VESSEL * tone / _FUNDUS * vessels[..., None]
    image *= (1.0 - smoothstep(0.97, 1.01, r))[..., None]
    image += 0.01
    meta = {
        "vessel_fraction": round(float(mask.sum() / fov.sum()), 4),
        "eye": "right" if side > 0 else "left",
        "disc": [round(float(v * scale), 2) for v in disc96],
        "fovea": [round(float(v * scale), 2) for v in fovea96],
    }
    return image, mask, meta
