"""The sweep store: one Zarr group in the effects schema, pre-allocated, filled task by task.

Layout (dims in the schema's canonical order)::

    ate, ate_raw, stderr   (model, dataset, image, roi, method, block_y, block_x)  float64, NaN until written
    ci_low, ci_high        (same)                                                  float64, NaN (also when a method has none)
    n_draws                (same)                                                  int32, -1 until written
    screened, roi_block    (same)                                                  bool, False until written
    m0                     (model, dataset, image, roi, method)                    float64, NaN
    forwards               (model, dataset, image, method)                         int64, -1
    seconds                (model, dataset, image, method)                         float64: the task's wall time
    done                   (model, dataset, image, method)                         bool: the completion marker

    coordinates: the labels of model/dataset/method; image (position) with image_id, image_index
    (dataset, image); split and bank_id (dataset); seed (dataset, image); roi_row, roi_col, roi_height, roi_width
    (dataset, image, roi) and roi_mask (dataset, image, roi, y, x); method_name, method_params,
    outcome, units, support_sign (method; -1: negative ate = supports the RoI, 0: unknown); block
    grid coords as in the schema.

    group ``tasks/<m>-<d>-<i>-<k>``: attrs = provenance of one task (host, worker, device, timing,
    the explainer's attrs). Root attrs: the config, its fingerprint, versions and the run history.

A *task* is one (model, dataset, image, method): all RoIs of an image in one call. Every variable is
chunked one chunk per task, so two tasks never write the same chunk file, and Zarr (>= 3.1.3)
replaces each chunk file atomically. A task writes its results first and ``done`` last: killed at
any moment, it leaves ``done == False`` and is recomputed on resume; rewriting its chunks replaces
them whole. (A SIGKILL during a write can leave a ``*.partial`` temp file beside a chunk; it is
never read.)
Padding (a dataset with fewer images, an image with fewer RoIs) has ``image_id == ""`` /
``roi_height == 0`` and stays NaN; it is not a task.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..atomic import atomic_path
from ..schema import SCHEMA_VERSION
from ..version import __version__
from ._config import ConfigError, Plan

__all__ = ["check_target", "check_sweep_store", "prepare", "done_mask", "write_task", "record_run", "task_name",
           "provenance", "versions"]

_GRID = ("model", "dataset", "image", "roi", "method", "block_y", "block_x")
_PER_ROI = ("model", "dataset", "image", "roi", "method")
_PER_TASK = ("model", "dataset", "image", "method")
#: Dims a task covers one element of; the others (roi, block grid) it writes in full.
TASK_DIMS = _PER_TASK

#: name -> (dims, dtype, fill value, attrs)
VARIABLES: dict[str, tuple[tuple[str, ...], str, Any, dict[str, str]]] = {
    "ate": (_GRID, "float64", np.nan, {"long_name": "average treatment effect"}),
    "ate_raw": (_GRID, "float64", np.nan, {"long_name": "mean effect before screening/zeroing"}),
    "stderr": (_GRID, "float64", np.nan, {"long_name": "standard error of the mean effect"}),
    "ci_low": (_GRID, "float64", np.nan, {"long_name": "lower confidence bound of the effect"}),
    "ci_high": (_GRID, "float64", np.nan, {"long_name": "upper confidence bound of the effect"}),
    "n_draws": (_GRID, "int32", -1, {"long_name": "draws in the estimate (-1: not computed)"}),
    "screened": (_GRID, "bool", False, {}),
    "roi_block": (_GRID, "bool", False, {}),
    "m0": (_PER_ROI, "float64", np.nan, {"long_name": "factual outcome M0"}),
    "forwards": (_PER_TASK, "int64", -1, {"long_name": "forward passes (-1: not computed)"}),
    "seconds": (_PER_TASK, "float64", np.nan, {"long_name": "wall time of the task", "units": "s"}),
    "done": (_PER_TASK, "bool", False, {"long_name": "the task's results are complete"}),
}
RESULT_VARS = ("ate", "ate_raw", "stderr", "ci_low", "ci_high", "n_draws", "screened", "roi_block", "m0", "forwards")
_MARKER_VARS = ("seconds", "done")


def task_name(index: tuple[int, int, int, int]) -> str:
    """Name of a task's provenance group: ``m<model>-d<dataset>-i<image>-k<method>``.

    Parameters
    ----------
    index : (int, int, int, int)
        The task's (model, dataset, image, method) position.
    """
    m, d, i, k = index
    return f"m{m}-d{d}-i{i}-k{k}"


def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers (stored with the sweep and every task)."""
    import platform

    import torch
    import zarr

    out = {"pdcr_lab": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "xarray": xr.__version__, "zarr": zarr.__version__}
    try:
        import dask
        import distributed

        out.update(dask=dask.__version__, distributed=distributed.__version__)
    except ImportError:  # pragma: no cover - a sweep needs them, reading a store does not
        pass
    return out


