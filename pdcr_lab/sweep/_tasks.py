"""One sweep task on a worker: cached data and model, the explainer call, the region write.

A task is one (model, dataset, image, method) with all of the image's RoIs. Each worker process keeps
the datasets and models it has loaded in small LRU caches (module-level, so they live as long as the
worker process and work the same under any scheduler): with tasks submitted model by model, a worker
loads each model once. Workers re-load the data themselves (cheap, deterministic) rather than receiving
it, so a task can be recomputed anywhere after a worker dies; the image's SHA-1, fixed when the driver
planned the sweep, guards against a worker whose data differ.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..schema import GRID_DIMS, stack, validate
from ._config import DatasetEntry, ModelEntry, Plan, ResolvedMethod
from ._methods import accepted_parameters
from ._store import RESULT_VARS, TASK_DIMS, VARIABLES, task_name, versions, write_task

__all__ = ["TaskSpec", "build_specs", "run_task", "cache_info"]

_LOCK = threading.RLock()
_MODELS: OrderedDict[Any, Any] = OrderedDict()
_DATASETS: OrderedDict[Any, Any] = OrderedDict()
_DATASET_CACHE = 2
_LOADS = {"model": 0, "dataset": 0}
_VERSIONS: dict[str, str] = {}


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs for one task (small and picklable)."""

    store: str  #: path of the Zarr store the task writes into
    index: tuple[int, int, int, int]  #: (model, dataset, image, method) position in the store
    model: ModelEntry  #: the config's model entry
    dataset: DatasetEntry  #: the config's dataset entry
    method: ResolvedMethod  #: the method with its explainer and parameters
    image_id: str  #: the image's id in the dataset
    image_index: int  #: the image's index in the split
    image_sha1: str  #: checksum of the image the plan saw (the worker checks it)
    bank_id: str  #: id of the dataset's natural bank
    rois: tuple[tuple[int, int, int, int], ...]  #: the image's RoI boxes
    n_roi: int  #: how many of them
    seed: int  #: the task's seed (from the config's seed and the task's position)
    block: int  #: block side of the maps
    grid: tuple[int, int]  #: (Gy, Gx) of the maps
    target: str  #: "ground_truth" or "prediction"
    device: str  #: where the worker runs the model
    model_cache: int  #: models a worker keeps loaded

    @property
    def name(self) -> str:
        return task_name(self.index)

    def describe(self) -> str:
        return f"(model={self.model.name!r}, dataset={self.dataset.name!r}, image={self.image_id!r}, method={self.method.entry.name!r})"


def build_specs(plan: Plan, store: str, indices: Sequence[tuple[int, int, int, int]]) -> list[TaskSpec]:
    """Task specs of `plan` for the given (model, dataset, image, method) indices.

    Parameters
    ----------
    plan : Plan
        The validated sweep plan.
    store : str
        Path of the store.
    indices : sequence of (model, dataset, image, method)
        Positions of the tasks to build.
    """
    cfg = plan.config
    specs = []
    for m, d, i, k in indices:
        n = int(plan.n_rois[d, i])
        specs.append(
            TaskSpec(
                store=str(store),
                index=(m, d, i, k),
                model=plan.models[m],
                dataset=plan.datasets[d],
                method=plan.methods[k],
                image_id=str(plan.image_ids[d, i]),
                image_index=int(plan.image_index[d, i]),
                image_sha1=str(plan.image_sha1[d, i]),
                bank_id=plan.bank_ids[d],
                rois=tuple(tuple(int(v) for v in plan.rois[d, i, r]) for r in range(n)),  # type: ignore[misc]
                n_roi=int(plan.rois.shape[2]),
                seed=int(plan.seeds[d, i]),
                block=plan.block,
                grid=plan.grid,
                target=cfg.target,
                device=cfg.device,
                model_cache=cfg.model_cache,
            )
        )
    return specs


# -- per-worker caches -------------------------------------------------------------------------------


def _cached(cache: OrderedDict[Any, Any], key: Any, size: int, build: Callable[[], Any], kind: str) -> tuple[Any, bool]:
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key], False
        value = build()
        _LOADS[kind] += 1
        cache[key] = value
        while len(cache) > size:
            cache.popitem(last=False)
        return value, True


def cache_info() -> dict[str, Any]:
    """What this process has loaded: counts of loads and the cached keys (for tests and debugging)."""
    with _LOCK:
        return {"loads": dict(_LOADS), "models": list(_MODELS), "datasets": list(_DATASETS)}


def _worker() -> tuple[str, Any]:
    try:
        from distributed import get_worker

        worker = get_worker()
        return str(worker.address), worker.name
    except (ImportError, ValueError):
        return "", None


def choose_device(preference: str) -> Any:
    """``auto``: a GPU when there is one (LocalCluster worker *n* takes GPU n mod count), else the CPU."""
    import torch

    if preference != "auto":
        return torch.device(preference)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    _, name = _worker()
    if count > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ and isinstance(name, int):
        return torch.device(f"cuda:{name % count}")
    return torch.device("cuda")


def _load_model(spec: TaskSpec, device: Any) -> tuple[Any, dict[str, Any]]:
    model, meta = spec.model.load(spec.dataset.model_key())
    return model.to(device), meta


# -- the task ------------------------------------------------------------------------------------------


