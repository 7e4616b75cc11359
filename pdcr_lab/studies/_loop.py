"""The one study loop: (model, dataset) pairs of the zoo, fixed test images and RoIs, one result per image.

A *study* asks the same question of every zoo model on every embedded dataset. The loop does the
part every study shares:

1. load each dataset once (:func:`load_view`: its test images, masks, ids and natural bank) and
   choose its images and RoIs (:func:`pick_rois`: a ``roi_size`` square on the ground truth's
   boundary, :func:`pdcr_lab.rois.boundary_roi`, aligned to the block of the dataset's bank);
2. load each model for that dataset (``pdcr_lab.zoo.load`` unless a loader is given); a pair whose
   checkpoint is missing or unusable is recorded in ``missing``, one the study refuses (e.g. too
   slow) in ``skipped``;
3. run the study's per-image function on every chosen image and stack the effects datasets along
   ``image`` with :func:`pdcr_lab.schema.stack` (one *cell* per pair);
4. with a :class:`CellStore`, save every cell as soon as it is done and, when asked to resume,
   reuse a stored cell whose key (the study's settings and the checkpoint's SHA-256) matches.

:func:`grid` then stacks the cells into one (model, dataset, image, ...) dataset, filling the pairs
that were not run. Nothing here draws a random number: the RoIs are chosen deterministically and
every explainer takes its seed from the study's settings, which each result records in its attrs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from ..defaults import WORKING
from ..rois import boundary_roi
from ..schema import stack
from ..storage import load, save

if TYPE_CHECKING:  # the datasets package is imported when a study runs, not when this module loads
    from ..datasets import SegmentationData

__all__ = [
    "UNUSABLE",
    "Item",
    "View",
    "Pair",
    "PairRun",
    "CellStore",
    "pick_rois",
    "load_view",
    "run_pairs",
    "grid",
    "fill_value",
    "reindex_filled",
    "cells_folder",
]

Loader = Callable[[str, str], tuple[torch.nn.Module, Mapping[str, Any]]]
PerImage = Callable[["Item"], xr.Dataset]

#: What a loader raises for a checkpoint that is missing or unusable (``zoo.load``: FileNotFoundError,
#: ``ChecksumError`` (a ValueError), other OSErrors); such a pair is skipped and listed, not fatal.
UNUSABLE: tuple[type[Exception], ...] = (OSError, ValueError)

# Cell attrs that are bookkeeping of the store, not facts of the result (removed when a cell is read).
_KEY, _FACTS = "study_cell_key", "study_cell_facts"


@dataclass(frozen=True)
class Item:
    """One explained test image: where it is, what it shows, and its RoI.

    Parameters
    ----------
    position : int
        Its place among the chosen images (0, 1, ...).
    index : int
        Its index in the test split.
    image_id : str
        Its name in the dataset.
    image : torch.Tensor
        Float32 (C, H, W) in [0, 1].
    target : torch.Tensor
        Bool (H, W) ground truth: the outcome's reference.
    roi : tuple of int
        (row, col, height, width) of the RoI.
    """

    position: int
    index: int
    image_id: str
    image: torch.Tensor
    target: torch.Tensor
    roi: tuple[int, int, int, int]


@dataclass(frozen=True)
class View:
    """A loaded dataset and the images a study explains on it.

    Parameters
    ----------
    name : str
        Dataset name.
    data : pdcr_lab.datasets.SegmentationData
        The dataset (splits, natural bank).
    items : tuple of Item
        The chosen test images with their RoIs.
    label_by_index : bool
        Label the ``image`` dim by test-split index (images chosen by index) rather than by position.
    """

    name: str
    data: SegmentationData
    items: tuple[Item, ...]
    label_by_index: bool = False

    @property
    def bank(self) -> Any:
        """The dataset's natural patch bank."""
        return self.data.bank

    @property
    def block(self) -> int:
        """Block side of the dataset's bank (the grid of every map)."""
        return int(self.data.bank.block)

    @property
    def labels(self) -> list[int]:
        """Labels of the ``image`` dim of this dataset's cells."""
        return [item.index if self.label_by_index else item.position for item in self.items]