# -- where the store goes ---------------------------------------------------------------------------


#: zarr 3.1.3 made LocalStore writes atomic (temp file + rename); the markers rely on it.
ZARR_MINIMUM = (3, 1, 3)


def check_target(path: str | os.PathLike) -> Path:
    """Check that a sweep store can be created or continued at `path`; raise ConfigError otherwise.

    Parameters
    ----------
    path : str or os.PathLike
        The sweep store (a ``.zarr`` folder).
    """
    import zarr

    found = tuple(int(v) for v in re.findall(r"\d+", zarr.__version__)[:3])
    if found < ZARR_MINIMUM:
        raise ConfigError(f"sweeps need zarr>={'.'.join(map(str, ZARR_MINIMUM))} (atomic chunk writes), found {zarr.__version__}")
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        raise ConfigError(f"store {str(path)!r} must end with .zarr (it is opened with pdcr_lab.load)")
    if path.exists():
        if not path.is_dir() or not (path / "zarr.json").is_file():
            raise ConfigError(f"store {str(path)!r} exists and is not a sweep store; choose another --store")
        probe_dir = path
    else:
        probe_dir = path.parent
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise ConfigError(f"store {str(path)!r} cannot be created: {str(probe_dir)!r} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".pdcr-sweep-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"store {str(path)!r} is not writable: {exc.strerror or exc} in {str(probe_dir)!r}") from None
    return path


# -- creating and checking the store ------------------------------------------------------------------


def _coords(plan: Plan) -> dict[str, Any]:
    n_d, n_i, n_r = plan.rois.shape[:3]
    h, w = plan.shape
    gy, gx = plan.grid
    mask = np.zeros((n_d, n_i, n_r, h, w), dtype=bool)
    for d in range(n_d):
        for i in range(n_i):
            for r in range(int(plan.n_rois[d, i])):
                row, col, rh, rw = plan.rois[d, i, r]
                mask[d, i, r, row : row + rh, col : col + rw] = True
    rois = plan.rois
    return {
        "model": np.array([m.name for m in plan.models], dtype=str),
        "dataset": np.array([d.name for d in plan.datasets], dtype=str),
        "image": np.arange(n_i),
        "roi": np.arange(n_r),
        "method": np.array([m.entry.name for m in plan.methods], dtype=str),
        "block_y": np.arange(gy),
        "block_x": np.arange(gx),
        "y_start": ("block_y", np.arange(gy) * plan.block),
        "x_start": ("block_x", np.arange(gx) * plan.block),
        "y": np.arange(h),
        "x": np.arange(w),
        "model_source": ("model", np.array([m.source() for m in plan.models], dtype=str)),
        "dataset_source": ("dataset", np.array([d.source() for d in plan.datasets], dtype=str)),
        "split": ("dataset", np.array([d.split for d in plan.datasets], dtype=str)),
        "bank_id": ("dataset", np.array(plan.bank_ids, dtype=str)),
        "image_id": (("dataset", "image"), plan.image_ids.astype(str)),
        "image_index": (("dataset", "image"), plan.image_index),
        "seed": (("dataset", "image"), plan.seeds),
        "roi_row": (("dataset", "image", "roi"), rois[..., 0]),
        "roi_col": (("dataset", "image", "roi"), rois[..., 1]),
        "roi_height": (("dataset", "image", "roi"), rois[..., 2]),
        "roi_width": (("dataset", "image", "roi"), rois[..., 3]),
        "roi_mask": (("dataset", "image", "roi", "y", "x"), mask),
        "method_name": ("method", np.array([m.entry.method for m in plan.methods], dtype=str)),
        "method_params": ("method", np.array([json.dumps(dict(m.params), sort_keys=True, default=str) for m in plan.methods], dtype=str)),
        "outcome": ("method", np.array([m.outcome for m in plan.methods], dtype=str)),
        "units": ("method", np.array([m.units for m in plan.methods], dtype=str)),
        "support_sign": ("method", np.array([m.method.support_sign for m in plan.methods], dtype=np.int8)),
    }


