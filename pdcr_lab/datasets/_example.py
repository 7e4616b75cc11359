"""A small folder of "your own data" to try the own-data path on: fluorescence-like nuclei.

Large 16-bit grey images holding 12-bit values (as many microscopy cameras write them) and
instance-label masks (0 = background, 1..K = one nucleus each), in the layout a user's folder has:
``images/<stem>.tif`` and ``masks/<stem>.tif``. Everything the own-data path must handle is in it:
16-bit files, a dim value range, label masks, and images larger than a model's working size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..checks import check_int

__all__ = ["example_folder"]


def _nuclei(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint16, values < 4096) and its instance labels (uint16)."""
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    labels = np.zeros((side, side), np.uint16)
    signal = np.zeros((side, side), np.float32)
    count = int(rng.integers(side * side // 2600, side * side // 1700))
    for label in range(1, count + 1):
        cy, cx = rng.uniform(0, side, 2)
        a, b = rng.uniform(5, 11), rng.uniform(4, 8)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
        inside = (u**2 + v**2 < 1) & (labels == 0)  # touching nuclei keep their first label
        labels[inside] = label
        signal[inside] = rng.uniform(0.35, 1.0)  # dim and bright nuclei
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (side, side)), 1.5).astype(np.float32)
    signal = ndimage.gaussian_filter(signal * (1 + 0.25 * texture), 1.0)
    background = 0.08 + 0.04 * ndimage.gaussian_filter(rng.normal(0, 1, (side, side)), side / 8) * side / 8
    image = 180 + 3200 * (signal + background) + rng.normal(0, 40, (side, side))
    return np.clip(image, 0, 4095).astype(np.uint16), labels


def example_folder(path: str | os.PathLike[str], *, n_images: int = 4, side: int = 512, seed: int = 0) -> Path:
    """Write ``n_images`` nuclei images and their label masks under `path` (``images/``, ``masks/``).

    Parameters
    ----------
    path : path
        The folder to create (its ``images`` and ``masks`` sub-folders are written; existing
        files of the same names are replaced).
    n_images : int
        How many image/mask pairs.
    side : int
        Image side in pixels (square images; 512 shows tiling).
    seed : int
        Seed of the generator: the same seed writes the same pixels.

    Returns
    -------
    pathlib.Path
        `path`.

    Examples
    --------
    >>> import tempfile
    >>> from pdcr_lab.datasets import FolderDataset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = example_folder(tmp, n_images=2, side=128)
    ...     data = FolderDataset(root / "images", root / "masks", binarize=True, normalize="percentile", tile=64)
    >>> len(data.ids("all")), tuple(data.images("all").shape[1:])
    (8, (1, 64, 64))
    """
    import tifffile

    n_images = check_int("n_images", n_images, minimum=1)
    side = check_int("side", side, minimum=32)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    root = Path(path)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        image, labels = _nuclei(rng, side)
        tifffile.imwrite(root / "images" / f"nuclei_{k:02d}.tif", image)
        tifffile.imwrite(root / "masks" / f"nuclei_{k:02d}.tif", labels)
    return root
