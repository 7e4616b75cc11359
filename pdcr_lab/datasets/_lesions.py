"""A dermoscopy-like generator: pigmented skin lesions with exact masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ._synth import grid, smooth_noise, smoothstep, stamp_discs

__all__ = ["VERSION", "draw_lesion"]

VERSION = 2

# Skin tones and lesion pigments in linear RGB, picked by eye from dermoscopy pictures.
_SKIN = np.array([[0.95, 0.80, 0.72], [0.90, 0.68, 0.58], [0.80, 0.58, 0.47], [0.93, 0.74, 0.72]])
_PIGMENT = {
    "brown": np.array([0.55, 0.34, 0.22]),
    "dark": np.array([0.30, 0.20, 0.17]),
    "reddish": np.array([0.66, 0.36, 0.32]),
    "light brown": np.array([0.72, 0.50, 0.38]),
}
_HAIR = np.array([0.16, 0.11, 0.08])


def _lesion_shape(rng: np.random.Generator, size: int, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """An irregular blob: a perturbed radial function, sometimes merged with a satellite blob."""
    small = rng.random() < 0.1
    radius = rng.uniform(0.09, 0.14) if small else rng.uniform(0.2, 0.36)
    cy, cx = 0.5 + rng.uniform(-0.12, 0.12, size=2)
    angle = np.arctan2(y - cy, x - cx)
    # Low harmonics give the overall asymmetry, higher ones a ragged border.
    k = np.arange(2, 9)
    amp = rng.uniform(0.0, 1.0, size=k.size) * 0.22 / k**0.8
    phase = rng.uniform(0, 2 * np.pi, size=k.size)
    squash = rng.uniform(0.75, 1.0)
    tilt = rng.uniform(0, np.pi)
    u = (x - cx) * np.cos(tilt) + (y - cy) * np.sin(tilt)
    v = (-(x - cx) * np.sin(tilt) + (y - cy) * np.cos(tilt)) / squash
    r_of_theta = radius * (1.0 + (amp[:, None, None] * np.cos(k[:, None, None] * angle + phase[:, None, None])).sum(0))
    mask = np.hypot(u, v) < r_of_theta
    if not small and rng.random() < 0.4:
        theta = rng.uniform(0, 2 * np.pi)
        sy, sx = cy + 0.8 * radius * np.sin(theta), cx + 0.8 * radius * np.cos(theta)
        mask |= np.hypot(y - sy, x - sx) < radius * rng.uniform(0.3, 0.55)
    return mask, small


def _hairs(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """Hair opacity (H, W) in [0, 1]: thin dark quadratic curves crossing the field."""
    n = 0 if rng.random() < 0.35 else int(rng.integers(1, 7))
    if n == 0:
        return np.zeros((size, size)), 0
    t = np.linspace(0.0, 1.0, 6 * size)[None, :, None]
    ends = rng.uniform(-0.1, 1.1, size=(n, 2, 2))
    bend = ends.mean(axis=1) + rng.normal(0, 0.3, size=(n, 2))
    curve = (1 - t) ** 2 * ends[:, :1] + 2 * t * (1 - t) * bend[:, None] + t**2 * ends[:, 1:]
    points = curve.reshape(-1, 2) * size
    width = np.repeat(rng.uniform(0.55, 0.8, size=n), t.shape[1]) * max(1.0, size / 96)
    lines = stamp_discs(size, points, width).astype(np.float64)
    return np.clip(ndimage.gaussian_filter(lines, 0.6) * 1.7, 0.0, 0.85), n


def draw_lesion(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One (H, W, 3) float image in [0, 1], its bool lesion mask and its metadata.

    Parameters
    ----------
    rng : numpy.random.Generator
        The image's own random stream.
    size : int
        Image side in pixels.
    """
    y, x = grid(size)
    weights = rng.dirichlet(np.full(len(_SKIN), 0.5))
    skin = weights @ _SKIN
    texture = 0.05 * smooth_noise(rng, size, 0.12) + 0.02 * smooth_noise(rng, size, 0.01)
    image = skin[None, None, :] * (1.0 + texture[..., None])
    image = image * (1 - 0.08 * rng.random()) + 0.02 * smooth_noise(rng, size, 0.2)[..., None] * [1.0, 0.4, 0.4]

    mask, small = _lesion_shape(rng, size, y, x)
    colour = str(rng.choice(list(_PIGMENT)))
    pigment = _PIGMENT[colour] * rng.uniform(0.85, 1.1)
    # Variegation: darker blotches and a faint dotted network, limited to the lesion.
    blotch = smoothstep(0.2, 1.5, smooth_noise(rng, size, 0.04))
    dots = smoothstep(1.2, 2.2, smooth_noise(rng, size, 0.008))
    dist_in = ndimage.distance_transform_edt(mask) / size
    centre_dark = smoothstep(0.0, 0.15, dist_in) * rng.uniform(0.0, 0.35)
    shade = 1.0 - 0.45 * blotch - 0.25 * dots - centre_dark
    lesion_rgb = pigment[None, None, :] * shade[..., None]
    sharp = rng.random() < 0.5
    blur = rng.uniform(0.3, 0.8) if sharp else rng.uniform(1.5, 3.5)
    alpha = ndimage.gaussian_filter(mask.astype(np.float64), blur * size / 96) * rng.uniform(0.85, 1.0)
    image = image * (1 - alpha[..., None]) + lesion_rgb * alpha[..., None]

    hair, n_hairs = _hairs(rng, size)
    image = image * (1 - hair[..., None]) + _HAIR * hair[..., None]

    # Dermoscope field: a soft illumination fall-off and, often, dark circular corners.
    r = np.hypot(y - 0.5, x - 0.5) / 0.5
    image *= 1.0 - 0.15 * smoothstep(0.4, 1.4, r)[..., None]
    vignette = rng.random() < 0.6
    if vignette:
        edge = rng.uniform(0.95, 1.25)
        image *= 1.0 - 0.95 * smoothstep(edge - 0.08, edge + 0.04, r)[..., None]
    meta = {
        "lesion_fraction": round(float(mask.mean()), 4),
        "colour": colour,
        "border": "sharp" if sharp else "blurred",
        "small": bool(small),
        "hairs": n_hairs,
        "vignetting": bool(vignette),
    }
    return image, mask, meta
