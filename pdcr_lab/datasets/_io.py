"""Reading image and mask files, normalising them to [0, 1], and resizing them.

Files: PNG, TIFF, JPEG and BMP, 8- or 16-bit, grey or colour, always returned as (H, W, C) pixels:
grey -> C = 1, RGB -> C = 3, alpha dropped (RGBA -> RGB, grey + alpha -> grey), palettes expanded to
RGB. TIFFs are read with ``tifffile`` (uint8, uint16, float32; (H, W), (H, W, C) or channels-first
(C, H, W) with C <= 4). 16-bit colour PNGs, which Pillow silently cuts to 8 bits, are decoded here
with numpy + zlib.

Pixel values become [0, 1] by one rule for every image of a dataset (``normalize``): ``"dtype"``
(default) divides by the file's dtype range (8-bit / 255, 16-bit / 65535), so a dim and a bright
16-bit image keep their relative brightness; ``"range"`` maps each image's own min..max to 0..1
(``"image"`` is accepted as its old name); ``"percentile"`` maps each image's low/high percentiles
(``percentiles``, by default (1, 99.8), the microscopy habit) to 0..1 and clips; ``(low, high)`` maps
low -> 0 and high -> 1 for every image. 8-bit files under ``"dtype"`` stay uint8 (exactly as
stored); everything else becomes float32. :func:`read_scaled` says how each file was normalised, and
the folder loaders record it per image (``metadata(split)[i]["normalize"]``).

Resizing (:func:`resize_pair`) follows one of two rules (``resample``): ``"pil"``, Pillow's
antialiasing bilinear filter for images and nearest for masks, as in the PdCR authors' code (the
paper loaders' default), or ``"torch"``, bilinear without antialiasing and torch nearest (the folder
loaders' default, unchanged so that models trained on user folders keep their inputs).
"""

from __future__ import annotations

import math
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_choice

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESAMPLE_CHOICES",
    "Normalize",
    "Resample",
    "check_normalize",
    "check_percentiles",
    "is_dim_16bit",
    "normalize_pixels",
    "read_image",
    "read_mask",
    "read_normalized",
    "read_pixels",
    "read_scaled",
    "resize_pair",
    "warn_dim_16bit",
]

#: How pixel values become [0, 1]: by the dtype's range, each image's min..max or percentiles, or a fixed (low, high).
Normalize = Union[Literal["dtype", "range", "percentile"], tuple[float, float]]
#: How images and masks are resized: Pillow like the paper's authors, or torch (see :func:`resize_pair`).
Resample = Literal["pil", "torch"]
RESAMPLE_CHOICES = ("pil", "torch")
#: File extensions the readers accept (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
DEFAULT_PERCENTILES = (1.0, 99.8)
#: 16-bit images whose maximum is at most this use 1/16 of the uint16 range (12-bit data, usually).
DIM_16BIT_MAX = 4095

_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_TIFF_ALPHA = (1, 2)  # EXTRASAMPLE associated / unassociated alpha
_TIFF_STACK_AXES = set("ZTI")  # tifffile axis codes of slices, time points and page sequences


def check_normalize(normalize: Normalize) -> Normalize:
    """`normalize` if it is ``"dtype"``, ``"range"``, ``"percentile"`` or a finite ``(low, high)`` with low < high.

    ``"image"`` (the old name of ``"range"``) is accepted and returned as ``"range"``.

    Parameters
    ----------
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How pixel values become [0, 1] (module notes).

    Examples
    --------
    >>> check_normalize((0, 4095)), check_normalize("image")
    ((0.0, 4095.0), 'range')
    """
    if isinstance(normalize, str) and normalize in ("dtype", "range", "percentile", "image"):
        return "range" if normalize == "image" else normalize
    try:
        low, high = (float(v) for v in normalize)  # type: ignore[union-attr]
        valid = not isinstance(normalize, str) and math.isfinite(low) and math.isfinite(high) and low < high
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"normalize={normalize!r} must be 'dtype', 'range', 'percentile' "
                         "or a (low, high) pair with low < high")
    return low, high


def check_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    """`percentiles` as a (low, high) pair of floats with 0 <= low < high <= 100.

    Parameters
    ----------
    percentiles : (low, high)
        Percentiles mapped to 0 and 1 by ``normalize="percentile"``.

    Examples
    --------
    >>> check_percentiles([1, 99.8])
    (1.0, 99.8)
    """
    try:
        low, high = (float(v) for v in percentiles)
        valid = not isinstance(percentiles, str) and 0 <= low < high <= 100
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"percentiles={percentiles!r} must be a (low, high) pair with 0 <= low < high <= 100")
    return low, high