def _template(plan: Plan) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    import dask.array as da

    sizes = plan.sizes
    data_vars, encoding = {}, {}
    for name, (dims, dtype, fill, attrs) in VARIABLES.items():
        shape = tuple(sizes[d] for d in dims)
        chunks = tuple(1 if d in TASK_DIMS else sizes[d] for d in dims)
        data_vars[name] = (dims, da.full(shape, fill, dtype=dtype, chunks=chunks), dict(attrs))
        # Integers and booleans keep their dtype on load (no CF masking): their fill is zarr's own.
        encoding[name] = {"_FillValue": fill} if dtype.startswith("float") else {"fill_value": fill}
        # Flat chunk keys ("c.0.0.3.0...") in one folder per variable: "/"-separated keys of these
        # many-dimensional arrays cost a directory per key level and multiplied the store's disk use.
        encoding[name]["chunk_key_encoding"] = {"name": "default", "separator": "."}
    units = {m.units for m in plan.methods}
    outcomes = {m.outcome for m in plan.methods}
    if len(units) == 1:  # CF-style units label plots; with mixed units they live in the coord
        for name in ("ate", "ate_raw", "stderr", "m0"):
            data_vars[name][2]["units"] = next(iter(units))
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "pdcr_lab_version": __version__,
        "block": plan.block,
        "image_height": plan.shape[0],
        "image_width": plan.shape[1],
        "outcome": outcomes.pop() if len(outcomes) == 1 else "per method (see the outcome coord)",
        "units": units.pop() if len(units) == 1 else "per method (see the units coord)",
        "target_source": plan.config.target,
        "base_seed": plan.config.seed,
        "sweep_fingerprint": plan.fingerprint,
        "bank_provenance": plan.bank_provenance,
        "sweep_config": json.dumps(plan.config.as_dict(), sort_keys=True, default=str),
        "sweep_config_text": plan.config.text or "",
        "sweep_config_source": plan.config.source or "",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "created_host": socket.gethostname(),
        "versions": json.dumps(versions(), sort_keys=True),
        "sweep_runs": "[]",
        "description": (
            "PdCR sweep store (pdcr_lab.sweep). A (model, dataset, image, method) entry is valid where "
            "done is True; padding has image_id == '' or roi_height == 0. Per-task provenance in group tasks/."
        ),
    }
    return xr.Dataset(data_vars, coords=_coords(plan), attrs=attrs), encoding


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Zarr v3 warns that fixed-width string dtypes (our labels) have no final spec yet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        yield


def _create(path: Path, plan: Plan, replace: bool = False) -> None:
    import zarr

    template, encoding = _template(plan)
    try:  # the store appears complete or not at all; a replaced one stays until the new one is whole
        with atomic_path(path, replace=replace) as staged:
            with _quiet():
                template.to_zarr(staged, mode="w-", compute=False, consolidated=False, encoding=encoding)
            zarr.open_group(store=str(staged), mode="r+").create_group("tasks")
    except OSError:  # FileExistsError included: another driver created it meanwhile, keep that one
        if replace or not path.exists():
            raise  # a real failure; otherwise prepare() checks the other driver's store


#: Root attributes only a store made by this module has.
_SWEEP_ATTRS = ("sweep_fingerprint", "pdcr_lab_version", "schema_version", "sweep_config")


def check_sweep_store(path: str | os.PathLike) -> Path:
    """`path` if it is a sweep store made by :mod:`pdcr_lab.sweep` (safe to replace), else ConfigError.

    A sweep store is a real folder (not a link) whose ``zarr.json`` is a Zarr group with the sweep's
    root attributes, and which holds nothing but Zarr nodes (folders with a ``zarr.json``): a folder
    that also holds anything else is refused, whatever its attributes say.

    Parameters
    ----------
    path : str or os.PathLike
        The folder to check.
    """
    path = Path(path)
    shown = str(path)
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"store {shown!r} is {'a link' if path.is_symlink() else 'not a folder'}, not a sweep store; "
                          "--overwrite only replaces sweep stores")
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"store {shown!r} is not a sweep store (no readable zarr.json: {exc}); "
                          "--overwrite only replaces sweep stores") from None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if meta.get("node_type") != "group" or not isinstance(attrs, dict) or not all(k in attrs for k in _SWEEP_ATTRS):
        raise ConfigError(f"store {shown!r} is a Zarr store but not a sweep store made by pdcr_lab; "
                          "--overwrite only replaces sweep stores")
    foreign = sorted(child.name for child in path.iterdir() if child.name != "zarr.json" and (
        child.is_symlink() or not child.is_dir() or not (child / "zarr.json").is_file()))
    if foreign:
        raise ConfigError(f"store {shown!r} holds {foreign[:5]}{' ...' if len(foreign) > 5 else ''}, which a sweep "
                          "store does not; it is not replaced")
    return path


def _differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))


