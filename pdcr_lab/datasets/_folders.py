"""Image/mask folders on disk -> SegmentationData, with the shared bad-file policy.

The paper loaders (HAM10000, FIVES) only describe where their files are; reading, checking,
resizing, splitting and the bank all happen here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..checks import check_choice, check_int
from ..banks import PatchBank
from ._data import SegmentationData, build_bank
from ._io import Scaling, check_scaling, read_mask, read_scaled, resize_pair

__all__ = ["FolderDataset", "Pair", "assemble", "folder_pairs", "from_pairs", "list_files", "seeded_split"]

OnError = Literal["raise", "skip"]
MetaFn = Callable[[str], dict[str, Any]]
#: Fractions of the deterministic train/val/test split used when a folder has no split structure.
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class Pair:
    """One image file and the path where its mask should be.

    Parameters
    ----------
    id : str
        The image's name (its file stem).
    image : pathlib.Path
        The image file.
    mask : pathlib.Path
        Where its mask should be (it may be missing: the reader reports it).
    """

    id: str
    image: Path
    mask: Path


def list_files(folder: Path, pattern: str, what: str) -> list[Path]:
    """Sorted files matching `pattern` in `folder`; clear errors for a missing or empty folder.

    Parameters
    ----------
    folder : pathlib.Path
        The folder to list.
    pattern : str
        Glob pattern, e.g. ``"*.png"``.
    what : str
        What the folder holds (``"images"``), for the messages.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     list_files(Path(folder), "*.png", "images")
    Traceback (most recent call last):
    ...
    ValueError: images folder '...' holds no files matching '*.png'
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise ValueError(f"{what} folder {str(folder)!r} holds no files matching {pattern!r}")
    return files


def folder_pairs(images_dir: Path, masks_dir: Path, pattern: str, mask_tail: str) -> list[Pair]:
    """Pairs ``images_dir/<stem>.*`` -> ``masks_dir/<stem><mask_tail>``.

    Parameters
    ----------
    images_dir : pathlib.Path
        Folder of the images.
    masks_dir : pathlib.Path
        Folder of the masks (must exist; single masks may be missing).
    pattern : str
        Glob selecting the images.
    mask_tail : str
        What follows the image's stem in its mask's file name, e.g. ``"_segmentation.png"``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "ISIC_1.jpg").write_bytes(b"")
    ...     pairs = folder_pairs(Path(folder), Path(folder), "*.jpg", "_segmentation.png")
    >>> pairs[0].id, pairs[0].mask.name
    ('ISIC_1', 'ISIC_1_segmentation.png')
    """
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"masks folder {str(masks_dir)!r} does not exist")
    return [Pair(f.stem, f, masks_dir / f"{f.stem}{mask_tail}") for f in list_files(images_dir, pattern, "images")]


def seeded_split(ids: Sequence[str], seed: int, force_test: Iterable[str] = ()) -> dict[str, list[str]]:
    """Deterministic train/val/test split: sorted ids permuted by `seed`, cut 70/15/15.

    Ids in `force_test` (the images to explain) always go to test, so the bank never sees them.

    Parameters
    ----------
    ids : sequence of str
        Every image id.
    seed : int
        Seed of the permutation.
    force_test : iterable of str
        Ids that must be in the test split.

    Examples
    --------
    >>> split = seeded_split([f"im{k}" for k in range(10)], seed=0, force_test=["im3"])
    >>> {name: len(ids) for name, ids in split.items()}, "im3" in split["test"]
    ({'train': 6, 'val': 1, 'test': 3}, True)
    """
    forced = set(force_test)
    rest = sorted(set(ids) - forced)
    order = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    n_train = round(SPLIT_FRACTIONS[0] * len(order))
    n_val = round(SPLIT_FRACTIONS[1] * len(order))
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :] + [i for i in ids if i in forced]),
    }


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    """One (N, C, H, W) stack: uint8 when every image is (8-bit files), else float32 in [0, 1]."""
    if all(image.dtype == np.uint8 for image in images):
        return torch.from_numpy(np.stack(images))
    return torch.from_numpy(np.stack([image / np.float32(255) if image.dtype == np.uint8 else image
                                      for image in images]).astype(np.float32))


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Stored images as float32 in [0, 1] (uint8 is stored as 0..255)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def _read_pairs(pairs: Sequence[Pair], size: int | None, on_error: OnError, meta: MetaFn,
                scaling: Scaling = "dtype") -> tuple:
    if not pairs:  # an empty split of a tiny folder: channel count unknown, keep the rank
        return (torch.zeros((0, 0, 0, 0), dtype=torch.uint8), torch.zeros((0, 0, 0), dtype=torch.bool)), [], []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    kept: list[Pair] = []
    scaled: list[str] = []
    problems: list[str] = []
    for pair in pairs:
        try:
            if not pair.mask.is_file():
                raise FileNotFoundError(f"no mask for image {str(pair.image)!r}: expected {str(pair.mask)!r}")
            (image, how), mask = read_scaled(pair.image, scaling), read_mask(pair.mask)
            if image.shape[:2] != mask.shape:
                raise ValueError(
                    f"image {str(pair.image)!r} is {image.shape[0]}x{image.shape[1]} (HxW) but its mask "
                    f"{str(pair.mask)!r} is {mask.shape[0]}x{mask.shape[1]}"
                )
            image, mask = resize_pair(image, mask, size)
            if images and image.shape != images[0].shape:
                raise ValueError(
                    f"image {str(pair.image)!r} has shape {image.shape} (C, H, W), the first image "
                    f"{str(kept[0].image)!r} has {images[0].shape}; pass size=... to resize all images"
                )
        except (FileNotFoundError, ValueError) as exc:
            if on_error == "raise":
                raise
            problems.append(str(exc))
            continue
        images.append(image)
        masks.append(mask)
        kept.append(pair)
        scaled.append(how)
    if problems:
        warnings.warn(f"skipped {len(problems)} bad image/mask pair(s):\n  " + "\n  ".join(problems), stacklevel=4)
    if not kept:
        raise ValueError(f"none of the {len(pairs)} image/mask pairs could be read (all skipped)")
    ids = [p.id for p in kept]
    return (
        (_stack(images), torch.from_numpy(np.stack(masks))),
        ids,
        [dict(meta(i), image=p.image.name, mask=p.mask.name, scaling=how) for i, p, how in zip(ids, kept, scaled)],
    )


