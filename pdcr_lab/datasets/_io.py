"""Reading image and mask files, and resizing them the way the reference pipeline does.

Pixel values are scaled to [0, 1] by one rule for every image of a dataset (``scaling``), never by
each image's own range unless that is asked for: ``"dtype"`` (default) divides by the file's dtype
range (8-bit / 255, 16-bit / 65535), so a dim and a bright 16-bit image keep their relative
brightness; ``"image"`` maps each image's own min..max to 0..1 (a per-image normalisation);
``(low, high)`` maps low -> 0 and high -> 1 for every image. 8-bit files under ``"dtype"`` stay
uint8 (exactly as stored); everything else becomes float32. :func:`read_scaled` says how each file
was scaled, and the folder loaders record it per image (``metadata(split)[i]["scaling"]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["read_image", "read_scaled", "read_mask", "resize_pair", "check_scaling", "Scaling"]

#: How pixel values become [0, 1]: by the dtype's range, by each image's own range, or a fixed (low, high).
Scaling = Union[Literal["dtype", "image"], tuple[float, float]]
_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N")


def _open(path: Path, what: str) -> np.ndarray:
    """The file's pixels in their own dtype (uint8, uint16 for 16-bit files, int32 or float32)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "RGBA", "CMYK", "LA", "YCbCr"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            if im.mode in _SIXTEEN or (im.mode == "I" and im.format == "PNG"):
                # 16-bit files (PNG holds at most 16 bits a sample, even when Pillow opens it as "I")
                return np.asarray(im).astype(np.uint16)
            if im.mode == "F":
                return np.array(im, dtype=np.float32)
            return np.array(im)  # a writable copy (torch.from_numpy warns on read-only arrays)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {exc}") from exc


def check_scaling(scaling: Scaling) -> Scaling:
    """`scaling` if it is ``"dtype"``, ``"image"`` or a finite ``(low, high)`` pair with low < high.

    Parameters
    ----------
    scaling : {"dtype", "image"} or (low, high)
        How pixel values become [0, 1] (module notes).

    Examples
    --------
    >>> check_scaling((0, 4095))
    (0.0, 4095.0)
    """
    if isinstance(scaling, str) and scaling in ("dtype", "image"):
        return scaling
    try:
        low, high = (float(v) for v in scaling)  # type: ignore[union-attr]
        valid = not isinstance(scaling, str) and math.isfinite(low) and math.isfinite(high) and low < high
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"scaling={scaling!r} must be 'dtype', 'image' or a (low, high) pair with low < high")
    return low, high


def read_scaled(path: Path, scaling: Scaling = "dtype") -> tuple[np.ndarray, str]:
    """An image file as (H, W, C) pixels on [0, 1]'s scale, and how it was scaled.

    8-bit files under ``scaling="dtype"`` come back as uint8 (0..255 = 0..1, as stored); every other
    file or scaling gives float32 in [0, 1].

    Parameters
    ----------
    path : pathlib.Path
        Any format Pillow reads; palette, alpha and CMYK images become RGB.
    scaling : {"dtype", "image"} or (low, high)
        ``"dtype"``: divide by the dtype's range (uint8 / 255, uint16 / 65535); float files must
        already lie in [0, 1], 32-bit integer files need another choice. ``"image"``: this image's
        own min..max -> 0..1. ``(low, high)``: low -> 0, high -> 1 (values outside are refused).

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "grey16.png"
    ...     Image.fromarray(np.full((2, 3), 6553, dtype=np.uint16)).save(path)
    ...     array, how = read_scaled(path)
    >>> array.dtype, round(float(array.max()), 4), how
    (dtype('float32'), 0.1, 'uint16 / 65535')
    """
    scaling = check_scaling(scaling)
    array = _open(path, "image")
    array = array[..., None] if array.ndim == 2 else array
    if scaling == "dtype":
        if array.dtype == np.uint8:
            return array, "uint8 / 255"
        if array.dtype == np.uint16:
            return (array / np.float32(65535)).astype(np.float32), "uint16 / 65535"
        if np.issubdtype(array.dtype, np.floating):
            low, high = float(array.min()), float(array.max())
            if not (np.isfinite(array).all() and low >= 0 and high <= 1):
                raise ValueError(f"image file {str(path)!r} holds floats in [{low:.4g}, {high:.4g}], not in [0, 1]; "
                                 "pass scaling=(low, high) for its range, or scaling='image'")
            return array.astype(np.float32), "none (floats in [0, 1])"
        raise ValueError(f"image file {str(path)!r} holds {array.dtype} values whose range its dtype does not say; "
                         "pass scaling=(low, high), or scaling='image'")
    values = array.astype(np.float64)
    if scaling == "image":
        low, high = float(values.min()), float(values.max())
        how = f"per image: (x - {low:g}) / ({high:g} - {low:g})"
        if high == low:
            return np.zeros(array.shape, dtype=np.float32), how
    else:
        low, high = scaling
        how = f"(x - {low:g}) / ({high:g} - {low:g})"
        if values.min() < low or values.max() > high:
            raise ValueError(f"image file {str(path)!r} has values in [{values.min():g}, {values.max():g}], "
                             f"outside scaling=({low:g}, {high:g})")
    return ((values - low) / (high - low)).astype(np.float32), how


