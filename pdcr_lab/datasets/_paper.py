"""Loaders for the paper's two datasets in their published folder layouts (docs/method.md section 7).

Both resize like the PdCR authors' code by default (``resample="pil"``: Pillow's antialiasing
bilinear for images, nearest for masks), since the paper's numbers come from those inputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..checks import check_choice
from ._data import SegmentationData
from ._folders import OnError, Pair, assemble, folder_pairs, from_pairs
from ._io import Resample

__all__ = ["FIVES", "HAM10000"]

_SPLITS = ("train", "val", "test")
_DISEASES = {"A": "AMD", "D": "diabetic retinopathy", "G": "glaucoma", "N": "normal"}
_FIVES_NAME = re.compile(r"^(?P<number>\d+)_(?P<letter>[ADGN])$")


def _root(root: str | os.PathLike, expected: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"root={str(path)!r} does not exist; expected {expected}")
    return path


def _ham_pairs(images_dir: Path, masks_dir: Path) -> list[Pair]:
    # Search both trees recursively: masks may sit beside the images or in their own folder
    # (the official release ships them in a separate segmentation folder).
    images = sorted(images_dir.rglob("ISIC_*.jpg"))
    if not images:
        raise ValueError(f"folder {str(images_dir)!r} holds no ISIC_*.jpg images (searched sub-folders too)")
    masks = {p.name[: -len("_segmentation.png")]: p for p in masks_dir.rglob("ISIC_*_segmentation.png")}
    return [Pair(f.stem, f, masks.get(f.stem, f.with_name(f"{f.stem}_segmentation.png"))) for f in images]


def _ham_meta(image_id: str) -> dict[str, Any]:
    return {}


def HAM10000(
    root: str | os.PathLike,
    split: str | None = None,
    size: int | None = 256,
    *,
    masks_dir: str | os.PathLike | None = None,
    split_seed: int | None = None,
    explain_ids: Iterable[str] | None = None,
    on_error: OnError = "raise",
    seed: int = 0,
    resample: Resample = "pil",
) -> SegmentationData:
    """Load HAM10000 dermoscopy images (``ISIC_xxxxxxx.jpg``) with their lesion masks.

    Layouts: ``root`` holds the images either directly (any depth, e.g. the official
    ``HAM10000_images_part_1/``) or in ``train/``, ``val/``, ``test/`` sub-folders, which become the
    splits. The mask ``ISIC_xxxxxxx_segmentation.png`` may sit anywhere under the same folder
    (beside the image, or in a masks sub-folder) or under `masks_dir` (per split if it has
    split sub-folders).

    Parameters
    ----------
    root : path
        The dataset folder.
    split : str, optional
        Load only this split; None: all splits present. The bank still comes from train.
    size : int or None
        Side after resizing (bilinear image, nearest mask, by `resample`), 256 as in the paper; None
        keeps files' size.
    masks_dir : path, optional
        Separate mask folder.
    split_seed : int, optional
        Without split folders: None gives one split ``"all"``; an int a deterministic 70/15/15
        train/val/test split of the sorted ids permuted by it.
    explain_ids : iterable of str, optional
        Images that will be explained (e.g. the ids of :func:`read_roi_list`): never in the bank.
    on_error : {"raise", "skip"}
        "raise" (default): the first bad file raises an error naming it; "skip": bad pairs
        (missing mask, unreadable file, non-binary mask, size mismatch) are left out and listed
        in one warning.
    seed : int
        Seed of the bank draw.
    resample : {"pil", "torch"}
        ``"pil"`` (default): Pillow ``BILINEAR`` (antialiased when shrinking) and ``NEAREST``, exactly
        the authors' inputs; ``"torch"``: bilinear without antialiasing and torch nearest, this
        loader's rule before (see :func:`~pdcr_lab.datasets._io.resize_pair`). Recorded in
        ``info["resample"]``.

    Returns
    -------
    SegmentationData
        Its ``.bank`` comes from the train split, or (without one) from the images not in
        `explain_ids`.
    """
    root = _root(root, "a HAM10000 folder of ISIC_*.jpg images with ISIC_*_segmentation.png masks")
    masks_root = Path(masks_dir).expanduser() if masks_dir is not None else None
    if masks_root is not None and not masks_root.is_dir():
        raise FileNotFoundError(f"masks_dir={str(masks_root)!r} does not exist")
    present = [s for s in _SPLITS if (root / s).is_dir()]
    common = dict(size=size, on_error=on_error, seed=seed, explain_ids=explain_ids, meta=_ham_meta,
                  resample=resample, info={"loader": "HAM10000", "root": root.name})
    if not present:
        return from_pairs("HAM10000", _ham_pairs(root, masks_root or root), split_seed=split_seed,
                          wanted=None if split is None else [split], **common)
    layout = {}
    for s in present:
        split_masks = masks_root / s if masks_root is not None and (masks_root / s).is_dir() else masks_root
        layout[s] = _ham_pairs(root / s, split_masks or root / s)
    wanted = present if split is None else [check_choice("split", split, present)]
    return assemble("HAM10000", layout, wanted, **common)


def _fives_meta(image_id: str) -> dict[str, Any]:
    match = _FIVES_NAME.match(image_id)
    if match is None:
        return {"disease": None, "letter": None}
    letter = match.group("letter")
    return {"disease": _DISEASES[letter], "letter": letter, "number": int(match.group("number"))}


def FIVES(
    root: str | os.PathLike,
    split: str | None = None,
    size: int | None = 256,
    *,
    explain_ids: Iterable[str] | None = None,
    on_error: OnError = "raise",
    seed: int = 0,
    resample: Resample = "pil",
) -> SegmentationData:
    """Load FIVES fundus photographs with their vessel masks.

    Layout: ``root/{train,test}/Original/*.png`` with masks of the same name in
    ``root/{train,test}/Ground truth/``. Names ``<n>_<letter>.png``: the letter A/D/G/N becomes
    metadata ``{"disease": "AMD" | "diabetic retinopathy" | "glaucoma" | "normal", "letter": ...}``.

    Parameters
    ----------
    root : path
        The dataset folder.
    split : {"train", "test"}, optional
        Load only this split; None: both. The bank always comes from train (read when first used).
    size : int or None
        Side after resizing (bilinear image, nearest mask, by `resample`), 256 as in the paper; None
        keeps files' size.
    explain_ids : iterable of str, optional
        Images that will be explained: never in the bank.
    on_error : {"raise", "skip"}
        "raise" (default): the first bad file raises an error naming it; "skip": bad pairs are left
        out and listed in one warning.
    seed : int
        Seed of the bank draw.
    resample : {"pil", "torch"}
        As in :func:`HAM10000`; ``"pil"`` (default) gives the authors' inputs.

    Returns
    -------
    SegmentationData
    """
    expected = "a FIVES folder with train/Original, train/Ground truth, test/Original and test/Ground truth"
    root = _root(root, expected)
    present = [s for s in ("train", "test") if (root / s / "Original").is_dir()]
    if not present:
        raise FileNotFoundError(f"root={str(root)!r} is not {expected}: found no {str(root / 'train' / 'Original')!r}")
    layout = {s: folder_pairs(root / s / "Original", root / s / "Ground truth", "*.png", mask_ext=".png")
              for s in present}
    wanted = present if split is None else [check_choice("split", split, present)]
    return assemble("FIVES", layout, wanted, size=size, on_error=on_error, seed=seed, explain_ids=explain_ids,
                    meta=_fives_meta, resample=resample, info={"loader": "FIVES", "root": root.name})
