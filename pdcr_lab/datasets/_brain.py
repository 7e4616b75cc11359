"""Real brain MRI slices: the MNI152 template that nilearn ships inside its wheel (no download).

Mask = grey matter. The cortical ribbon is thin, folded and follows the whole outline of the
brain, so explaining it exercises both local evidence (intensity at the GM/WM border) and global
shape, much like the vessel set; the white-matter mask is one compact blob and asks less of a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DESCRIPTION", "VERSION", "mni152", "slices", "split_sizes"]

VERSION = 3
_CHUNK = 6  # consecutive slices per split chunk
# Train, val and test chunks interleaved so the test split holds >= 32 slices (65 / 20 / 35 at 96 px):
# the strategies study explains 32 test images per model.
_PATTERN = ("train", "train", "test", "train", "val", "test")
_MIN_BRAIN = 0.05  # skip slices whose brain covers less than this fraction of the square slice
_ORDER = ("train", "val", "test")
_GM_MIN = 0.3

DESCRIPTION = (
    "Axial slices of the MNI152 2009 T1 template (nilearn, 1 mm, cropped to the brain), one channel; "
    "mask = grey matter (voxels where nilearn's GM probability is >= 0.3 and >= the WM probability, "
    "area-resampled, >= 50% GM). One averaged brain, not several subjects: "
    f"train/val/test are disjoint ranges of slices (chunks of {_CHUNK} consecutive slices assigned "
    "train, train, test, train, val, test in turn; the first slice after a change of split is dropped as a gap). "
    "Slices with little brain are skipped."
)


def mni152(resolution: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """nilearn's bundled MNI152 2009 template at `resolution` mm: (T1, grey-matter mask, brain mask, affine).

    Grey matter = voxels where the GM probability is >= 0.3 and >= the WM probability (nilearn's own GM
    mask is thresholded at 0.2 and dilated, so it swallows much white matter; "grey matter is the
    likelier tissue and at least 30% likely" follows the cortical ribbon). All arrays are (X, Y, Z).

    Parameters
    ----------
    resolution : {1, 2}
        Voxel size in mm.
    name : str
        The dataset asking, for the message when nilearn is missing.
    """
    try:
        from nilearn import datasets as nl
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise ImportError(f"the {name!r} dataset needs nilearn (pip install nilearn)") from exc
    try:
        template = nl.load_mni152_template(resolution=resolution)
        gm = nl.load_mni152_gm_template(resolution=resolution)
        wm = nl.load_mni152_wm_template(resolution=resolution)
        brain = nl.load_mni152_brain_mask(resolution=resolution)
    except Exception as exc:  # these loaders read files inside the wheel; any failure is an install problem
        raise RuntimeError(
            "nilearn could not load its bundled MNI152 template (it should need no network); "
            f"check the nilearn installation: {exc}"
        ) from exc
    gm_prob, wm_prob = gm.get_fdata(dtype=np.float32), wm.get_fdata(dtype=np.float32)
    grey = (gm_prob >= wm_prob) & (gm_prob >= _GM_MIN)
    return (template.get_fdata(dtype=np.float32), grey, brain.get_fdata(dtype=np.float32),
            np.asarray(template.affine))


def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    template, grey, brain, affine = mni152(1, "brain")
    return template, grey.astype(np.float32), brain, affine


def _axial(volume: np.ndarray) -> torch.Tensor:
    """(X, Y, Z) volume -> (Z, 1, S, S) square axial slices, anterior up, zero-padded."""
    slices = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 1, 0)[:, ::-1, :]))
    h, w = slices.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(slices, (left, side - w - left, top, side - h - top))[:, None]


def slices(size: int, seed: int) -> dict[str, Any]:
    """All kept slices, ordered train, val, test; `seed` is unused (the template is fixed).

    Parameters
    ----------
    size : int
        Side of the square slices in pixels.
    seed : int
        Accepted for the generators' common signature; the template is fixed.

    Returns
    -------
    dict
        ``images`` (uint8 N, 1, size, size), ``masks`` (bool N, size, size), ``ids`` and ``meta``.
    """
    template, gm, brain, affine = _volumes()
    # Crop x and y to the brain's bounding box (plus a margin) so the brain fills the square.
    xs, ys = np.nonzero(brain.any(axis=2).astype(bool))
    box = (slice(max(xs.min() - 4, 0), xs.max() + 5), slice(max(ys.min() - 4, 0), ys.max() + 5))
    template, gm, brain = (v[box] for v in (template, gm, brain))
    image = F.interpolate(_axial(template), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    grey = F.interpolate(_axial(gm), size=(size, size), mode="area")[:, 0] >= 0.5
    brain_frac = _axial(brain).mean(dim=(1, 2, 3)).numpy()
    image = (image / image.amax()).clamp(0, 1)
    kept = [z for z in range(len(brain_frac)) if brain_frac[z] >= _MIN_BRAIN and grey[z].any()]
    chosen: dict[str, list[int]] = {s: [] for s in _ORDER}
    previous = None
    for k, z in enumerate(kept):
        split = _PATTERN[(k // _CHUNK) % len(_PATTERN)]
        if previous is not None and split != previous and k % _CHUNK == 0:
            previous = split
            continue  # gap slice: neighbours across a split border are nearly identical
        previous = split
        chosen[split].append(z)
    order = [z for s in _ORDER for z in chosen[s]]
    meta = [
        {
            "split": s,
            "slice": z,
            "axis": "axial",
            "z_mm": round(float(affine[2, 2] * z + affine[2, 3]), 1),
            "gm_fraction": round(float(grey[z].float().mean()), 4),
        }
        for s in _ORDER
        for z in chosen[s]
    ]
    return {
        "images": np.round(image[order].numpy() * 255).astype(np.uint8),
        "masks": grey[order].numpy(),
        "ids": [f"mni152_z{z:03d}" for z in order],
        "meta": meta,
    }


def split_sizes(arrays: dict[str, Any]) -> dict[str, int]:
    """Number of slices of each split, in the order train, val, test.

    Parameters
    ----------
    arrays : dict
        The output of :func:`slices` (its ``meta`` names each slice's split).
    """
    splits = [m["split"] for m in arrays["meta"]]
    return {s: splits.count(s) for s in _ORDER}