def assemble(
    name: str,
    layout: dict[str, list[Pair]],
    wanted: Sequence[str],
    *,
    size: int | None,
    on_error: OnError,
    seed: int,
    explain_ids: Iterable[str] | None,
    meta: MetaFn,
    info: dict[str, Any],
    scaling: Scaling = "dtype",
) -> SegmentationData:
    """Read the `wanted` splits of `layout` eagerly; the bank is read lazily.

    Bank sources: the train split if the layout has one, else every image of the layout; images
    listed in `explain_ids` are always left out; without a train split and without `explain_ids`
    there is no bank (accessing it raises), since any image might be explained.

    Parameters
    ----------
    name : str
        Dataset name.
    layout : dict split -> list of Pair
        Every split of the dataset and its pairs.
    wanted : sequence of str
        Splits to read now (the others are read only if the bank needs them).
    size : int, optional
        Resize every pair to size x size; None keeps the file sizes.
    on_error : {"raise", "skip"}
        Bad-file policy (see :func:`FolderDataset`).
    seed : int
        Seed of the bank draw.
    explain_ids : iterable of str, optional
        Images that will be explained: never in the bank.
    meta : callable(image_id) -> dict
        Per-image metadata (the file names are added).
    info : dict
        Loader description, completed with the name, size, seed, split sizes, policy and scaling.
    scaling : {"dtype", "image"} or (low, high)
        How pixel values become [0, 1] (see :func:`FolderDataset`); each image's own scaling is in
        its metadata (``"scaling"``).
    """
    on_error = check_choice("on_error", on_error, ("raise", "skip"))
    scaling = check_scaling(scaling)
    arrays, ids, metas = {}, {}, {}
    for split in wanted:
        arrays[split], ids[split], metas[split] = _read_pairs(layout[split], size, on_error, meta, scaling)
    excluded = set(explain_ids or ())
    source_splits = ["train"] if "train" in layout else list(layout)
    bank_source: Callable[[], PatchBank] | None = None
    if "train" in layout or explain_ids is not None:

        def bank_source() -> PatchBank:
            images, names = [], []
            for split in source_splits:
                if split in arrays:
                    split_images, split_ids = arrays[split][0], ids[split]
                else:
                    pairs = [p for p in layout[split] if p.id not in excluded]
                    (split_images, _), split_ids, _ = _read_pairs(pairs, size, on_error, meta, scaling)
                keep = [k for k, i in enumerate(split_ids) if i not in excluded]
                images.append(_unit(split_images[keep]))
                names += [split_ids[k] for k in keep]
            stacked = torch.cat(images)
            return build_bank(stacked, names, seed, dataset=name, split="+".join(source_splits))

    sizes = {s: len(ids[s]) for s in wanted}
    info = dict(info, name=name, size=size, seed=seed, splits=sizes, on_error=on_error,
                scaling=list(scaling) if isinstance(scaling, tuple) else scaling)
    return SegmentationData(name, arrays, ids, metas, info, bank_source)