def read_image(path: Path, scaling: Scaling = "dtype") -> np.ndarray:
    """An image file as (H, W, C) pixels (C = 1 for grey, 3 for colour): :func:`read_scaled` without the note.

    Parameters
    ----------
    path : pathlib.Path
        Any format Pillow reads; palette, alpha and CMYK images become RGB.
    scaling : {"dtype", "image"} or (low, high)
        How values become [0, 1] (see :func:`read_scaled`): 8-bit files under ``"dtype"`` stay uint8,
        everything else is float32 in [0, 1].

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "grey.png"
    ...     Image.new("L", (3, 2), 7).save(path)
    ...     array = read_image(path)
    >>> array.shape, array.dtype, int(array[0, 0, 0])
    ((2, 3, 1), dtype('uint8'), 7)
    """
    return read_scaled(path, scaling)[0]


def read_mask(path: Path) -> np.ndarray:
    """A mask file as bool (H, W); only 0/1 or 0/255 values are accepted (grey or equal RGB channels).

    Parameters
    ----------
    path : pathlib.Path
        The mask file.
    """
    array = _open(path, "mask")
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise ValueError(f"mask file {str(path)!r} is a colour image with differing channels; expected a binary mask")
        array = array[..., 0]
    values = np.unique(array)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ValueError(
            f"mask file {str(path)!r} has values [{shown}]; expected a binary mask with values 0/1 or 0/255"
        )
    return array > 0


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, C) image and (H, W) mask -> (C, size, size) image of the same dtype and (size, size) bool.

    Image: bilinear with half-pixel centres and no antialiasing, rounded to uint8 for uint8 images
    (what ``cv2.resize(..., INTER_LINEAR)`` in the reference-style pipelines gives), kept as float32
    in [0, 1] for float images; mask: nearest, so it stays exactly binary. ``size=None`` keeps the
    file's size.

    Parameters
    ----------
    image : uint8 or float32 array (H, W, C)
        As :func:`read_image` returns it.
    mask : bool array (H, W)
        As :func:`read_mask` returns it.
    size : int, optional
        Side of the square result; None keeps the file's size.

    Examples
    --------
    >>> image, mask = resize_pair(np.zeros((4, 4, 3), np.uint8), np.eye(4, dtype=bool), 2)
    >>> image.shape, mask.astype(int).tolist()
    ((3, 2, 2), [[1, 0], [0, 1]])
    """
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if size is None or image.shape[:2] == (size, size):
        return chw.numpy(), mask
    resized = F.interpolate(chw[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    if image.dtype != np.uint8:
        return resized.clamp(0, 1).numpy(), small.numpy() > 0.5
    return resized.round().clamp(0, 255).to(torch.uint8).numpy(), small.numpy() > 0.5
