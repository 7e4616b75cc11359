"""On-disk cache of generated datasets: one compressed .npz per (generator, version, size, seed)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path

__all__ = ["cache_dir", "cached_arrays"]

Arrays = dict[str, Any]


def cache_dir() -> Path:
    """The cache folder: ``$PDCR_LAB_CACHE`` if set, else ``~/.cache/pdcr_lab``."""
    env = os.environ.get("PDCR_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pdcr_lab"


def _write(path: Path, arrays: Arrays) -> None:
    # Readers never see a half-written file, and two processes generating the same set at once
    # just replace each other's identical file; the file is readable by others (a lab's shared cache).
    with atomic_path(path, mode=0o644) as staged, open(staged, "wb") as fh:
        np.savez_compressed(
            fh,
            images=arrays["images"],
            masks=np.packbits(arrays["masks"], axis=-1),
            ids=np.asarray(arrays["ids"]),
            meta=np.asarray(json.dumps(arrays["meta"])),
        )


def _read(path: Path) -> Arrays:
    with np.load(path, allow_pickle=False) as f:
        images = f["images"]
        width = images.shape[-1]
        masks = np.unpackbits(f["masks"], axis=-1, count=width).astype(bool)
        ids = [str(i) for i in f["ids"]]
        meta = json.loads(str(f["meta"]))
    if not (len(images) == len(masks) == len(ids) == len(meta)) or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError("inconsistent array lengths or shapes")
    return {"images": images, "masks": masks, "ids": ids, "meta": meta}


def cached_arrays(key: str, make: Callable[[], Arrays], *, cache: bool = True) -> Arrays:
    """Arrays for `key` from the cache, else from `make()` (then written to the cache).

    `make` returns ``images`` (uint8 N, C, H, W), ``masks`` (bool N, H, W), ``ids`` and ``meta``
    (one JSON-serialisable dict per image). An unreadable or inconsistent cache file is
    regenerated and overwritten, with a warning.

    Parameters
    ----------
    key : str
        File name (without ``.npz``) in :func:`cache_dir`; it names the generator, its version, the
        size and the seed.
    make : callable() -> dict
        Generates the arrays when the cache has none.
    cache : bool
        False: always call `make` and write nothing.

    Examples
    --------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> def make():
    ...     return {"images": np.zeros((1, 1, 2, 2), np.uint8), "masks": np.ones((1, 2, 2), bool),
    ...             "ids": ["a"], "meta": [{}]}
    >>> with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ, PDCR_LAB_CACHE=folder):
    ...     first = cached_arrays("demo_v1", make)                      # generated and written
    ...     again = cached_arrays("demo_v1", lambda: 1 / 0)             # read back: make not called
    >>> again["ids"], bool(again["masks"].all())
    (['a'], True)
    """
    if not cache:
        return make()
    path = cache_dir() / f"{key}.npz"
    if path.exists():
        try:
            return _read(path)
        except Exception as exc:  # any damage (truncated zip, bad JSON, wrong keys) means: rebuild
            warnings.warn(f"cache file {str(path)!r} is unreadable ({exc}); regenerating it", stacklevel=3)
    arrays = make()
    try:
        _write(path, arrays)
    except OSError as exc:  # a read-only home must not stop the user from getting the data
        warnings.warn(f"cannot write cache file {str(path)!r} ({exc}); continuing without cache", stacklevel=3)
    return arrays
