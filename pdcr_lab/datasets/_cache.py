"""On-disk cache of generated datasets: one compressed .npz per (generator, version, size, seed)."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_dir", "cached_arrays"]

Arrays = dict[str, Any]


def cache_dir() -> Path:
    """The cache folder: ``$PDCR_LAB_CACHE`` if set, else ``~/.cache/pdcr_lab``."""
    env = os.environ.get("PDCR_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pdcr_lab"


def _write(path: Path, arrays: Arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: readers never see a half-written file, and two
    # processes generating the same set at once just replace each other's identical file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(
                fh,
                images=arrays["images"],
                masks=np.packbits(arrays["masks"], axis=-1),
                ids=np.asarray(arrays["ids"]),
                meta=np.asarray(json.dumps(arrays["meta"])),
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache may be shared by a lab's users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
