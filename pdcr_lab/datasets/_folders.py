"""Image/mask folders on disk -> SegmentationData, with the shared bad-file policy.

The paper loaders (HAM10000, FIVES) only describe where their files are; reading, normalising,
checking, tiling, resizing, splitting and the bank all happen here.
"""

from __future__ import annotations

import os
import re
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
from ._io import (
    DEFAULT_PERCENTILES,
    IMAGE_EXTENSIONS,
    RESAMPLE_CHOICES,
    Normalize,
    Resample,
    check_normalize,
    check_percentiles,
    is_dim_16bit,
    read_mask,
    read_normalized,
    resize_pair,
    warn_dim_16bit,
)

__all__ = [
    "FolderDataset",
    "Pair",
    "assemble",
    "check_fractions",
    "explained_sources",
    "folder_pairs",
    "from_pairs",
    "list_files",
    "seeded_split",
    "tile_offsets",
]

OnError = Literal["raise", "skip"]
MetaFn = Callable[[str], dict[str, Any]]
#: Fractions of the deterministic train/val/test split used when a folder has no split structure.
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
_TILE_ID = re.compile(r"^(?P<source>.+)_r\d+_c\d+$")


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


def list_files(folder: Path, pattern: str | None, what: str) -> list[Path]:
    """Sorted files matching `pattern` in `folder`; clear errors for a missing or empty folder.

    Parameters
    ----------
    folder : pathlib.Path
        The folder to list.
    pattern : str or None
        Glob pattern, e.g. ``"*.png"``; None: every file with a supported image extension
        (.png, .tif, .tiff, .jpg, .jpeg, .bmp, in any letter case) whose name does not start with a dot.
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
    if pattern is None:
        # Hidden files are skipped: macOS leaves "._<name>.png" companions that are not images.
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{what} folder {str(folder)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise ValueError(f"{what} folder {str(folder)!r} holds no files matching {pattern!r}")
    return files


def _mask_finder(masks_dir: Path, mask_suffix: str, mask_ext: str | None) -> Callable[[Path], Path]:
    """image file -> its mask path: ``<stem><mask_suffix><mask_ext>``, or any supported extension."""
    if mask_ext is not None:
        return lambda image: masks_dir / f"{image.stem}{mask_suffix}{mask_ext}"
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(masks_dir.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(f.stem, []).append(f)

    def find(image: Path) -> Path:
        found = by_stem.get(image.stem + mask_suffix, [])
        if len(found) > 1:
            raise ValueError(f"image {str(image)!r} has {len(found)} candidate masks {[f.name for f in found]}; "
                             "keep one, or pass mask_ext=... to choose")
        # A missing mask keeps a readable placeholder: the reader reports "expected '<stem><suffix>.*'".
        return found[0] if found else masks_dir / f"{image.stem}{mask_suffix}.*"

    return find


def folder_pairs(
    images_dir: Path,
    masks_dir: Path,
    pattern: str | None,
    mask_suffix: str = "",
    mask_ext: str | None = ".png",
) -> list[Pair]:
    """Pairs ``images_dir/<stem>.*`` -> ``masks_dir/<stem><mask_suffix><mask_ext>``.

    Parameters
    ----------
    images_dir : pathlib.Path
        Folder of the images.
    masks_dir : pathlib.Path
        Folder of the masks (must exist; single masks may be missing).
    pattern : str or None
        Glob selecting the images; None: every supported image file (see :func:`list_files`). When
        the masks share the images' folder, None leaves out files whose stem ends with
        `mask_suffix` (which must then be non-empty).
    mask_suffix : str
        What follows the image's stem in its mask's name, e.g. ``"_segmentation"``.
    mask_ext : str or None
        The mask's extension, e.g. ``".png"``; None: any supported extension (an error names the
        candidates when several files fit).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "ISIC_1.jpg").write_bytes(b"")
    ...     pairs = folder_pairs(Path(folder), Path(folder), "*.jpg", "_segmentation", ".png")
    >>> pairs[0].id, pairs[0].mask.name
    ('ISIC_1', 'ISIC_1_segmentation.png')
    """
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"masks folder {str(masks_dir)!r} does not exist")
    images = list_files(images_dir, pattern, "images")
    if pattern is None and masks_dir.resolve() == images_dir.resolve():
        if not mask_suffix:
            raise ValueError(f"masks share the images folder {str(images_dir)!r} and mask_suffix is empty, so masks "
                             "cannot be told from images; pass mask_suffix=..., masks_dir=... or pattern=...")
        images = [f for f in images if not f.stem.endswith(mask_suffix)]
        if not images:
            raise ValueError(f"images folder {str(images_dir)!r} holds only masks (stems ending in {mask_suffix!r})")
    stems: dict[str, Path] = {}
    for f in images:
        if f.stem in stems:
            raise ValueError(f"image files {stems[f.stem].name!r} and {f.name!r} share the id {f.stem!r}; "
                             "keep one, or pass pattern=... to choose")
        stems[f.stem] = f
    mask_of = _mask_finder(masks_dir, mask_suffix, mask_ext)
    return [Pair(f.stem, f, mask_of(f)) for f in images]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """`fractions` as (train, val, test): three numbers >= 0 that sum to 1.

    Parameters
    ----------
    fractions : (train, val, test)
        Shares of the split.

    Examples
    --------
    >>> check_fractions([0.8, 0.2, 0])
    (0.8, 0.2, 0.0)
    """
    try:
        values = tuple(float(v) for v in fractions)
        valid = len(values) == 3 and min(values) >= 0 and abs(sum(values) - 1) < 1e-6
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"split_fractions={fractions!r} must be three numbers >= 0 (train, val, test) summing to 1")
    return values  # type: ignore[return-value]


def seeded_split(
    ids: Sequence[str],
    seed: int,
    force_test: Iterable[str] = (),
    fractions: Sequence[float] = SPLIT_FRACTIONS,
) -> dict[str, list[str]]:
    """Deterministic train/val/test split: sorted ids permuted by `seed`, cut 70/15/15 (`fractions`).

    Ids in `force_test` (the images to explain) always go to test, so the bank never sees them.

    Parameters
    ----------
    ids : sequence of str
        Every image id.
    seed : int
        Seed of the permutation.
    force_test : iterable of str
        Ids that must be in the test split.
    fractions : (train, val, test)
        Shares of the other ids, summing to 1 (rounded to whole ids; test takes the rest). A
        non-zero share never rounds to an empty split when there are ids enough (2 for val, 3
        for val and test): ``seeded_split(["a", "b", "c"], 0)`` gives one id to each split.

    Examples
    --------
    >>> split = seeded_split([f"im{k}" for k in range(10)], seed=0, force_test=["im3"])
    >>> {name: len(ids) for name, ids in split.items()}, "im3" in split["test"]
    ({'train': 6, 'val': 1, 'test': 3}, True)
    """
    train, val, test = check_fractions(fractions)
    forced = set(force_test)
    rest = sorted(set(ids) - forced)
    order = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    n_train = round(train * len(order))
    n_val = round(val * len(order))
    # a small folder still gets one validation (early stopping) and one test image when asked for
    if val > 0 and n_val == 0 and len(order) >= 2:
        n_val, n_train = 1, min(n_train, len(order) - 1)
    if test > 0 and n_train + n_val == len(order) and len(order) >= 3 and n_train > 1:
        n_train -= 1
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :] + [i for i in ids if i in forced]),
    }


def explained_sources(explain_ids: Iterable[str], sources: Iterable[str]) -> set[str]:
    """The source images that explained ids belong to: a source id itself, or a tile id's source.

    Parameters
    ----------
    explain_ids : iterable of str
        Source ids (file stems) or tile ids ``<stem>_r<row>_c<col>``.
    sources : iterable of str
        Every source id of the dataset (ids that match none are kept as they are).

    Examples
    --------
    >>> sorted(explained_sources(["cell_r0_c256", "other"], ["cell", "other"]))
    ['cell', 'other']
    """
    known = set(sources)
    found = set()
    for name in explain_ids:
        match = _TILE_ID.match(name)
        found.add(match.group("source") if name not in known and match and match.group("source") in known else name)
    return found


def tile_offsets(length: int, tile: int, stride: int) -> list[int]:
    """Window starts 0, stride, 2 * stride, ..., plus one flush with the end, so every pixel is covered.

    Parameters
    ----------
    length : int
        Image side in pixels (at least `tile`).
    tile, stride : int
        Window side and step (stride <= tile).

    Examples
    --------
    >>> tile_offsets(512, 256, 256), tile_offsets(512, 256, 200), tile_offsets(300, 256, 256)
    ([0, 256], [0, 200, 256], [0, 44])
    """
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class _Reading:
    """How every pair of a dataset is read (checked once, in :func:`assemble`)."""

    size: int | None
    on_error: OnError
    normalize: Normalize
    percentiles: tuple[float, float]
    binarize: bool
    tile: int | None
    stride: int | None
    resample: Resample

    @classmethod
    def checked(cls, size: int | None, on_error: OnError, normalize: Normalize, percentiles: Sequence[float],
                binarize: bool, tile: int | None, stride: int | None, resample: Resample) -> _Reading:
        if not isinstance(binarize, (bool, np.bool_)):
            raise TypeError(f"binarize must be True or False, got {binarize!r}")
        if tile is not None:
            tile = check_int("tile", tile, minimum=1)
            stride = tile if stride is None else check_int("stride", stride, minimum=1)
            if stride > tile:
                raise ValueError(f"stride={stride} is larger than tile={tile}; expected stride <= tile so that "
                                 "every pixel is covered")
        elif stride is not None:
            raise ValueError(f"stride={stride!r} was given without tile; pass tile=... too")
        return cls(
            size=None if size is None else check_int("size", size, minimum=1),
            on_error=check_choice("on_error", on_error, ("raise", "skip")),
            normalize=check_normalize(normalize),
            percentiles=check_percentiles(percentiles),
            binarize=bool(binarize),
            tile=tile,
            stride=stride,
            resample=check_choice("resample", resample, RESAMPLE_CHOICES),
        )

    def windows(self, pair: Pair, image: np.ndarray, mask: np.ndarray) -> list[tuple[str, dict, np.ndarray, Any]]:
        """(id, tile metadata, (C, h, w) image, (h, w) mask) of each window of a pair, resized."""
        if self.tile is None:
            return [(pair.id, {}, *resize_pair(image, mask, self.size, self.resample))]
        tile, stride = self.tile, self.stride
        h, w = mask.shape
        if h < tile or w < tile:
            raise ValueError(f"image {str(pair.image)!r} is {h}x{w} (HxW), smaller than tile={tile}")
        return [
            (f"{pair.id}_r{r}_c{c}", {"source": pair.id, "tile_row": r, "tile_col": c, "tile": tile, "stride": stride},
             *resize_pair(image[r : r + tile, c : c + tile], mask[r : r + tile, c : c + tile], self.size,
                          self.resample))
            for r in tile_offsets(h, tile, stride)
            for c in tile_offsets(w, tile, stride)
        ]

    def info(self) -> dict[str, Any]:
        """The reading rules, JSON-serialisable, for ``SegmentationData.info``."""
        normalize = list(self.normalize) if isinstance(self.normalize, tuple) else self.normalize
        extra = {"percentiles": list(self.percentiles)} if normalize == "percentile" else {}
        return dict(size=self.size, on_error=self.on_error, normalize=normalize, **extra, binarize=self.binarize,
                    tile=self.tile, stride=self.stride, resample=self.resample)


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    """One (N, C, H, W) stack: uint8 when every image is (8-bit files), else float32 in [0, 1]."""
    if all(image.dtype == np.uint8 for image in images):
        return torch.from_numpy(np.stack(images))
    return torch.from_numpy(np.stack([image / np.float32(255) if image.dtype == np.uint8 else image
                                      for image in images]).astype(np.float32))


def _unit(images: torch.Tensor) -> torch.Tensor:
    """Stored images as float32 in [0, 1] (uint8 is stored as 0..255)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def _read_pairs(pairs: Sequence[Pair], reading: _Reading, meta: MetaFn) -> tuple:
    """((images, masks), ids, metadata, dim 16-bit file names) of `pairs`, windows in file order."""
    if not pairs:  # an empty split of a tiny folder: channel count unknown, keep the rank
        return (torch.zeros((0, 0, 0, 0), dtype=torch.uint8), torch.zeros((0, 0, 0), dtype=torch.bool)), [], [], []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    ids: list[str] = []
    metas: list[dict[str, Any]] = []
    dim: list[str] = []
    first = ""
    problems: list[str] = []
    for pair in pairs:
        try:
            if not pair.mask.is_file():
                raise FileNotFoundError(f"no mask for image {str(pair.image)!r}: expected {str(pair.mask)!r}")
            pixels, image, how = read_normalized(pair.image, reading.normalize, reading.percentiles)
            mask = read_mask(pair.mask, reading.binarize)
            if image.shape[:2] != mask.shape:
                raise ValueError(
                    f"image {str(pair.image)!r} is {image.shape[0]}x{image.shape[1]} (HxW) but its mask "
                    f"{str(pair.mask)!r} is {mask.shape[0]}x{mask.shape[1]}"
                )
            windows = reading.windows(pair, image, mask)
            shape = images[0].shape if images else windows[0][2].shape
            if windows[0][2].shape != shape:
                raise ValueError(
                    f"image {str(pair.image)!r} has shape {windows[0][2].shape} (C, H, W), the first image "
                    f"{first!r} has {shape}; pass size=... to resize all images"
                )
        except (FileNotFoundError, ValueError) as exc:
            if reading.on_error == "raise":
                raise
            problems.append(str(exc))
            continue
        first = first or str(pair.image)
        if is_dim_16bit(pixels, reading.normalize):
            dim.append(pair.image.name)
        common = dict(meta(pair.id), image=pair.image.name, mask=pair.mask.name, normalize=how)
        for window_id, tile_meta, window, window_mask in windows:
            images.append(window)
            masks.append(window_mask)
            ids.append(window_id)
            metas.append(dict(common, **tile_meta))
    if problems:
        warnings.warn(f"skipped {len(problems)} bad image/mask pair(s):\n  " + "\n  ".join(problems), stacklevel=4)
    if not ids:
        raise ValueError(f"none of the {len(pairs)} image/mask pairs could be read (all skipped)")
    return (_stack(images), torch.from_numpy(np.stack(masks))), ids, metas, dim


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
    normalize: Normalize = "dtype",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    binarize: bool = False,
    tile: int | None = None,
    stride: int | None = None,
    resample: Resample = "torch",
) -> SegmentationData:
    """Read the `wanted` splits of `layout` eagerly; the bank is read lazily.

    Bank sources: the train split if the layout has one, else every image of the layout; images
    named in `explain_ids` are always left out (with every tile of their source image, since
    overlapping tiles share pixels); without a train split and without `explain_ids` there is no
    bank (accessing it raises), since any image might be explained.

    Parameters
    ----------
    name : str
        Dataset name.
    layout : dict split -> list of Pair
        Every split of the dataset and its pairs.
    wanted : sequence of str
        Splits to read now (the others are read only if the bank needs them).
    size : int, optional
        Resize every pair (or tile) to size x size; None keeps the file sizes.
    on_error : {"raise", "skip"}
        Bad-file policy (see :func:`FolderDataset`).
    seed : int
        Seed of the bank draw.
    explain_ids : iterable of str, optional
        Images (source or tile ids) that will be explained: never in the bank.
    meta : callable(image_id) -> dict
        Per-image metadata, by source id (the file names and the normalisation note are added).
    info : dict
        Loader description, completed with the name, seed, split sizes and the reading rules.
    normalize, percentiles, binarize, tile, stride, resample
        As in :func:`FolderDataset` (the paper loaders pass ``resample="pil"``).
    """
    reading = _Reading.checked(size, on_error, normalize, percentiles, binarize, tile, stride, resample)
    seed = check_int("seed", seed, minimum=0)
    arrays, ids, metas, dim = {}, {}, {}, []
    for split in wanted:
        arrays[split], ids[split], metas[split], split_dim = _read_pairs(layout[split], reading, meta)
        dim += split_dim
    warn_dim_16bit(dim, stacklevel=4)  # points at the caller of FolderDataset
    excluded = explained_sources(explain_ids or (), (p.id for pairs in layout.values() for p in pairs))
    source_splits = ["train"] if "train" in layout else list(layout)
    bank_source: Callable[[], PatchBank] | None = None
    if "train" in layout or explain_ids is not None:

        def bank_source() -> PatchBank:
            images, names = [], []
            for split in source_splits:
                if split in arrays:
                    split_images, split_ids, split_metas = arrays[split][0], ids[split], metas[split]
                else:
                    pairs = [p for p in layout[split] if p.id not in excluded]
                    (split_images, _), split_ids, split_metas, _ = _read_pairs(pairs, reading, meta)
                keep = [k for k, m in enumerate(split_metas) if m.get("source", split_ids[k]) not in excluded]
                images.append(_unit(split_images[keep]))
                names += [split_ids[k] for k in keep]
            stacked = torch.cat(images)
            return build_bank(stacked, names, seed, dataset=name, split="+".join(source_splits))

    sizes = {s: len(ids[s]) for s in wanted}
    info = dict(info, name=name, seed=seed, splits=sizes, **reading.info())
    return SegmentationData(name, arrays, ids, metas, info, bank_source)