@dataclass(frozen=True)
class Pair:
    """A loaded model on a loaded dataset: what a study's per-pair setup receives.

    Parameters
    ----------
    model_name : str
        Zoo name of the model.
    view : View
        The dataset and its chosen images.
    model : torch.nn.Module
        The model, in eval mode as the loader returned it.
    meta : mapping
        The checkpoint's metadata (``test_dice``, ``sha256``, ``images_per_s``, ...).
    """

    model_name: str
    view: View
    model: torch.nn.Module
    meta: Mapping[str, Any]


@dataclass
class PairRun:
    """What :func:`run_pairs` returns.

    Parameters
    ----------
    models, datasets : list of str
        The names asked for, in order.
    views : dict
        Dataset name -> :class:`View`.
    cells : dict
        (model, dataset) -> the pair's results stacked along ``image``.
    facts : dict
        (model, dataset) -> ``{"seconds": wall time of computing the cell, "test_dice": recorded
        with the checkpoint}`` (NaN where unknown).
    missing : dict
        (model, dataset) -> why the checkpoint could not be used.
    skipped : dict
        (model, dataset) -> why the study refused the model.
    reused : list
        The pairs whose cell came from the store.
    """

    models: list[str]
    datasets: list[str]
    views: dict[str, View] = field(default_factory=dict)
    cells: dict[tuple[str, str], xr.Dataset] = field(default_factory=dict)
    facts: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    missing: dict[tuple[str, str], str] = field(default_factory=dict)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    reused: list[tuple[str, str]] = field(default_factory=list)

    def present(self) -> list[str]:
        """Models with at least one cell, in the order asked for."""
        return [m for m in self.models if any((m, d) in self.cells for d in self.datasets)]


class CellStore:
    """Cells saved one file per (model, dataset) pair, reusable by a later run with the same key.

    A cell is written with :func:`pdcr_lab.storage.save` (validated, atomic) to
    ``folder/<dataset>/<model>.nc`` as soon as it is computed, with its key in the attrs: the study's
    settings and the checkpoint's SHA-256. With ``reuse=True`` a stored cell is returned instead of
    computing it again when its key equals the current one; otherwise it is recomputed and replaced.

    Parameters
    ----------
    folder : str or os.PathLike
        Where the cells live (see :func:`cells_folder` for the studies' default).
    key : mapping
        JSON-serialisable description of everything a cell depends on besides the checkpoint.
    reuse : bool
        Return matching stored cells (resume) instead of recomputing them.
    stored_only : bool
        Compute nothing: a pair without a matching stored cell is skipped and listed (to combine
        what a long run has finished so far; implies `reuse`).

    Examples
    --------
    >>> import tempfile, pdcr_lab
    >>> store = CellStore(tempfile.mkdtemp(), {"study": "demo", "fine": 2}, reuse=True)
    >>> cell = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> _ = store.put("net", "toy", cell, {"sha256": "abc"}, {"seconds": 1.5})
    >>> back, facts = store.get("net", "toy", {"sha256": "abc"})
    >>> facts["seconds"], store.get("net", "toy", {"sha256": "new"}) is None
    (1.5, True)
    """

    def __init__(self, folder: str | Path, key: Mapping[str, Any], *, reuse: bool = False,
                 stored_only: bool = False) -> None:
        self.folder = Path(folder)
        self.key = dict(key)
        self.stored_only = bool(stored_only)
        self.reuse = bool(reuse) or self.stored_only

    def path(self, model: str, dataset: str) -> Path:
        """File of one cell.

        Parameters
        ----------
        model, dataset : str
            The pair.
        """
        return self.folder / _safe(dataset) / f"{_safe(model)}.nc"

    def _key(self, meta: Mapping[str, Any]) -> str:
        return json.dumps({**self.key, "checkpoint": str(meta.get("sha256", "none"))}, sort_keys=True, default=str)

    def get(self, model: str, dataset: str, meta: Mapping[str, Any]) -> tuple[xr.Dataset, dict[str, float]] | None:
        """The stored cell and its facts, or None (no reuse, no file, or another key).

        Parameters
        ----------
        model, dataset : str
            The pair.
        meta : mapping
            The checkpoint's metadata (its ``sha256`` is part of the key).
        """
        path = self.path(model, dataset)
        if not self.reuse or not path.exists():
            return None
        cell = load(path)
        if cell.attrs.get(_KEY) != self._key(meta):
            return None
        facts = json.loads(cell.attrs.get(_FACTS, "{}"))
        cell.attrs = {k: v for k, v in cell.attrs.items() if k not in (_KEY, _FACTS)}
        return cell, {k: float(v) for k, v in facts.items()}

    def put(self, model: str, dataset: str, cell: xr.Dataset, meta: Mapping[str, Any],
            facts: Mapping[str, float]) -> Path:
        """Save a computed cell (atomically) with its key and facts.

        Parameters
        ----------
        model, dataset : str
            The pair.
        cell : xarray.Dataset
            The pair's results stacked along ``image``.
        meta : mapping
            The checkpoint's metadata.
        facts : mapping
            Numbers about the cell returned with it by :meth:`get` (:attr:`PairRun.facts`).
        """
        stored = cell.assign_attrs({_KEY: self._key(meta), _FACTS: json.dumps({k: float(v) for k, v in facts.items()})})
        return save(stored, self.path(model, dataset))


