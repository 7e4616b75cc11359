"""Atomic writes: a file or folder appears at its path complete, or not at all.

Every writer in the package (results, banks, dataset caches, the zoo's manifest, reports, sweep
stores) goes through :func:`atomic_path`: the content is written under a hidden temporary name in
the destination's folder (same file system, so the final rename is atomic) and renamed into place
only when the writer returned without an error. An interrupted write leaves the previous content
in place; the temporary is removed on errors.

Temporaries of killed writers
    A temporary is named ``.<name>.<host>~<pid>~<random>.<kind>`` after its destination, the
    writer's host and process id (``kind``: ``tmp`` for what is being written, ``old`` for a
    replaced folder set aside, ``del`` for a folder being deleted). The next write to the same
    destination (:func:`clean_stale`) removes the temporaries whose process is no longer alive on
    this host at once, and never those of a live process (however long it writes); those of other
    hosts (a shared file system), and those named by older versions of this module, are removed
    once older than :data:`STALE_SECONDS`. A process id can be reused: a temporary of a dead writer
    whose id went to another process stays until that process ends. (Hosts are told apart by name:
    containers sharing a folder need distinct host names, as they have by default.)

Replacing a folder
    A folder cannot be renamed over a non-empty folder. On Linux the new folder and the old one are
    swapped in one step (``renameat2(RENAME_EXCHANGE)``), so the destination always holds one of
    them. Where that is not available (other systems, some network file systems), the old folder is
    renamed aside and the new one in: a writer killed between the two renames leaves nothing at the
    destination and the old folder in its ``.old`` temporary, which the next write (or
    :func:`clean_stale`) puts back before anything else.

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

import ctypes
import errno
import functools
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HOST", "STALE_SECONDS", "atomic_path", "clean_folder", "clean_stale", "discard", "write_bytes", "write_text"]

#: Temporaries of other hosts (or unnamed writers) older than this (seconds) are taken as left by a
#: killed writer and removed.
STALE_SECONDS = 3600.0
#: This machine's name as written into temporaries' names (characters other than letters, digits and
#: ``-`` replaced, so that the name can be read back).
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"
_TMP = ".tmp"
_OLD = ".old"
_DEL = ".del"
_KINDS = (_TMP, _OLD, _DEL)
# `.<name>.<host>~<pid>~<random>.<kind>`; older versions wrote `.<name>.<random>.<kind>` (no writer)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:(?P<host>[A-Za-z0-9-]+)~(?P<pid>\d+)~)?[a-z0-9_]+\.(?:tmp|old|del)")


def _hidden(path: Path, suffix: str) -> Path:
    """A fresh hidden folder beside `path`, named after it and this writer (so it can be found again)."""
    prefix = f".{path.name}.{HOST}~{os.getpid()}~"
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a process of another user counts)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _stale(entry: Path, match: re.Match[str]) -> bool:
    """Whether the writer of temporary `entry` is gone: by its process on this host, else by age."""
    if match["host"] == HOST:
        return not _alive(int(match["pid"]))
    try:
        return time.time() - entry.lstat().st_mtime > STALE_SECONDS
    except FileNotFoundError:  # removed by another writer meanwhile
        return False


def _remove(entry: Path) -> None:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
    except FileNotFoundError:  # another writer removed it first
        pass


def _put_back(aside: Path, path: Path) -> None:
    """Move the content of a stale ``.old`` temporary back to `path` if nothing is there."""
    kept = aside / path.name
    if os.path.lexists(path) or not os.path.lexists(kept):
        return
    try:
        _create_only(kept, path)
    except (FileExistsError, FileNotFoundError):  # someone else wrote or restored it meanwhile
        pass


def _tidy(folder: Path, only: str | None) -> None:
    """Remove the stale temporaries in `folder` (of destination `only`, or of every destination)."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.startswith(".") or entry.suffix not in _KINDS:
            continue
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or (only is not None and match["name"] != only) or not _stale(entry, match):
            continue
        if entry.suffix == _OLD:
            _put_back(entry, folder / match["name"])
        _remove(entry)


def clean_stale(path: str | os.PathLike) -> None:
    """Remove the temporaries of `path` left by killed writers; put back a folder one of them set aside.

    Called by every :func:`atomic_path`; call it directly before working on a destination that is not
    written through :func:`atomic_path` itself.

    Parameters
    ----------
    path : str or os.PathLike
        The destination whose temporaries (hidden, beside it) are looked at.
    """
    path = Path(path)
    _tidy(path.parent, path.name)


def clean_folder(folder: str | os.PathLike) -> None:
    """Remove the stale temporaries of every destination inside `folder` (as :func:`clean_stale` does for one).

    Parameters
    ----------
    folder : str or os.PathLike
        A folder whose entries are written atomically (e.g. the versions of a Zarr result).
    """
    _tidy(Path(folder), None)


def discard(path: str | os.PathLike) -> bool:
    """Remove a file or folder so that it disappears whole: renamed aside in one step, then deleted.

    A reader never sees part of a folder; a writer killed while deleting leaves a hidden ``.del``
    temporary that the next write to `path` (or :func:`clean_folder` of its folder) removes.

    Parameters
    ----------
    path : str or os.PathLike
        What to remove.

    Returns
    -------
    bool
        False when nothing was at `path` (already removed, e.g. by another process).
    """
    path = Path(path)
    aside = _hidden(path, _DEL)
    try:
        os.replace(path, aside / path.name)
        return True
    except FileNotFoundError:
        return False
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap what is at `a` and at `b` in one step; False where the system or file system cannot."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


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
    A folder cannot be renamed over a non-empty folder: replacing a folder swaps the two in one step
    where the system can (Linux), and otherwise takes two renames (the old one aside, the new one
    in); the old one is removed afterwards. See the module's notes on killed writers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
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
            _replace_folder(staged, path)
        else:
            os.replace(staged, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _replace_folder(staged: Path, path: Path) -> None:
    """Put folder `staged` at `path` (a folder); the old one ends up at `staged` or is removed."""
    if _exchange(staged, path):
        return  # the old folder is now at `staged`, removed with its holder
    aside = _hidden(path, _OLD)
    os.replace(path, aside / path.name)
    os.replace(staged, path)
    shutil.rmtree(aside, ignore_errors=True)


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
