"""Atomic writes: a file or folder appears at its path complete, or not at all.

Every writer in the package (results, banks, dataset caches, the zoo's manifest, reports, sweep
stores) goes through :func:`atomic_path`: the content is written under a hidden temporary name in
the destination's folder (same file system, so the final rename is atomic) and renamed into place
only when the writer returned without an error. An interrupted write leaves the previous content
in place; the temporary is removed on errors, and stale temporaries of killed processes are removed
by the next write to the same path.

Examples
--------
>>> import tempfile, pathlib
>>> from pdcr_lab.atomic import atomic_path
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_path(folder / "note.txt") as tmp:
...     _ = tmp.write_text("written whole")
>>> (folder / "note.txt").read_text()
'written whole'
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text", "write_bytes", "STALE_SECONDS"]

#: Temporaries older than this (seconds) are taken as left by a killed writer and removed.
STALE_SECONDS = 3600.0
_TMP = ".tmp"
_OLD = ".old"


def _hidden(path: Path, suffix: str) -> Path:
    """A fresh hidden folder beside `path`, named after it (so stale ones can be found again)."""
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix))


def _clean_stale(path: Path) -> None:
    """Remove temporaries of `path` left by writers that were killed (older than STALE_SECONDS)."""
    now = time.time()
    for leftover in path.parent.glob(f".{path.name}.*"):
        if leftover.suffix not in (_TMP, _OLD):
            continue
        try:
            if now - leftover.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
        except OSError:  # another writer removed it first
            pass


@contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int | None = 0o644, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one rename.

    Parameters
    ----------
    path : str or os.PathLike
        The destination: a file, or a folder (e.g. a ``.zarr`` store) when the writer makes one.
        Its parent folder is created.
    mode : int, optional
        Permission bits of a written file (temporaries are private by default; a result or a cache
        is meant to be read by others). None keeps the temporary's.
    replace : bool
        Replace what is at `path`. False: create only; if something appeared at `path` meanwhile
        (another process won a race), ``FileExistsError`` is raised and it is kept untouched.

    Notes
    -----
    A folder cannot be renamed over a non-empty folder, so replacing a folder takes two renames
    (the old one aside, the new one in); the old one is removed afterwards.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    holder = _hidden(path, _TMP)
    staged = holder / path.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"the writer of {str(path)!r} wrote nothing to {str(staged)!r}")
        if staged.is_file() and mode is not None:
            os.chmod(staged, mode)
        if not replace:
            _create_only(staged, path)
        elif staged.is_dir() and path.is_dir():
            aside = _hidden(path, _OLD)
            os.replace(path, aside / path.name)
            os.replace(staged, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staged, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _create_only(staged: Path, path: Path) -> None:
    """Move `staged` to `path` unless something is there; the check and the move are one system call."""
    try:
        if staged.is_dir():
            # rename(2) onto a non-empty folder fails (ENOTEMPTY/EEXIST), onto nothing it succeeds
            os.rename(staged, path)
        else:
            os.link(staged, path)  # a hard link never overwrites
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "created by someone else meanwhile; it is kept", str(path)) from None
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically and return the path.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    text : str
        Content.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    data : bytes
        Content.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