def _no_meta(image_id: str) -> dict[str, Any]:
    return {}


def FolderDataset(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    pattern: str = "*.png",
    mask_suffix: str = "",
    size: int | None = None,
    *,
    mask_ext: str = ".png",
    split_seed: int | None = None,
    explain_ids: Iterable[str] | None = None,
    on_error: OnError = "raise",
    seed: int = 0,
    name: str = "folder",
    scaling: Scaling = "dtype",
) -> SegmentationData:
    """Load a folder of images with binary masks (a user's own data).

    The mask of ``images_dir/<stem><ext>`` is ``masks_dir/<stem><mask_suffix><mask_ext>``.

    Parameters
    ----------
    images_dir : path
        Folder of images (grey or RGB, any format Pillow reads).
    masks_dir : path, optional
        Folder of masks (0/1 or 0/255); default: `images_dir` (then `pattern` must not match masks).
    pattern : str
        Glob selecting the images, e.g. ``"*.jpg"``.
    mask_suffix, mask_ext : str
        How a mask's file name is built from its image's stem.
    size : int, optional
        Resize every pair to size x size (bilinear image, nearest mask); default: keep file sizes
        (then all images must share one size).
    split_seed : int, optional
        None: one split ``"all"``. An int: a deterministic 70/15/15 train/val/test split of the
        sorted ids permuted by this seed.
    explain_ids : iterable of str, optional
        Images that will be explained: never used for the bank (and put in test when splitting).
    on_error : {"raise", "skip"}
        "raise": the first bad file (missing mask, unreadable file, non-binary mask, size mismatch)
        raises an error naming it. "skip": bad pairs are left out, listed in one warning.
    seed : int
        Seed of the bank draw.
    name : str
        Dataset name.
    scaling : {"dtype", "image"} or (low, high)
        How pixel values become [0, 1], one rule for every image. ``"dtype"``: divided by the
        file's dtype range (8-bit / 255, 16-bit / 65535), so images keep their relative
        brightness. ``"image"``: each image's own min..max -> 0..1 (a per-image normalisation).
        ``(low, high)``: low -> 0 and high -> 1 for every image (e.g. ``(0, 4095)`` for 12-bit
        data stored in 16-bit files). Recorded in ``info["scaling"]`` and per image in
        ``metadata(split)[i]["scaling"]``.

    Returns
    -------
    SegmentationData
        ``.bank``: from the train split (with `split_seed`), else from the images not in
        `explain_ids`; without either, accessing it raises.
    """
    images_dir = Path(images_dir)
    masks_dir = Path(masks_dir) if masks_dir is not None else images_dir
    pairs = folder_pairs(images_dir, masks_dir, pattern, mask_suffix + mask_ext)
    return from_pairs(name, pairs, size=size, split_seed=split_seed, explain_ids=explain_ids,
                      on_error=on_error, seed=seed, meta=_no_meta, scaling=scaling,
                      info={"loader": "FolderDataset", "images_dir": images_dir.name, "pattern": pattern})


def from_pairs(
    name: str,
    pairs: list[Pair],
    *,
    size: int | None,
    split_seed: int | None,
    explain_ids: Iterable[str] | None,
    on_error: OnError,
    seed: int,
    meta: MetaFn,
    info: dict[str, Any],
    wanted: Sequence[str] | None = None,
    scaling: Scaling = "dtype",
) -> SegmentationData:
    """A flat list of pairs, either as one split "all" or split deterministically by `split_seed`.

    Parameters
    ----------
    name : str
        Dataset name.
    pairs : list of Pair
        Every image of the dataset.
    size, on_error, seed, explain_ids, meta, info
        As in :func:`assemble`.
    split_seed : int, optional
        None: one split ``"all"``; an int: the 70/15/15 split of :func:`seeded_split`.
    wanted : sequence of str, optional
        Splits to read now (default: all of them).
    scaling : {"dtype", "image"} or (low, high)
        How pixel values become [0, 1] (see :func:`FolderDataset`).
    """
    if size is not None:
        size = check_int("size", size, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    explain = list(explain_ids) if explain_ids is not None else None
    if split_seed is None:
        layout = {"all": pairs}
    else:
        by_id = {p.id: p for p in pairs}
        split = seeded_split(list(by_id), check_int("split_seed", split_seed, minimum=0), explain or ())
        layout = {s: [by_id[i] for i in ids] for s, ids in split.items()}
        info = dict(info, split_seed=split_seed, split_fractions=list(SPLIT_FRACTIONS))
    if wanted is not None:
        for s in wanted:
            check_choice("split", s, layout)
    return assemble(name, layout, list(wanted or layout), size=size, on_error=on_error, seed=seed,
                    explain_ids=explain, meta=meta, info=info, scaling=scaling)