def prepare(path: str | os.PathLike, plan: Plan, *, overwrite: bool = False) -> bool:
    """Create the store for `plan`, or check that an existing one belongs to it; True if created.

    Parameters
    ----------
    path : str or os.PathLike
        The sweep store (a ``.zarr`` folder).
    plan : Plan
        The resolved sweep; an existing store must have its fingerprint.
    overwrite : bool
        Replace an existing store (only a sweep store, :func:`check_sweep_store`) by a new, empty
        one for `plan`. The new store is built beside it and renamed into place: until then the old
        one is untouched.
    """
    import zarr

    path = Path(path)
    created = False
    if overwrite and (path.exists() or path.is_symlink()):
        check_sweep_store(path)
        _create(path, plan, replace=True)
        created = True
    elif not path.exists():
        _create(path, plan)
        created = True
    attrs = dict(zarr.open_group(store=str(path), mode="r").attrs)
    if "sweep_fingerprint" not in attrs:
        raise ConfigError(f"store {str(path)!r} is a Zarr store but not a sweep store; choose another --store")
    if attrs["sweep_fingerprint"] != plan.fingerprint:
        stored = json.loads(attrs.get("sweep_config", "{}"))
        diff = _differences(stored, plan.config.as_dict()) or ["the data (image ids or contents)"]
        raise ConfigError(
            f"store {str(path)!r} holds a different sweep (made from {attrs.get('sweep_config_source') or 'another config'}; "
            f"differs in: {', '.join(diff)}); rerun with its config to resume, choose a new --store, or start it "
            "afresh with --overwrite"
        )
    return created


# -- reading and writing tasks ---------------------------------------------------------------------


def done_mask(path: str | os.PathLike) -> np.ndarray:
    """The completion markers, bool (model, dataset, image, method).

    Parameters
    ----------
    path : str or os.PathLike
        The sweep store (a ``.zarr`` folder).
    """
    import zarr

    return np.asarray(zarr.open_array(store=str(path), path="done", mode="r")[...], dtype=bool)


def _region(index: tuple[int, int, int, int]) -> dict[str, slice]:
    return {dim: slice(i, i + 1) for dim, i in zip(TASK_DIMS, index)}


def _subset(names: tuple[str, ...], arrays: Mapping[str, np.ndarray]) -> xr.Dataset:
    return xr.Dataset({n: (VARIABLES[n][0], np.asarray(arrays[n], dtype=VARIABLES[n][1])) for n in names})


def write_task(path: str | os.PathLike, index: tuple[int, int, int, int], arrays: Mapping[str, np.ndarray],
               seconds: float, info: Mapping[str, Any]) -> None:
    """Write one task: its results, then its provenance, then ``done`` (the order makes it safe).

    Parameters
    ----------
    path : str or os.PathLike
        The sweep store (a ``.zarr`` folder).
    index : (int, int, int, int)
        The task's (model, dataset, image, method) position.
    arrays : mapping
        Every name of :data:`RESULT_VARS` -> an array shaped like the task's region (length 1 along
        model, dataset, image and method; full along roi and the block grid).
    seconds : float
        The task's wall time.
    info : mapping
        The task's provenance (JSON-able after ``default=str``).
    """
    import zarr

    region = _region(index)
    start = time.perf_counter()
    _subset(RESULT_VARS, arrays).to_zarr(path, region=region, mode="r+", consolidated=False)
    attrs = json.loads(json.dumps({**info, "seconds_write": time.perf_counter() - start}, default=str))
    zarr.open_group(store=str(path), path=f"tasks/{task_name(index)}", mode="w", attributes=attrs)
    marker = {"seconds": np.full((1, 1, 1, 1), float(seconds)), "done": np.ones((1, 1, 1, 1), dtype=bool)}
    _subset(_MARKER_VARS, marker).to_zarr(path, region=region, mode="r+", consolidated=False)


def record_run(path: str | os.PathLike, run: Mapping[str, Any]) -> None:
    """Append (or update, same ``run_id``) one driver run in the store's ``sweep_runs`` history.

    Parameters
    ----------
    path : str or os.PathLike
        The sweep store (a ``.zarr`` folder).
    run : mapping
        The run's record, with its ``run_id``.
    """
    import zarr

    group = zarr.open_group(store=str(path), mode="r+")
    runs = [r for r in json.loads(group.attrs.get("sweep_runs", "[]")) if r.get("run_id") != run.get("run_id")]
    runs.append(json.loads(json.dumps(dict(run), default=str)))
    group.attrs["sweep_runs"] = json.dumps(runs)


def provenance(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Per-task provenance of a sweep store: task name -> attrs (host, worker, timing, seed, ...).

    Parameters
    ----------
    path : str or os.PathLike
        The sweep store (a ``.zarr`` folder).
    """
    import zarr

    tasks = zarr.open_group(store=str(path), path="tasks", mode="r")
    return {name: dict(group.attrs) for name, group in tasks.groups()}
