"""Saving and loading effects datasets: netCDF (one file) or Zarr (a folder), never silently wrong.

Three promises, and how they are kept:

Never silently wrong
    :func:`save` records a SHA-256 checksum of every variable, data and coordinates alike, and of
    the attrs, in the dataset attr :data:`CHECKSUM_ATTR` (JSON: the algorithm, one digest per
    variable name, so the record is also the list of variables). A digest covers the variable's
    dims, shape, attrs and values in a canonical form (booleans as bytes, integers as 64-bit and
    floats as 64-bit little-endian, NaN as one bit pattern, strings as UTF-8), so that the dtype or
    byte order a format reads back does not matter, only the content. :func:`load` checks that every
    recorded variable is present (and no other), recomputes the digests, strips the record and runs
    :func:`pdcr_lab.schema.validate`. A damaged result (a flipped byte, a deleted chunk or variable,
    a truncated or garbage file, unreadable metadata) raises :class:`CorruptResultError` naming the
    path and what is wrong, never an h5py/zarr/json traceback. ``verify=False`` skips the digests
    (the variable list and the schema are still checked): faster, and a Zarr result stays lazy. A
    result saved without checksums (by an older pdcr_lab or another program) loads with an
    :class:`UnverifiedResultWarning`; a live sweep store (attr ``sweep_fingerprint``, filled in place
    by :mod:`pdcr_lab.sweep` while it is read) loads lazily without one.

Never lost
    A ``.nc`` result is written to a hidden temporary beside it and renamed over it
    (:func:`pdcr_lab.atomic.atomic_path`): the path holds the old file or the new one, whole.
    Temporaries left by killed writers are removed by the next save (see :mod:`pdcr_lab.atomic`).

Seen whole: the versioned Zarr layout
    A Zarr result is many files, and no rename replaces them all at once for a reader that is
    part-way through them. So a ``.zarr`` result is a folder of immutable versions::

        map.zarr/
            CURRENT                         the name of the current version, one line
            v00001718900000000000-3fa2...   a complete Zarr group (one save), never modified
            v00001718900012345678-9b1c...   the next save

    :func:`save` writes a new version under a hidden temporary name inside the folder, renames it
    into place, then replaces ``CURRENT`` with one ``os.replace``: the save is seen by a reader
    whole, or not at all. :func:`load` reads ``CURRENT`` once and opens that version; whatever is
    saved meanwhile goes to other folders. After the first save the path always holds a result, so
    a writer killed at any point leaves the old result (or the new one) readable.

    Old versions are removed by later saves, but never the current one nor the one it replaced
    (the *previous* version), and the others only once :data:`GRACE_SECONDS` have passed since they
    stopped being current: a reader that resolved ``CURRENT`` just before a save keeps a consistent
    version for that long. A version is removed by renaming it aside first (it disappears whole).
    Should a version disappear under a reader all the same (a lazily opened result read much later),
    reading fails loudly: a verified load sees the pointer moved and reads the new version instead;
    a lazy one raises :class:`CorruptResultError` on the first missing chunk (versions are written
    with every chunk present, so a missing chunk is never read as the fill value, NaN).

    A plain Zarr store at the path (written by an older pdcr_lab) is read as before and becomes a
    versioned folder on the next save (its arrays are removed once ``CURRENT`` names the new
    version). To open a version with xarray directly::

        xr.open_zarr(path / (path / "CURRENT").read_text().strip(), consolidated=False)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .atomic import atomic_path, clean_folder, clean_stale, discard, write_text
from .schema import SchemaError, validate

__all__ = ["CHECKSUM_ATTR", "GRACE_SECONDS", "POINTER", "CorruptResultError", "UnverifiedResultWarning", "load",
           "save"]

_NETCDF = (".nc", ".nc4", ".h5")
_ZARR = (".zarr",)
#: Dataset attr holding the checksums recorded by :func:`save` (JSON); stripped by :func:`load`.
CHECKSUM_ATTR = "pdcr_lab_checksums"
#: File in a ``.zarr`` result naming its current version.
POINTER = "CURRENT"
#: Seconds an old Zarr version is kept after it stopped being current (the previous one is always kept).
GRACE_SECONDS = 600.0
_ALGORITHM = "sha256"
#: Arrays with at least this many values are gzip-compressed in netCDF files (small ones gain nothing).
_COMPRESS_MIN = 1024
_RECORD_FORMAT = 1
_LIVE_ATTR = "sweep_fingerprint"
_VERSION = re.compile(r"v\d{20}-[0-9a-f]{12}")
_ZARR_METADATA = ("zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata")
_READS = 3  # a verified Zarr load reads again when a save replaced its version meanwhile


class CorruptResultError(ValueError):
    """A stored result is damaged or unreadable; the message names the path and what is wrong."""


class UnverifiedResultWarning(UserWarning):
    """A stored result carries no checksums (saved by an older version or another program)."""


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _NETCDF:
        return "netcdf"
    if suffix in _ZARR:
        return "zarr"
    raise ValueError(f"path={str(path)!r} has an unknown suffix {suffix!r}; expected one of {list(_NETCDF + _ZARR)}")


# -- checksums -------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """An attr value as plain JSON, the same whichever format read it back (numpy scalars, arrays)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, list, tuple)):
        items = [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
        return items[0] if len(items) == 1 else items
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _attrs_text(attrs: Mapping[str, Any]) -> str:
    clean = {str(k): _plain(v) for k, v in attrs.items() if k != CHECKSUM_ATTR}
    return json.dumps(clean, sort_keys=True, default=repr)


def _text_bytes(values: np.ndarray) -> bytes:
    """Strings (str, bytes or objects) as length-prefixed UTF-8, whatever their dtype."""
    parts = []
    for item in values.ravel().tolist():
        if isinstance(item, bytes):
            item = item.decode("utf-8", "surrogateescape")
        data = (item if isinstance(item, str) else repr(item)).encode("utf-8", "surrogateescape")
        parts.append(struct.pack("<Q", len(data)) + data)
    return b"".join(parts)


def _canonical(values: np.ndarray) -> tuple[str, bytes]:
    """(kind, bytes) of an array, independent of the dtype width and byte order a format reads back."""
    kind = values.dtype.kind
    if kind == "b":
        return "bool", values.astype("u1").tobytes()
    if kind in "iu":
        return ("int", values.astype("<i8").tobytes()) if kind == "i" else ("uint", values.astype("<u8").tobytes())
    if kind in "fc":
        wide = values.astype("<f8" if kind == "f" else "<c16")
        wide[np.isnan(wide)] = np.nan  # one bit pattern for every NaN
        return ("float" if kind == "f" else "complex"), wide.tobytes()
    if kind in "mM":
        return kind, values.astype(f"{'timedelta64' if kind == 'm' else 'datetime64'}[ns]").view("<i8").tobytes()
    if kind in "USOT":  # T: numpy's variable-width StringDType
        return "text", _text_bytes(values)
    raise ValueError(f"cannot record a checksum of values of dtype {values.dtype}")


def _digest(var: xr.Variable) -> str:
    kind, data = _canonical(np.ascontiguousarray(np.asarray(var.values)))
    head = json.dumps({"kind": kind, "dims": list(var.dims), "shape": list(var.shape), "attrs": _attrs_text(var.attrs)})
    return hashlib.new(_ALGORITHM, head.encode() + b"\0" + data).hexdigest()


def _record(ds: xr.Dataset) -> str:
    """The checksum record of `ds` (JSON text)."""
    return json.dumps({
        "format": _RECORD_FORMAT,
        "algorithm": _ALGORITHM,
        "variables": {str(name): _digest(var) for name, var in ds.variables.items()},
        "attrs": hashlib.new(_ALGORITHM, _attrs_text(ds.attrs).encode()).hexdigest(),
    }, sort_keys=True)


def _damaged(path: Path, what: str) -> CorruptResultError:
    return CorruptResultError(f"path={str(path)!r} is damaged: {what}")


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _verify(ds: xr.Dataset, path: Path, text: Any, *, digests: bool) -> None:
    """Check `ds` against the record `text` saved with it: its variables, and their digests if asked."""
    try:
        record = json.loads(text)
        recorded = record["variables"]
        if record["algorithm"] != _ALGORITHM or not isinstance(recorded, dict):
            raise ValueError(record["algorithm"])
    except (TypeError, ValueError, KeyError) as exc:
        raise _damaged(path, f"its checksum record ({CHECKSUM_ATTR!r}) is unreadable ({exc})") from None
    missing = sorted(set(recorded) - set(map(str, ds.variables)))
    if missing:
        raise _damaged(path, f"missing variable{'s' if len(missing) > 1 else ''} {_quoted(missing)} (saved, not found)")
    extra = sorted(set(map(str, ds.variables)) - set(recorded))
    if extra:
        raise _damaged(path, f"unexpected variable{'s' if len(extra) > 1 else ''} {_quoted(extra)} (not saved)")
    if not digests:
        return
    differ = [name for name, digest in recorded.items() if _digest(ds[name].variable) != digest]
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        raise _damaged(path, f"checksum of {_quoted(differ)} {verb} from the one recorded when it was saved")
    if hashlib.new(_ALGORITHM, _attrs_text(ds.attrs).encode()).hexdigest() != record.get("attrs"):
        raise _damaged(path, "checksum of the attrs differs from the one recorded when it was saved")


# -- save ------------------------------------------------------------------------------------------
def save(ds: xr.Dataset, path: str | os.PathLike, *, effects: bool = True) -> Path:
    """Write an effects dataset to ``.nc`` (netCDF4/HDF5) or ``.zarr``, with checksums; atomically.

    A ``.nc`` file is replaced in one rename; a ``.zarr`` result gets a new version, made current in
    one rename (see the module's notes). Either way a reader sees the old result or the new one.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects in the schema (validated before writing). A checksum of every variable is stored
        with it (attr :data:`CHECKSUM_ATTR`) for :func:`load` to verify.
    path : str or os.PathLike
        Destination; the suffix picks the format (``.nc``, ``.nc4``, ``.h5`` or ``.zarr``).
    effects : bool
        Check the effects schema first. False saves any study result (tables of scores, tests)
        with the same checksums, compression and atomic write; :func:`load` it with ``effects=False``.

    Returns
    -------
    pathlib.Path
        `path`.

    Examples
    --------
    >>> import tempfile
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     again = load(save(ds, f"{folder}/map.nc"))
    ...     versions = [load(save(ds.assign(ate=ds.ate + k), f"{folder}/map.zarr")) for k in (1, 2)]
    >>> again.identical(ds), float(versions[-1].ate.mean())
    (True, 2.0)
    """
    if effects:
        validate(ds)
    path = Path(path)
    kind = _format(path)
    stored = ds.copy(deep=False)
    stored.attrs = {**{k: v for k, v in ds.attrs.items() if k != CHECKSUM_ATTR}, CHECKSUM_ATTR: _record(ds)}
    if kind == "netcdf":
        with atomic_path(path) as staged:
            stored.to_netcdf(staged, engine="h5netcdf", encoding=_compressed(stored))
    else:
        _save_zarr(stored, path)
    return path


def _compressed(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Lossless gzip for the numeric and boolean arrays of a netCDF file (masks and maps shrink several-fold)."""
    return {name: {"zlib": True, "complevel": 4} for name, var in ds.variables.items()
            if var.ndim and var.dtype.kind in "biuf" and var.size >= _COMPRESS_MIN}


def _write_version(ds: xr.Dataset, folder: Path) -> None:
    # Every chunk written, even one holding only the fill value: a missing chunk is then always damage.
    ds.to_zarr(folder, mode="w-", consolidated=False, write_empty_chunks=True)


def _save_zarr(ds: xr.Dataset, path: Path) -> None:
    """Add a version to the Zarr result at `path` and make it current (the folder is made on the first save)."""
    if os.path.lexists(path) and not path.is_dir():
        raise ValueError(f"path={str(path)!r} exists and is not a folder (a .zarr result is a folder); it is kept")
    name = f"v{time.time_ns():020d}-{secrets.token_hex(6)}"
    clean_stale(path)
    if not path.exists():
        try:
            with atomic_path(path, replace=False) as staged:  # the folder appears with its first version
                staged.mkdir()
                _write_version(ds, staged / name)
                (staged / POINTER).write_text(name + "\n", encoding="ascii")
            return
        except FileExistsError:  # another writer made it meanwhile: add a version to theirs
            pass
    clean_folder(path)
    previous = _pointed(path)
    plain = previous is None and any((path / m).exists() for m in _ZARR_METADATA)
    with atomic_path(path / name, mode=None) as staged:
        _write_version(ds, staged)
    os.utime(path / name)  # its age counts from now, not from when its writing began
    if previous is not None:
        _touch(path / previous)  # stops being current now (a kill before the swap only keeps it longer)
    write_text(path / POINTER, name + "\n")
    if plain:
        _remove_plain_store(path)
    _prune(path, keep={name, previous})


def _touch(folder: Path) -> None:
    try:
        os.utime(folder)
    except FileNotFoundError:  # removed meanwhile by another writer
        pass


def _pointed(path: Path) -> str | None:
    """The version ``CURRENT`` names, or None when it is absent or unreadable (a save repairs it)."""
    try:
        name = (path / POINTER).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _VERSION.fullmatch(name) else None


def _remove_plain_store(path: Path) -> None:
    """Remove the arrays and metadata of a plain Zarr store at `path` (an older layout), keeping the versions."""
    for entry in path.iterdir():
        if entry.name in _ZARR_METADATA and entry.is_file():
            entry.unlink(missing_ok=True)
        elif (entry.is_dir() and not entry.name.startswith(".") and not _VERSION.fullmatch(entry.name)
              and any((entry / m).exists() for m in _ZARR_METADATA)):
            discard(entry)


def _prune(path: Path, keep: set[str | None]) -> None:
    """Remove versions that are not kept, not current and stopped being current over GRACE_SECONDS ago."""
    keep = keep | {_pointed(path)}  # read again: another writer may have moved it
    now = time.time()
    for entry in path.iterdir():
        if entry.name in keep or not _VERSION.fullmatch(entry.name):
            continue
        try:
            retired = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if retired >= GRACE_SECONDS:
            discard(entry)


# -- load ------------------------------------------------------------------------------------------
def load(path: str | os.PathLike, *, verify: bool = True, effects: bool = True) -> xr.Dataset:
    """Open an effects dataset written by :func:`save`, checked against its checksums and the schema.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nc`` file (read into memory) or a ``.zarr`` result (a folder of versions, or a plain
        Zarr store such as a sweep's).
    verify : bool
        Recompute the checksum of every variable and compare it with the one saved (this reads all
        the data, so a Zarr result is returned in memory). False skips this for speed: a Zarr
        result then opens lazily (dask), and only the list of variables and the schema are checked
        (a chunk found missing when read still raises).
    effects : bool
        Check the effects schema; False for a study result saved with ``save(..., effects=False)``.

    Returns
    -------
    xarray.Dataset
        The result, without the checksum record.

    Raises
    ------
    FileNotFoundError
        Nothing at `path`.
    CorruptResultError
        The result is damaged or unreadable (the message names the path and what is wrong).
    pdcr_lab.schema.SchemaError
        The result reads fine but breaks the effects schema.

    Warns
    -----
    UnverifiedResultWarning
        The result was saved without checksums (by an older version or another program).

    Examples
    --------
    >>> import tempfile
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save(ds, f"{folder}/map.zarr")
    ...     lazy = load(path, verify=False)  # dask arrays, read when needed
    ...     checked = load(path)  # in memory, every checksum verified
    ...     kinds = lazy.ate.chunks is not None, checked.ate.chunks is None
    ...     same = lazy.load().identical(checked)
    >>> kinds, same
    ((True, True), True)
    """
    path = Path(path)
    kind = _format(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    ds = _read_netcdf(path) if kind == "netcdf" else _read_zarr(path, verify)
    return _checked(ds, path, verify, effects)


def _unreadable(path: Path, how: str, exc: BaseException) -> CorruptResultError:
    return CorruptResultError(f"path={str(path)!r} is damaged or not a result: it cannot be read as {how} "
                              f"({type(exc).__name__}: {exc})")


def _read_netcdf(path: Path) -> xr.Dataset:
    if path.is_dir():
        raise CorruptResultError(f"path={str(path)!r} is a folder, not a netCDF file")
    if path.stat().st_size == 0:
        raise CorruptResultError(f"path={str(path)!r} is empty (0 bytes): not a result")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except (PermissionError, MemoryError):
        raise
    except Exception as exc:  # h5py, h5netcdf and xarray raise many kinds on damaged files
        raise _unreadable(path, "netCDF", exc) from exc


def _strict_store() -> type:
    """The Zarr store class of one version folder, made on first use (zarr is imported only when needed)."""
    made = globals().get("_Version")
    if made is not None:
        return made
    import zarr.storage

    class _Version(zarr.storage.LocalStore):
        """A read-only version folder whose missing chunks raise instead of reading as the fill value."""

        async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            found = await super().get(key, prototype, byte_range)
            if found is None and key.rsplit("/", 1)[-1] not in _ZARR_METADATA:
                where = Path(str(self.root))
                array = key.split("/c/", 1)[0] if "/c/" in key else key.rsplit("/", 1)[0]
                if where.is_dir():
                    raise _damaged(where.parent, f"chunk {key!r} of variable {array!r} is missing")
                raise CorruptResultError(
                    f"path={str(where.parent)!r}: its version {where.name} was removed while it was read (it had "
                    f"been replaced twice and stayed over GRACE_SECONDS={GRACE_SECONDS:g} s); chunk {key!r} is missing")
            return found

    _Version.__qualname__ = "_Version"  # pickle (dask workers) finds it as pdcr_lab.storage._Version
    globals()["_Version"] = _Version
    return _Version


def __getattr__(name: str) -> Any:
    # Unpickling a lazily opened result in a fresh process looks the class up before any load made it.
    if name == "_Version":
        return _strict_store()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _open_zarr(path: Path, folder: Path, *, strict: bool, eager: bool) -> xr.Dataset:
    store: Any = _strict_store()(folder, read_only=True) if strict else str(folder)
    try:
        if not eager:
            return xr.open_zarr(store, consolidated=False)
        ds = xr.open_dataset(store, engine="zarr", consolidated=False, chunks=None)
        return ds.load()
    except (CorruptResultError, PermissionError, MemoryError):
        raise
    except Exception as exc:  # zarr, json and xarray raise many kinds on damaged stores
        raise _unreadable(path, f"Zarr (version {folder.name})" if strict else "Zarr", exc) from exc


def _read_zarr(path: Path, verify: bool) -> xr.Dataset:
    if not path.is_dir():
        raise CorruptResultError(f"path={str(path)!r} is not a folder (a .zarr result is a folder)")
    for _ in range(_READS):
        pointer = path / POINTER
        try:
            text = pointer.read_text(encoding="ascii")
        except FileNotFoundError:
            if not any((path / m).exists() for m in _ZARR_METADATA):
                raise CorruptResultError(f"path={str(path)!r} holds neither a {POINTER} file nor a Zarr store") from None
            return _open_zarr(path, path, strict=False, eager=False)  # a plain store of an older version
        except (UnicodeDecodeError, IsADirectoryError) as exc:
            raise CorruptResultError(f"path={str(path)!r}: its {POINTER} file is unreadable ({exc})") from None
        name = text.strip()
        if not _VERSION.fullmatch(name):
            raise CorruptResultError(f"path={str(path)!r}: its {POINTER} file names no version ({text[:60]!r})")
        try:
            return _open_zarr(path, path / name, strict=True, eager=verify)
        except CorruptResultError:
            if _pointed(path) == name:
                raise
            # a save made another version current and removed this one while it was read: read that one
    raise CorruptResultError(f"path={str(path)!r} changed under each of {_READS} reads; its saves outpace reading it")


def _checked(ds: xr.Dataset, path: Path, verify: bool, effects: bool = True) -> xr.Dataset:
    """Verify `ds` read from `path` against its checksum record (stripped) and the schema."""
    record = ds.attrs.pop(CHECKSUM_ATTR, None)
    live = _LIVE_ATTR in ds.attrs
    if record is not None:
        _verify(ds, path, record, digests=verify)
    elif not live:
        warnings.warn(UnverifiedResultWarning(
            f"path={str(path)!r} was saved without checksums (by an older pdcr_lab or another program): "
            "its content cannot be verified"), stacklevel=3)
    if not effects:
        return ds
    try:
        # A live sweep store is filled chunk by chunk while it is read: its RoI flags may be ahead of
        # its effects for a moment, so only its structure is checked (and nothing is read).
        validate(ds.drop_vars("roi_block", errors="ignore") if live else ds)
    except SchemaError as exc:
        raise SchemaError(f"path={str(path)!r}: {exc}") from exc
    return ds
