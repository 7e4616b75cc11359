"""Reading image and mask files, and resizing them the way the reference pipeline does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["read_image", "read_mask", "resize_pair"]


def _open(path: Path, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "RGBA", "CMYK", "LA", "YCbCr"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            elif im.mode in ("I;16", "I;16B", "I", "F"):
                # 16-bit and float files keep their range; the caller scales them.
                return np.asarray(im, dtype=np.float64)
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {exc}") from exc


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, C) (C = 1 for grey, 3 for colour).

    Parameters
    ----------
    path : pathlib.Path
        Any format Pillow reads; palette, alpha and CMYK images become RGB, 16-bit grey is scaled
        to 8 bits.

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
    array = _open(path, "image")
    if array.dtype != np.uint8:  # 16-bit grey: scale its own range to 8 bits
        top = 65535.0 if array.max() > 255 else 255.0
        array = np.round(np.clip(array / top, 0, 1) * 255).astype(np.uint8)
    return array[..., None] if array.ndim == 2 else array


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
    """(H, W, C) uint8 image and (H, W) mask -> (C, size, size) uint8 and (size, size) bool.

    Image: bilinear with half-pixel centres and no antialiasing, rounded to uint8 (what
    ``cv2.resize(..., INTER_LINEAR)`` in the reference-style pipelines gives); mask: nearest, so
    it stays exactly binary. ``size=None`` keeps the file's size.

    Parameters
    ----------
    image : uint8 array (H, W, C)
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
    return resized.round().clamp(0, 255).to(torch.uint8).numpy(), small.numpy() > 0.5
