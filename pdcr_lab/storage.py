"""Saving and loading effects datasets: netCDF (one file) or Zarr (a folder), written atomically.

A result is first written next to its destination under a temporary name and then renamed into
place, so an interrupted save never leaves a half-written file that reads as complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from .atomic import atomic_path
from .schema import validate

__all__ = ["save", "load"]

_NETCDF = (".nc", ".nc4", ".h5")
_ZARR = (".zarr",)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _NETCDF:
        return "netcdf"
    if suffix in _ZARR:
        return "zarr"
    raise ValueError(f"path={str(path)!r} has an unknown suffix {suffix!r}; expected one of {list(_NETCDF + _ZARR)}")


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write an effects dataset to ``.nc`` (netCDF4/HDF5) or ``.zarr``; replaces `path` atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects in the schema (validated before writing).
    path : str or os.PathLike
        Destination; the suffix picks the format (``.nc``, ``.nc4``, ``.h5`` or ``.zarr``).

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
    >>> again.identical(ds)
    True
    """
    validate(ds)
    path = Path(path)
    kind = _format(path)
    with atomic_path(path) as staged:
        if kind == "netcdf":
            ds.to_netcdf(staged, engine="h5netcdf")
        else:
            ds.to_zarr(staged, mode="w", consolidated=False)
    return path


def load(path: str | os.PathLike) -> xr.Dataset:
    """Open an effects dataset written by :func:`save` (Zarr stores open lazily).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nc`` file (read into memory) or a ``.zarr`` folder.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    if _format(path) == "netcdf":
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    return xr.open_zarr(path, consolidated=False)
