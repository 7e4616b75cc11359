"""A user's own files for a command line: one image (and mask) to explain, and a bank from a folder.

:func:`read_pair` reads the image to explain exactly as the folder loaders would; :func:`bank_from_folder`
cuts the natural patch bank from a folder of other images of the same kind, leaving the explained
images out even when the folder holds a copy of them under another name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..banks import PatchBank
from ..checks import check_int
from ._data import build_bank
from ._folders import list_files
from ._io import (
    DEFAULT_PERCENTILES,
    Normalize,
    Resample,
    check_normalize,
    check_percentiles,
    is_dim_16bit,
    normalize_pixels,
    read_mask,
    read_normalized,
    read_pixels,
    resize_pair,
    warn_dim_16bit,
)

__all__ = ["OwnImage", "bank_from_folder", "read_pair"]


@dataclass(frozen=True, eq=False)
class OwnImage:
    """One image read from a file, with its mask if given.

    Parameters
    ----------
    image : Tensor (C, H, W)
        float32 in [0, 1].
    mask : Tensor (H, W) or None
        bool.
    info : dict
        File names, the normalisation note, binarize, the file's shape and dtype, the size.
    """

    image: torch.Tensor
    mask: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _unit(chw: np.ndarray) -> torch.Tensor:
    """A resized (C, H, W) image as float32 in [0, 1] (8-bit images come as uint8 0..255)."""
    return torch.from_numpy((chw / np.float32(255) if chw.dtype == np.uint8 else chw).astype(np.float32))


def read_pair(
    image: str | os.PathLike,
    mask: str | os.PathLike | None = None,
    *,
    normalize: Normalize = "dtype",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    binarize: bool = False,
    size: int | None = None,
    resample: Resample = "torch",
) -> OwnImage:
    """Read one image file (and its mask) the way the folder loaders do.

    Parameters
    ----------
    image : path
        PNG, TIFF, JPEG or BMP, 8- or 16-bit, grey or colour.
    mask : path, optional
        Its mask (same height and width).
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How values become [0, 1] (see :func:`FolderDataset`).
    percentiles : (low, high)
        Used by ``normalize="percentile"``.
    binarize : bool
        False: the mask must hold 0/1 or 0/255; True: every non-zero label is foreground.
    size : int, optional
        Resize to size x size (bilinear image, nearest mask).
    resample : {"torch", "pil"}
        How `size` resizes (:func:`resize_pair`): ``"pil"`` as the paper's loaders (Pillow,
        antialiased), ``"torch"`` as the folder loaders by default. Recorded in ``info``.

    Returns
    -------
    OwnImage

    Examples
    --------
    >>> import tempfile
    >>> import tifffile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     tifffile.imwrite(f"{folder}/cell.tif", np.arange(12, dtype=np.uint16).reshape(3, 4) * 300)
    ...     tifffile.imwrite(f"{folder}/labels.tif", np.eye(3, 4, dtype=np.uint16) * 5)
    ...     own = read_pair(f"{folder}/cell.tif", f"{folder}/labels.tif", normalize="range", binarize=True)
    >>> tuple(own.image.shape), float(own.image.max()), int(own.mask.sum()), own.info["dtype"]
    ((1, 3, 4), 1.0, 3, 'uint16')
    """
    normalize = check_normalize(normalize)
    percentiles = check_percentiles(percentiles)
    if size is not None:
        size = check_int("size", size, minimum=1)
    path = Path(image)
    pixels, scaled, how = read_normalized(path, normalize, percentiles)
    if is_dim_16bit(pixels, normalize):
        warn_dim_16bit([path.name])
    labels = None
    if mask is not None:
        labels = read_mask(mask, bool(binarize))
        if labels.shape != pixels.shape[:2]:
            raise ValueError(f"image {str(path)!r} is {pixels.shape[0]}x{pixels.shape[1]} (HxW) but its mask "
                             f"{str(mask)!r} is {labels.shape[0]}x{labels.shape[1]}")
    chw, labels = resize_pair(scaled, labels, size, resample)
    info = {
        "image": path.name,
        "mask": Path(mask).name if mask is not None else None,
        "normalize": how,
        "binarize": bool(binarize),
        "shape": list(pixels.shape),
        "dtype": str(pixels.dtype),
        "size": size,
        "resample": resample,
    }
    return OwnImage(_unit(chw), None if labels is None else torch.from_numpy(np.array(labels)), info)


def _content_key(pixels: np.ndarray) -> tuple[tuple[int, ...], str, str]:
    """Shape, dtype and a digest of the values: equal for the same pixels in any file format."""
    return pixels.shape, str(pixels.dtype), hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def bank_from_folder(
    folder: str | os.PathLike,
    *,
    block: int,
    exclude: Sequence[str | os.PathLike] = (),
    size: int | None = None,
    normalize: Normalize = "dtype",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    pattern: str | None = None,
    per_image: int = 100,
    seed: int = 0,
    resample: Resample = "torch",
) -> PatchBank:
    """The reference patch bank (random grid blocks) cut from a folder of images that are not explained.

    Parameters
    ----------
    folder : path
        Images of the same kind as the explained ones (masks are not needed; `pattern` can keep
        mask files out if they sit in the same folder).
    block : int
        Block side; must tile every (resized) image.
    exclude : sequence of paths
        The explained images: a folder file is left out when its resolved path is one of them, or
        its pixels equal one of theirs (a copy under another name or format).
    size : int, optional
        Resize every image to size x size; None: all images must share one size.
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How values become [0, 1] (use the explained images' rule).
    resample : {"torch", "pil"}
        How `size` resizes (use the explained images' rule; :func:`resize_pair`).
    percentiles : (low, high)
        Used by ``normalize="percentile"``.
    pattern : str, optional
        Glob selecting the images; None: every supported image file.
    per_image : int
        Blocks drawn from each image (the reference: 100).
    seed : int
        Seed of the draw.

    Returns
    -------
    PatchBank
        Its provenance holds the folder's name, the ids used (``sources``), the ``excluded`` ones,
        ``normalize`` and ``seed``.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for k in range(3):
    ...         Image.new("L", (16, 16), 40 * k).save(f"{folder}/im{k}.png")
    ...     Image.new("L", (16, 16), 0).save(f"{folder}/copy_of_im0.png")
    ...     bank = bank_from_folder(folder, block=8, exclude=[f"{folder}/im0.png"], per_image=2)
    >>> bank.provenance["sources"], bank.provenance["excluded"]
    (['im1', 'im2'], ['copy_of_im0', 'im0'])
    """
    root = Path(folder)
    block = check_int("block", block, minimum=1)
    normalize = check_normalize(normalize)
    percentiles = check_percentiles(percentiles)
    if size is not None:
        size = check_int("size", size, minimum=1)
    if isinstance(exclude, (str, os.PathLike)):
        exclude = [exclude]
    excluded_paths = {Path(p).resolve() for p in exclude}
    excluded_content = {_content_key(read_pixels(p)) for p in exclude}
    images: list[torch.Tensor] = []
    ids: list[str] = []
    left_out: list[str] = []
    dim: list[str] = []
    for path in list_files(root, pattern, "images"):
        if path.resolve() in excluded_paths:
            left_out.append(path.stem)
            continue
        pixels = read_pixels(path)
        if _content_key(pixels) in excluded_content:
            left_out.append(path.stem)
            continue
        unit = _unit(resize_pair(normalize_pixels(pixels, normalize, percentiles, name=str(path))[0], None, size,
                                 resample)[0])
        if images and unit.shape != images[0].shape:
            raise ValueError(f"image {str(path)!r} has shape {tuple(unit.shape)} (C, H, W), the first image "
                             f"{ids[0]!r} has {tuple(images[0].shape)}; pass size=... to resize all images")
        if unit.shape[1] % block or unit.shape[2] % block:
            raise ValueError(f"block={block} does not tile image {str(path)!r} of size "
                             f"{unit.shape[1]}x{unit.shape[2]}; pass size=... or another block")
        images.append(unit)
        ids.append(path.stem)
        dim += [path.name] if is_dim_16bit(pixels, normalize) else []
    warn_dim_16bit(dim)
    if not images:
        raise ValueError(f"folder {str(root)!r} has no images left for a patch bank after leaving out "
                         f"{len(left_out)} explained image(s) {left_out}; add images that are not explained")
    extra: dict[str, Any] = {"percentiles": list(percentiles)} if normalize == "percentile" else {}
    return build_bank(images, ids, seed, block=block, per_image=per_image, folder=root.name, excluded=left_out,
                      normalize=list(normalize) if isinstance(normalize, tuple) else normalize, size=size,
                      resample=resample, **extra)