def _call(spec: TaskSpec, model: Any, image: Any, target: Any, bank: Any, device: Any) -> xr.Dataset:
    resolved = spec.method
    func = resolved.method.func
    kwargs = dict(resolved.params)
    accepted = accepted_parameters(func)
    # block and device belong to the common explainer signature (also through **options); the
    # bank only goes to explainers that name it.
    for name, value, common in (("bank", bank, False), ("block", spec.block, True), ("device", device, True)):
        if (accepted is None and common) or (accepted is not None and name in accepted):
            kwargs[name] = value
    if resolved.method.multi_roi:
        ds = func(model, image, roi=[list(b) for b in spec.rois], target=target, seed=spec.seed, **kwargs)
        if "roi" not in ds.dims:
            ds = ds.expand_dims(roi=[0])
    else:
        parts = [func(model, image, roi=tuple(b), target=target, seed=spec.seed, **kwargs) for b in spec.rois]
        ds = stack(parts, dim="roi", labels=list(range(len(parts))))
    sign = resolved.method.support_sign
    if sign and int(ds.attrs.get("support_sign", sign)) != sign:
        raise ValueError(f"task {spec.describe()}: the result's support_sign {ds.attrs['support_sign']} "
                         f"differs from the registered {sign}")
    return validate(ds)


def region_arrays(ds: xr.Dataset, spec: TaskSpec) -> dict[str, np.ndarray]:
    """The result laid out as the task's region of the store (padding RoIs keep the fill value)."""
    n = len(spec.rois)
    grid = tuple(int(ds.sizes.get(d, -1)) for d in GRID_DIMS)
    if grid != tuple(spec.grid):
        raise ValueError(f"task {spec.describe()}: the method returned a {grid} block grid, the sweep's is {tuple(spec.grid)}")
    if int(ds.sizes["roi"]) != n:
        raise ValueError(f"task {spec.describe()}: the method returned {int(ds.sizes['roi'])} RoIs for {n}")
    if "roi_row" in ds:
        got = np.stack([np.asarray(ds[k]).reshape(-1) for k in ("roi_row", "roi_col", "roi_height", "roi_width")], axis=-1)
        if not np.array_equal(got, np.asarray(spec.rois).reshape(n, 4)):
            raise ValueError(f"task {spec.describe()}: the method returned RoIs {got.tolist()}, expected {list(spec.rois)}")
    sizes = {"roi": spec.n_roi, "block_y": spec.grid[0], "block_x": spec.grid[1]}
    out = {}
    for name in RESULT_VARS:
        dims, dtype, fill, _ = VARIABLES[name]
        array = np.full(tuple(1 if d in TASK_DIMS else sizes[d] for d in dims), fill, dtype=dtype)
        if name in ds:
            values = ds[name]
            if "roi" in dims:
                order = [d for d in ("roi", *GRID_DIMS) if d in dims]
                array[0, 0, 0, :n, 0] = values.transpose(*order).values
            else:  # forwards: per call, summed when the method ran once per RoI
                array[...] = int(values.sum())
        out[name] = array
    return out


def run_task(spec: TaskSpec) -> dict[str, Any]:
    """Compute one task and write it into the store; returns its provenance (also stored).

    Parameters
    ----------
    spec : TaskSpec
        The task.
    """
    import torch

    started = time.time()
    t0 = time.perf_counter()
    data, dataset_loaded = _cached(_DATASETS, spec.dataset.key(), _DATASET_CACHE, spec.dataset.load, "dataset")
    split = spec.dataset.split
    image = data.images(split)[spec.image_index]
    digest = hashlib.sha1(np.ascontiguousarray(image.numpy()).tobytes()).hexdigest()
    if digest != spec.image_sha1 or data.ids(split)[spec.image_index] != spec.image_id:
        raise RuntimeError(
            f"task {spec.describe()}: this worker's image differs from the one the sweep was planned with "
            f"(SHA-1 {digest[:12]} != {spec.image_sha1[:12]}); the worker has other data or another pdcr_lab version"
        )
    target = data.masks(split)[spec.image_index] if spec.target == "ground_truth" else None
    try:
        bank = data.bank
    except ValueError:
        bank = None
    if bank is not None and bank.id != spec.bank_id:
        raise RuntimeError(f"task {spec.describe()}: this worker's patch bank {bank.id} differs from the planned {spec.bank_id}")
    device = choose_device(spec.device)
    key = (spec.model.key(), spec.dataset.model_key(), str(device))
    (model, meta), model_loaded = _cached(_MODELS, key, spec.model_cache, lambda: _load_model(spec, device), "model")
    t1, cpu = time.perf_counter(), time.process_time()
    result = _call(spec, model, image, target, bank, device)
    t2, cpu = time.perf_counter(), time.process_time() - cpu
    arrays = region_arrays(result, spec)
    address, name = _worker()
    if not _VERSIONS:
        _VERSIONS.update(versions())
    info = {
        "task": spec.name,
        "model": spec.model.name,
        "dataset": spec.dataset.name,
        "image_id": spec.image_id,
        "method": spec.method.entry.name,
        "seed": spec.seed,
        "rois": [list(b) for b in spec.rois],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": address,
        "worker_name": str(name) if name is not None else "",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "started_unix": started,
        "seconds_load": t1 - t0,
        "seconds_explain": t2 - t1,
        "cpu_seconds_explain": cpu,
        "model_loaded": model_loaded,
        "dataset_loaded": dataset_loaded,
        # Per-(worker, model) facts, recorded by the task that loaded the model.
        "model_meta": meta if model_loaded else {},
        # The bank's provenance is a per-dataset fact, stored once in the root attrs.
        "result_attrs": {k: v for k, v in result.attrs.items() if k != "bank_provenance"},
        "versions": dict(_VERSIONS),
    }
    write_task(spec.store, spec.index, arrays, t2 - t1, info)
    info["seconds_total"] = time.perf_counter() - t0
    return info
