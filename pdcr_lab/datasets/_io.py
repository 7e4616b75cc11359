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
    """An image file as uint8 (H, W, C) (C = 1 for grey, 3 for colour)."""
    array = _open(path, "image")
    if array.dtype != np.uint8:  # 16-bit grey: scale its own range to 8 bits
        top = 65535.0 if array.max() > 255 else 255.0
        array = np.round(np.clip(array / top, 0, 1) * 255).astype(np.uint8)
    return array[..., None] if array.ndim == 2 else array


def read_mask(path: Path) -> np.ndarray:
    """A mask file as bool (H, W); only 0/1 or 0/255 values are accepted (grey or equal RGB channels)."""
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
    """
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if size is None or image.shape[:2] == (size, size):
        return chw.numpy(), mask
    resized = F.interpolate(chw[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return resized.round().clamp(0, 255).to(torch.uint8).numpy(), small.numpy() > 0.5