def _no_meta(image_id: str) -> dict[str, Any]:
    return {}


def FolderDataset(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    pattern: str | None = None,
    mask_suffix: str = "",
    size: int | None = None,
    *,
    mask_ext: str | None = None,
    split_seed: int | None = None,
    explain_ids: Iterable[str] | None = None,
    on_error: OnError = "raise",
    seed: int = 0,
    name: str = "folder",
    normalize: Normalize = "dtype",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    binarize: bool = False,
    tile: int | None = None,
    stride: int | None = None,
    split_fractions: Sequence[float] = SPLIT_FRACTIONS,
    resample: Resample = "torch",
) -> SegmentationData:
    """Load a folder of images with their masks (a user's own data).

    The mask of ``images_dir/<stem><ext>`` is ``masks_dir/<stem><mask_suffix><mask_ext>``.

    Parameters
    ----------
    images_dir : path
        Folder of images: PNG, TIFF, JPEG or BMP, 8- or 16-bit, grey or RGB.
    masks_dir : path, optional
        Folder of masks; default: `images_dir` (then masks are told from images by `mask_suffix`,
        or `pattern` must not match them).
    pattern : str, optional
        Glob selecting the images, e.g. ``"*.jpg"``; None: every file with an extension .png, .tif,
        .tiff, .jpg, .jpeg or .bmp (any letter case).
    mask_suffix : str
        What follows an image's stem in its mask's name, e.g. ``"_mask"``.
    mask_ext : str, optional
        The masks' extension, e.g. ``".png"``; None: any supported one (an error names the
        candidates when several fit).
    size : int, optional
        Resize every image (or tile) to size x size (bilinear image, nearest mask, by `resample`);
        default: keep file sizes (then all images must share one size, unless tiled).
    split_seed : int, optional
        None: one split ``"all"``. An int: a deterministic train/val/test split (`split_fractions`)
        of the sorted source images permuted by this seed (all tiles of an image land in one split).
    split_fractions : (train, val, test)
        Shares of the seeded split, summing to 1; default (0.7, 0.15, 0.15).
    explain_ids : iterable of str, optional
        Images that will be explained: never used for the bank (and put in test when splitting). A
        source image's stem covers all its tiles; a tile id puts its source image in test and
        keeps all of that image's tiles out of the bank.
    on_error : {"raise", "skip"}
        "raise": the first bad file (missing mask, unreadable file, non-binary mask, size mismatch,
        image smaller than the tile) raises an error naming it. "skip": bad pairs are left out,
        listed in one warning.
    seed : int
        Seed of the bank draw.
    name : str
        Dataset name.
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How pixel values become [0, 1], one rule for every image. ``"dtype"``: divided by the
        file's dtype range (8-bit / 255, 16-bit / 65535), so images keep their relative brightness
        (a warning names 16-bit files that use at most 1/16 of the range). ``"range"`` (or
        ``"image"``): each image's own min..max -> 0..1. ``"percentile"``: each image's
        `percentiles` -> 0..1, clipped (usual for microscopy). ``(low, high)``: low -> 0 and
        high -> 1 for every image (e.g. ``(0, 4095)`` for 12-bit data in 16-bit files). Recorded
        in ``info["normalize"]`` and per image in ``metadata(split)[i]["normalize"]``.
    percentiles : (low, high)
        Percentiles used by ``normalize="percentile"`` (default (1, 99.8)).
    binarize : bool
        False: masks must hold 0/1 or 0/255. True: every non-zero value is foreground (instance
        labels of any integer type). Recorded in ``info["binarize"]``.
    tile : int, optional
        Cut each image/mask pair, at file resolution after normalisation, into tile x tile windows
        at 0, stride, 2 * stride, ... plus one flush with the right/bottom border, so every pixel is
        covered; `size` then resizes each tile. Ids become ``<stem>_r<row>_c<col>`` (pixel
        offsets); metadata holds ``source``, ``tile_row``, ``tile_col``, ``tile`` and ``stride``.
    stride : int, optional
        Step between tiles (<= tile); default: `tile` (no overlap).
    resample : {"torch", "pil"}
        How `size` resizes (see :func:`~pdcr_lab.datasets._io.resize_pair`). ``"torch"`` (default):
        bilinear without antialiasing and torch nearest, the rule this loader has always used, so
        models already trained on a folder keep getting the inputs they were trained on.
        ``"pil"``: Pillow's antialiasing bilinear and nearest, like the paper loaders (HAM10000,
        FIVES) and the PdCR authors' code. Recorded in ``info["resample"]``.

    Returns
    -------
    SegmentationData
        ``.bank``: from the train split (with `split_seed`), else from the images not in
        `explain_ids`; without either, accessing it raises.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     Image.new("L", (64, 48), 90).save(f"{folder}/cell.png")
    ...     Image.new("L", (64, 48), 3).save(f"{folder}/cell_mask.png")
    ...     data = FolderDataset(folder, mask_suffix="_mask", tile=32, stride=24, binarize=True)
    >>> data.ids("all")
    ['cell_r0_c0', 'cell_r0_c24', 'cell_r0_c32', 'cell_r16_c0', 'cell_r16_c24', 'cell_r16_c32']
    """
    images_dir = Path(images_dir)
    masks_dir = Path(masks_dir) if masks_dir is not None else images_dir
    pairs = folder_pairs(images_dir, masks_dir, pattern, mask_suffix, mask_ext)
    return from_pairs(name, pairs, size=size, split_seed=split_seed, explain_ids=explain_ids,
                      on_error=on_error, seed=seed, meta=_no_meta, normalize=normalize, percentiles=percentiles,
                      binarize=binarize, tile=tile, stride=stride, split_fractions=split_fractions,
                      resample=resample,
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
    normalize: Normalize = "dtype",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    binarize: bool = False,
    tile: int | None = None,
    stride: int | None = None,
    split_fractions: Sequence[float] = SPLIT_FRACTIONS,
    resample: Resample = "torch",
) -> SegmentationData:
    """A flat list of pairs, either as one split "all" or split deterministically by `split_seed`.

    The split is drawn over the pairs (source images), before any tiling, so that tiles of one
    image never straddle train and test.

    Parameters
    ----------
    name : str
        Dataset name.
    pairs : list of Pair
        Every image of the dataset.
    size, on_error, seed, explain_ids, meta, info
        As in :func:`assemble`.
    split_seed : int, optional
        None: one split ``"all"``; an int: the split of :func:`seeded_split`.
    split_fractions : (train, val, test)
        Shares of the seeded split (default 70/15/15).
    wanted : sequence of str, optional
        Splits to read now (default: all of them).
    normalize, percentiles, binarize, tile, stride, resample
        As in :func:`FolderDataset` (the paper loaders pass ``resample="pil"``).
    """
    explain = list(explain_ids) if explain_ids is not None else None
    if split_seed is None:
        layout = {"all": pairs}
    else:
        by_id = {p.id: p for p in pairs}
        forced = explained_sources(explain or (), by_id)
        fractions = check_fractions(split_fractions)
        split = seeded_split(list(by_id), check_int("split_seed", split_seed, minimum=0), forced, fractions)
        layout = {s: [by_id[i] for i in ids] for s, ids in split.items()}
        info = dict(info, split_seed=split_seed, split_fractions=list(fractions))
    if wanted is not None:
        for s in wanted:
            check_choice("split", s, layout)
    return assemble(name, layout, list(wanted or layout), size=size, on_error=on_error, seed=seed,
                    explain_ids=explain, meta=meta, info=info, normalize=normalize, percentiles=percentiles,
                    binarize=binarize, tile=tile, stride=stride, resample=resample)