def cells_folder(out: str | Path) -> Path:
    """The default cell folder of a study writing `out`: a hidden ``.<stem>.cells`` folder beside it.

    Parameters
    ----------
    out : str or os.PathLike
        The study's result file.

    Examples
    --------
    >>> cells_folder("data/results/strategies.nc").as_posix()
    'data/results/.strategies.cells'
    """
    out = Path(out)
    return out.parent / f".{out.stem}.cells"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def pick_rois(masks: Sequence[Any], images: int | Iterable[int], *, roi_size: int = WORKING.roi_size,
              block: int = WORKING.block) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(test index, RoI) of the images a study explains, each RoI on its mask's boundary.

    Parameters
    ----------
    masks : sequence of bool (H, W) masks
        Ground truth of the test split.
    images : int or iterable of int
        An int n: the first n masks holding both foreground and background (fewer if the split has
        fewer). Indices: exactly these images (each mask must hold some foreground).
    roi_size : int
        Side of the square RoI in pixels (a multiple of `block`).
    block : int
        Grid the RoI is aligned to: the dataset bank's block.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((3, 32, 32), dtype=bool)
    >>> masks[1, 8:24, 8:24] = masks[2] = True
    >>> pick_rois(masks, 2, roi_size=16, block=8)
    [(1, (0, 8, 16, 16))]
    >>> pick_rois(masks, [2], roi_size=16, block=8)
    [(2, (8, 8, 16, 16))]
    """
    if isinstance(images, (int, np.integer)):
        chosen = [i for i, m in enumerate(masks) if bool(m.any()) and not bool(m.all())][: int(images)]
    else:
        chosen = [int(i) for i in images]
        bad = [i for i in chosen if not 0 <= i < len(masks)]
        if bad:
            raise ValueError(f"images={chosen} holds indices {bad} out of range: the test split has {len(masks)} images")
    return [(i, boundary_roi(masks[i], size=roi_size, block=block)) for i in chosen]


#: Where a study may place RoIs on a dataset: a bool (N, H, W) region per test image, from the data.
RoiRegion = Callable[["SegmentationData"], Any]


def load_view(name: str, images: int | Iterable[int], *, roi_size: int = WORKING.roi_size,
              image_size: int | None = None, roi_region: RoiRegion | None = None) -> View:
    """Load an embedded dataset and choose the images and RoIs a study explains on it.

    Parameters
    ----------
    name : str
        Embedded dataset (``pdcr_lab.datasets.load``).
    images : int or iterable of int
        See :func:`pick_rois`.
    roi_size : int
        Side of the boundary RoI in pixels.
    image_size : int, optional
        Side the dataset is loaded at; default its working size (96, 128 for ``cues``).
    roi_region : callable data -> bool array (N_test, H, W), optional
        Where the RoIs may go: each RoI is placed on the boundary of the ground truth inside the
        image's region (the outcome's reference stays the whole ground truth). Default: anywhere.
    """
    from .. import datasets

    data = datasets.load(name, size=image_size)
    test, masks, ids = data.images("test"), data.masks("test"), data.ids("test")
    where = masks if roi_region is None else masks & torch.as_tensor(np.asarray(roi_region(data), bool))
    picks = pick_rois(where, images, roi_size=roi_size, block=int(data.bank.block))
    items = tuple(Item(k, i, str(ids[i]), test[i], masks[i], roi) for k, (i, roi) in enumerate(picks))
    return View(name, data, items, label_by_index=not isinstance(images, (int, np.integer)))


def _load_pair(name: str, view: View, loader: Loader, accept: Callable[[Mapping[str, Any]], str | None] | None,
               run: PairRun, log: Callable[[str], None]) -> Pair | None:
    """The pair, or None with the reason recorded (missing checkpoint, refused by the study)."""
    try:
        model, meta = loader(name, view.name)
    except UNUSABLE as exc:
        run.missing[name, view.name] = str(exc).split("\n")[0]
        log(f"  {name:16s} {view.name:8s} skipped: no usable checkpoint")
        return None
    refusal = accept(meta) if accept is not None else None
    if refusal:
        run.skipped[name, view.name] = refusal
        log(f"  {name:16s} {view.name:8s} skipped: {refusal}")
        return None
    return Pair(name, view, model, dict(meta))


def run_pairs(
    models: Sequence[str] | None,
    datasets: Sequence[str],
    per_pair: Callable[[Pair], PerImage],
    *,
    images: int | Iterable[int],
    roi_size: int = WORKING.roi_size,
    image_size: int | None = None,
    roi_region: RoiRegion | None = None,
    loader: Loader | None = None,
    accept: Callable[[Mapping[str, Any]], str | None] | None = None,
    store: CellStore | None = None,
    log: Callable[[str], None] = print,
) -> PairRun:
    """Run a study's per-image function over every (model, dataset) pair; see the module notes.

    Parameters
    ----------
    models : sequence of str or None
        Zoo architectures; None: all of ``pdcr_lab.zoo.list()``.
    datasets : sequence of str
        Embedded datasets, each loaded once.
    per_pair : callable Pair -> (callable Item -> xarray.Dataset)
        The study: given a loaded pair it does its per-pair setup and returns the function that
        explains (or analyses) one image, returning an effects dataset.
    images : int or iterable of int
        Which test images (see :func:`pick_rois`).
    roi_size : int
        RoI side in pixels.
    image_size : int, optional
        Dataset size in pixels; default each dataset's working size.
    roi_region : callable, optional
        Where RoIs may go on each dataset (:func:`load_view`).
    loader : callable (model, dataset) -> (model, metadata), optional
        Default ``pdcr_lab.zoo.load`` (looked up at call time). It raises one of :data:`UNUSABLE`
        for a pair without a usable checkpoint.
    accept : callable metadata -> str or None, optional
        A reason to skip a model (listed in ``skipped``), or None to run it.
    store : CellStore, optional
        Saves each cell when done; with ``reuse`` returns matching stored cells instead.
    log : callable str -> None
        One line per pair.

    Returns
    -------
    PairRun
    """
    if loader is None or models is None:
        from .. import zoo

        loader = loader or zoo.load
        models = list(zoo.list()) if models is None else models
    if not isinstance(images, (int, np.integer)):
        images = tuple(int(i) for i in images)  # iterated once per dataset
    run = PairRun(models=list(models), datasets=list(datasets))
    for dname in run.datasets:
        view = run.views[dname] = load_view(dname, images, roi_size=roi_size, image_size=image_size,
                                            roi_region=roi_region)
        if not view.items:
            raise ValueError(f"no test image of {dname!r} holds both foreground and background to place an RoI on")
        for name in run.models:
            pair = _load_pair(name, view, loader, accept, run, log)
            if pair is None:
                continue
            stored = store.get(name, dname, pair.meta) if store is not None else None
            if stored is not None:
                run.cells[name, dname], run.facts[name, dname] = stored
                run.reused.append((name, dname))
                log(f"  {name:16s} {dname:8s} reused from {store.path(name, dname)}")
                continue
            if store is not None and store.stored_only:
                run.skipped[name, dname] = "not computed yet (combined from stored cells only)"
                log(f"  {name:16s} {dname:8s} skipped: no stored cell")
                continue
            start = time.perf_counter()
            explain_image = per_pair(pair)
            results = [explain_image(item).assign_attrs(image_id=item.image_id, image_index=item.index)
                       for item in view.items]
            cell = stack(results, "image", labels=view.labels)
            seconds = time.perf_counter() - start
            run.cells[name, dname] = cell
            run.facts[name, dname] = {"seconds": seconds, "test_dice": float(pair.meta.get("test_dice", np.nan))}
            if store is not None:
                store.put(name, dname, cell, pair.meta, run.facts[name, dname])
            log(f"  {name:16s} {dname:8s} {len(view.items)} images in {seconds:6.1f} s")
    return run


def fill_value(da: xr.DataArray) -> Any:
    """What a pair that was not run holds: NaN for floats, 0 for integers, False for flags, "" for text.

    Parameters
    ----------
    da : xarray.DataArray
        A variable or coordinate of a cell.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> [fill_value(xr.DataArray(np.zeros(1, dtype=t))) for t in (float, int, bool)]
    [nan, 0, False]
    """
    kind = da.dtype.kind
    return np.nan if kind in "fc" else False if kind == "b" else 0 if kind in "iu" else ""


def reindex_filled(ds: xr.Dataset, dim: str, labels: Sequence[Any]) -> xr.Dataset:
    """`ds` on `labels` along `dim`; new entries of variables and coordinates hold :func:`fill_value`.

    Parameters
    ----------
    ds : xarray.Dataset
        A cell or a stack of cells.
    dim : str
        The dim to reindex (``model``, ``layer``, ...).
    labels : sequence
        The new labels along `dim`.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"n": ("layer", [3])}, coords={"layer": ["enc"], "path": ("layer", ["net.0"])})
    >>> out = reindex_filled(ds, "layer", ["enc", "dec"])
    >>> out.n.values.tolist(), out.path.values.tolist()
    ([3, 0], ['net.0', ''])
    """
    fills = {name: fill_value(var) for name, var in ds.variables.items() if name != dim and dim in var.dims}
    return ds.reindex({dim: list(labels)}, fill_value=fills)


def grid(cells: Mapping[tuple[str, str], xr.Dataset], models: Sequence[str], datasets: Sequence[str]) -> xr.Dataset:
    """Stack cells into one (model, dataset, ...) dataset; pairs without a cell are filled.

    Every dataset that has a cell keeps every model that has a cell anywhere, so the result is one
    grid; a missing pair holds :func:`fill_value` (NaN effects, 0 draws, False flags, "" text).

    Parameters
    ----------
    cells : mapping (model, dataset) -> xarray.Dataset
        One effects dataset per pair (e.g. :attr:`PairRun.cells`), all with the same dims.
    models, datasets : sequence of str
        Order of the ``model`` and ``dataset`` coordinates; names without a cell are left out.
    """
    models = [m for m in models if any((m, d) in cells for d in datasets)]
    sets = [d for d in datasets if any((m, d) in cells for m in models)]
    if not sets:
        raise ValueError("there is no cell to stack: no (model, dataset) pair was run")
    per_set = []
    for d in sets:
        present = [m for m in models if (m, d) in cells]
        part = stack([cells[m, d] for m in present], dim="model", labels=present)
        per_set.append(reindex_filled(part, "model", models) if present != models else part)
    return stack(per_set, dim="dataset", labels=sets)