# -- reading files ------------------------------------------------------------------------------------
def _png_header(path: Path) -> tuple[int, int, int] | None:
    """(bit depth, colour type, interlace) of a PNG file, None for any other file."""
    with open(path, "rb") as file:
        head = file.read(29)
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    depth, colour, _, _, interlace = struct.unpack(">BBBBB", head[24:29])
    return depth, colour, interlace


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG as (H, W, samples) uint16: its IDAT stream inflated and the five row filters undone."""
    data = path.read_bytes()
    width, height, colour, chunks, pos = 0, 0, 0, [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IHDR":
            width, height, _, colour = struct.unpack(">IIBB", data[pos + 8 : pos + 18])
        elif kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    bpp = 2 * _PNG_CHANNELS[colour]
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    if raw.size < height * (1 + width * bpp):
        raise ValueError(f"image data is truncated ({raw.size} bytes for {height}x{width} pixels of {bpp} bytes)")
    rows = raw[: height * (1 + width * bpp)].reshape(height, 1 + width * bpp)
    kinds, filtered = rows[:, 0].astype(np.int16), rows[:, 1:].reshape(height, width, bpp).astype(np.int16)
    out = np.zeros((height + 1, width + 1, bpp), dtype=np.int16)  # a zero row above and a zero column left
    # A byte depends on its left, upper and upper-left neighbours (Sub, Average, Paeth): walking the
    # anti-diagonals keeps the work vectorised (H + W steps) instead of a Python loop per pixel.
    for d in range(height + width - 1):
        y = np.arange(max(0, d - width + 1), min(height, d + 1))
        x = d - y
        a, b, c = out[y + 1, x], out[y, x + 1], out[y, x]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        kind = kinds[y][:, None]
        predictor = np.select([kind == 1, kind == 2, kind == 3, kind == 4], [a, b, (a + b) // 2, paeth], 0)
        out[y + 1, x + 1] = (filtered[y, x] + predictor) & 0xFF
    return np.ascontiguousarray(out[1:, 1:].astype(np.uint8)).view(">u2").astype(np.uint16)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", "RGBa"):
            im = im.convert("RGB")
        elif im.mode in ("1", "LA", "La"):
            im = im.convert("L")
        if im.mode in _SIXTEEN or (im.mode == "I" and im.format == "PNG"):
            # PNG holds at most 16 bits a sample, even when Pillow opens it as 32-bit "I"
            return np.asarray(im).astype(np.uint16)
        if im.mode == "F":
            return np.array(im, dtype=np.float32)
        return np.array(im)  # a writable copy (torch.from_numpy warns on read-only arrays)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.series) != 1:
            raise ValueError(f"it holds {len(tif.series)} image series; expected a single image")
        series, page = tif.series[0], tif.pages[0]
        if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
            return _read_pillow(path)  # Pillow applies the colour map
        array = series.asarray()
        kept = [k for k, n in enumerate(series.shape) if n != 1]
        axes = "".join(series.axes[k] for k in kept)
        array = array.reshape([series.shape[k] for k in kept])
        extras = sum(1 for e in page.extrasamples if e in _TIFF_ALPHA)
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and not (_TIFF_STACK_AXES & set(axes)):
        # Samples ("S") or ImageJ/OME channels ("C") say where the channels are; for shaped files
        # without that ("Q"), a last axis of at most 4 is channels-last, else a first one channels-first.
        first = axes[0] in "SC" or (axes[-1] != "S" and array.shape[-1] > 4)
        array = np.moveaxis(array, 0, -1) if first else array
    if array.ndim != 3 or array.shape[-1] > 4 or _TIFF_STACK_AXES & set(axes):
        raise ValueError(f"its pixels have shape {tuple(series.shape)} (axes {series.axes!r}); expected one 2-D "
                         "image (H, W), (H, W, C) or (C, H, W) with C <= 4, not a stack of pages, slices or "
                         "time points: save the image to use as a single 2-D TIFF")
    if extras and array.shape[-1] - extras in (1, 3):
        array = array[..., : array.shape[-1] - extras]
    if array.dtype == bool:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind not in "ui":
        raise ValueError(f"its pixels have dtype {array.dtype}; expected integers or floats")
    return np.ascontiguousarray(array)


def read_pixels(path: str | Path, what: str = "image") -> np.ndarray:
    """A file's pixels as stored, always (H, W, C): uint8, uint16, another integer type, or float32.

    Grey images have C = 1 and colour ones C = 3 (alpha dropped, palettes expanded to RGB); TIFFs may
    also hold 2 or 4 channels.

    Parameters
    ----------
    path : str or pathlib.Path
        A PNG, TIFF, JPEG or BMP file (any other format Pillow reads also works).
    what : str
        What the file is (``"image"``, ``"mask"``), for the error messages.

    Examples
    --------
    >>> import tempfile
    >>> import tifffile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     tifffile.imwrite(f"{folder}/rgb.tif", np.zeros((3, 4, 5), np.uint16), photometric="rgb")
    ...     pixels = read_pixels(f"{folder}/rgb.tif")
    >>> pixels.shape, pixels.dtype
    ((4, 5, 3), dtype('uint16'))
    """
    from PIL import UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = _read_tiff(path)
        else:
            header = _png_header(path)
            if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
                if header[2]:
                    raise ValueError("it is an interlaced 16-bit colour PNG, which this reader does not decode; "
                                     "save it without interlacing, or as a 16-bit TIFF")
                array = _read_png16(path)[..., : 1 if header[1] == 4 else 3]  # alpha dropped
            else:
                array = _read_pillow(path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, KeyError, struct.error, zlib.error) as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {exc}") from exc
    return array[..., None] if array.ndim == 2 else array


# -- normalising ---------------------------------------------------------------------------------------
def is_dim_16bit(pixels: np.ndarray, normalize: Normalize = "dtype") -> bool:
    """True for uint16 pixels read under ``normalize="dtype"`` whose maximum is at most 4095.

    Such a file uses 1/16 of the uint16 range (12-bit data, usually) and loads dim.

    Parameters
    ----------
    pixels : array
        A file's pixels, as :func:`read_pixels` returns them.
    normalize : {"dtype", "range", "percentile"} or (low, high)
        The rule they are read under; only ``"dtype"`` makes them dim.

    Examples
    --------
    >>> is_dim_16bit(np.array([0, 4095], np.uint16)), is_dim_16bit(np.array([0, 4096], np.uint16))
    (True, False)
    """
    return (isinstance(normalize, str) and normalize == "dtype" and pixels.dtype == np.uint16
            and int(pixels.max(initial=0)) <= DIM_16BIT_MAX)


def warn_dim_16bit(names: Sequence[str], stacklevel: int = 2) -> None:
    """One ``UserWarning`` about dim 16-bit files read under ``normalize="dtype"`` (nothing if `names` is empty).

    Parameters
    ----------
    names : sequence of str
        The files (names) whose maximum is at most 4095.
    stacklevel : int
        As in :func:`warnings.warn`.
    """
    if not names:
        return
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    warnings.warn(
        f"{len(names)} 16-bit image file(s) use at most 1/16 of the uint16 range (max <= {DIM_16BIT_MAX}, e.g. "
        f"12-bit data stored in 16-bit files) and load dim under normalize='dtype': {shown}; pass "
        f"normalize='percentile', normalize='range' or normalize=(0, {DIM_16BIT_MAX}) "
        "(on the command line: --normalize percentile or range)",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def normalize_pixels(
    pixels: np.ndarray,
    normalize: Normalize = "dtype",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    *,
    name: str = "image",
) -> tuple[np.ndarray, str]:
    """Pixels as read -> values on [0, 1]'s scale, and a note saying how.

    8-bit pixels under ``normalize="dtype"`` come back as uint8 (0..255 = 0..1, as stored); every other
    case gives float32 in [0, 1].

    Parameters
    ----------
    pixels : array
        As :func:`read_pixels` returns them.
    normalize : {"dtype", "range", "percentile"} or (low, high)
        ``"dtype"``: divide by the dtype's range (uint8 / 255, uint16 / 65535); floats must already
        lie in [0, 1], other integer types need another choice. ``"range"``: this image's min..max
        -> 0..1. ``"percentile"``: its `percentiles` -> 0..1, clipped. ``(low, high)``: low -> 0,
        high -> 1 (values outside are refused).
    percentiles : (low, high)
        Used by ``"percentile"``, in 0..100.
    name : str
        The file, for the error messages.

    Examples
    --------
    >>> values, note = normalize_pixels(np.arange(101, dtype=np.uint16), "percentile", (10, 90))
    >>> float(values[10]), float(values[50]), float(values[95]), note
    (0.0, 0.5, 1.0, 'per image: percentiles (10, 90) = (10, 90) -> 0..1, clipped')
    """
    normalize = check_normalize(normalize)
    if normalize == "dtype":
        if pixels.dtype == np.uint8:
            return pixels, "uint8 / 255"
        if pixels.dtype == np.uint16:
            return (pixels / np.float32(65535)).astype(np.float32), "uint16 / 65535"
        if np.issubdtype(pixels.dtype, np.floating):
            low, high = float(pixels.min()), float(pixels.max())
            if not (np.isfinite(pixels).all() and low >= 0 and high <= 1):
                raise ValueError(f"image file {name!r} holds floats in [{low:.4g}, {high:.4g}], not in [0, 1]; "
                                 "pass normalize=(low, high) for its range, normalize='range' or 'percentile'")
            return pixels.astype(np.float32), "none (floats in [0, 1])"
        raise ValueError(f"image file {name!r} holds {pixels.dtype} values whose range its dtype does not say; "
                         "pass normalize=(low, high), normalize='range' or 'percentile'")
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"image file {name!r} holds NaN or infinite values")
    clip = False
    if normalize == "range":
        low, high = float(values.min()), float(values.max())
        how = f"per image: (x - {low:g}) / ({high:g} - {low:g})"
    elif normalize == "percentile":
        q = check_percentiles(percentiles)
        low, high = (float(v) for v in np.percentile(values, q))
        how = f"per image: percentiles ({q[0]:g}, {q[1]:g}) = ({low:g}, {high:g}) -> 0..1, clipped"
        clip = True
        if high == low:  # a mostly flat image: its percentiles coincide, its min..max still says something
            low, high = float(values.min()), float(values.max())
            how += f"; equal, so min..max ({low:g}, {high:g})"
    else:
        low, high = normalize
        how = f"(x - {low:g}) / ({high:g} - {low:g})"
        if values.min() < low or values.max() > high:
            raise ValueError(f"image file {name!r} has values in [{values.min():g}, {values.max():g}], "
                             f"outside normalize=({low:g}, {high:g})")
    if high == low:
        return np.zeros(pixels.shape, dtype=np.float32), how
    scaled = (values - low) / (high - low)
    return (np.clip(scaled, 0, 1) if clip else scaled).astype(np.float32), how


def read_normalized(
    path: str | Path, normalize: Normalize = "dtype", percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> tuple[np.ndarray, np.ndarray, str]:
    """(pixels as stored, (H, W, C) pixels on [0, 1]'s scale, note) of an image file; no warning.

    Parameters
    ----------
    path : str or pathlib.Path
        PNG, TIFF, JPEG or BMP (see :func:`read_pixels`).
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How values become [0, 1] (see :func:`normalize_pixels`).
    percentiles : (low, high)
        Used by ``normalize="percentile"``.
    """
    pixels = read_pixels(path)
    return (pixels, *normalize_pixels(pixels, normalize, percentiles, name=str(path)))


def read_scaled(
    path: str | Path, normalize: Normalize = "dtype", percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> tuple[np.ndarray, str]:
    """An image file as (H, W, C) pixels on [0, 1]'s scale, and how it was normalised.

    Warns when a 16-bit file read under ``normalize="dtype"`` uses at most 1/16 of the range.

    Parameters
    ----------
    path : str or pathlib.Path
        PNG, TIFF, JPEG or BMP (see :func:`read_pixels`).
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How values become [0, 1] (see :func:`normalize_pixels`).
    percentiles : (low, high)
        Used by ``normalize="percentile"``.

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
    pixels, scaled, how = read_normalized(path, normalize, percentiles)
    if is_dim_16bit(pixels, check_normalize(normalize)):
        warn_dim_16bit([Path(path).name])
    return scaled, how


def read_image(
    path: str | Path, normalize: Normalize = "dtype", percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """An image file as (H, W, C) pixels (C = 1 for grey, 3 for colour): :func:`read_scaled` without the note.

    Parameters
    ----------
    path : str or pathlib.Path
        PNG, TIFF, JPEG or BMP (see :func:`read_pixels`).
    normalize : {"dtype", "range", "percentile"} or (low, high)
        How values become [0, 1] (see :func:`normalize_pixels`): 8-bit files under ``"dtype"`` stay
        uint8, everything else is float32 in [0, 1].
    percentiles : (low, high)
        Used by ``normalize="percentile"``.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "grey.png"
    ...     Image.new("L", (3, 2), 7).save(path)
    ...     array = read_image(path)
    >>> array.shape, array.dtype, int(array[0, 0, 0])
    ((2, 3, 1), dtype('uint8'), 7)
    """
    return read_scaled(path, normalize, percentiles)[0]


def read_mask(path: str | Path, binarize: bool = False) -> np.ndarray:
    """A mask file as bool (H, W).

    Parameters
    ----------
    path : str or pathlib.Path
        The mask file (PNG, TIFF, ...; grey, or colour with equal channels).
    binarize : bool
        False: only 0/1 or 0/255 values are accepted. True: every non-zero value is foreground
        (instance or class labels of any integer type; in a colour mask, any non-zero channel).

    Examples
    --------
    >>> import tempfile
    >>> import tifffile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     tifffile.imwrite(f"{folder}/labels.tif", np.array([[0, 7], [300, 0]], np.uint16))
    ...     read_mask(f"{folder}/labels.tif", binarize=True).tolist()
    [[False, True], [True, False]]
    """
    hint = "; pass binarize=True to treat every non-zero label as foreground"
    array = read_pixels(path, "mask")
    if binarize:
        return (array != 0).any(axis=-1)
    if not (array == array[..., :1]).all():
        raise ValueError(f"mask file {str(path)!r} is a colour image with differing channels; "
                         f"expected a binary mask{hint}")
    array = array[..., 0]
    values = np.unique(array)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if len(values) > 8 else "")
        raise ValueError(f"mask file {str(path)!r} has values [{shown}]; expected a binary mask with values "
                         f"0/1 or 0/255{hint}")
    return array > 0


def _pil_resize(plane: np.ndarray, size: int, method: int) -> np.ndarray:
    """One (H, W) uint8 or float32 plane resized to (size, size) by Pillow (mode "L" or "F") with `method`."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize((size, size), method))


def resize_pair(
    image: np.ndarray, mask: np.ndarray | None, size: int | None, resample: Resample = "torch"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) image and (H, W) mask -> (C, size, size) image of the same dtype and (size, size) bool.

    Two rules, since a model answers to the exact pixels it was trained on:

    - ``"pil"``: Pillow's ``resize((size, size), BILINEAR)`` for the image, whose filter widens with
      the reduction factor (it antialiases when downsampling), and ``NEAREST`` (sampled at pixel
      centres) for the mask: what the PdCR authors' code does, so the paper loaders use it. Each
      channel is resized on its own (mode "L" for uint8, "F" for float32), which for uint8 RGB gives
      exactly Pillow's RGB result.
    - ``"torch"``: bilinear with half-pixel centres and no antialiasing, rounded to uint8 for uint8
      images (``cv2.resize(..., INTER_LINEAR)``'s rule, up to its fixed-point rounding), and
      ``torch`` nearest for the mask (sampled at ``floor(i * scale)``); the folder loaders' default, so
      models trained on user folders keep seeing the inputs they were trained on.

    uint8 images stay uint8; float images are float32 clipped to [0, 1]. The mask stays exactly binary.

    Parameters
    ----------
    image : uint8 or float32 array (H, W, C)
        As :func:`read_image` returns it.
    mask : bool array (H, W), optional
        As :func:`read_mask` returns it; None gives None.
    size : int, optional
        Side of the square result; None keeps the file's size (either rule).
    resample : {"torch", "pil"}
        The rule above.

    Examples
    --------
    >>> image, mask = resize_pair(np.zeros((4, 4, 3), np.uint8), np.eye(4, dtype=bool), 2)
    >>> image.shape, mask.astype(int).tolist()
    ((3, 2, 2), [[1, 0], [0, 1]])

    Every third column lit (mean 85), shrunk 4x: Pillow averages, torch samples two columns and aliases.

    >>> stripes = np.tile(np.array([0, 255, 0], np.uint8), (12, 4))[..., None]
    >>> [resize_pair(stripes, None, 3, rule)[0][0, 0].tolist() for rule in ("pil", "torch")]
    [[91, 80, 91], [128, 0, 128]]
    """
    check_choice("resample", resample, RESAMPLE_CHOICES)
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if size is None or image.shape[:2] == (size, size):
        return chw.numpy(), mask
    if resample == "pil":
        from PIL import Image

        planes = image if image.dtype == np.uint8 else image.astype(np.float32)
        resized = np.stack([_pil_resize(planes[..., c], size, Image.Resampling.BILINEAR)
                            for c in range(image.shape[2])])
        small = None if mask is None else _pil_resize(mask.astype(np.uint8), size, Image.Resampling.NEAREST) > 0
        return (resized if image.dtype == np.uint8 else np.clip(resized, 0, 1)), small
    interpolated = F.interpolate(chw[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    small = None
    if mask is not None:
        nearest = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(size, size), mode="nearest")
        small = nearest[0, 0].numpy() > 0.5
    if image.dtype != np.uint8:
        return interpolated.clamp(0, 1).numpy(), small
    return interpolated.round().clamp(0, 255).to(torch.uint8).numpy(), small
