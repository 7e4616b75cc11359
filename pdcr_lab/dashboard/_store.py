"""A folder of stored results (.nc files): the dashboard's history and the notebooks' cache.

Each explanation is one netCDF file named after what was explained and how, so asking again for
the same (model, dataset, image, RoI, parameters) loads the file instead of recomputing, and a
person browsing the folder can read what each file holds from its name.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr

from ..locations import RESULTS_ENV, results_dir, shipped_results
from ..storage import load, save

__all__ = ["ResultStore", "result_name", "results_dir", "notebook_store", "fingerprint", "confine", "RESULTS_ENV"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def confine(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` resolved, provided it lies inside the folder `root` (the root itself included).

    The dashboard's visitors type folder and file names; they must not reach anything outside the
    results root the server was started with. A relative `path` is taken from `root`, ``~`` is
    expanded, and both are resolved (``..`` and symbolic links followed) *before* the check, so
    ``../elsewhere``, an absolute path elsewhere and a link inside the root that leads out are all
    refused, while a link that stays inside is fine. Neither path has to exist.

    Parameters
    ----------
    root : str or os.PathLike
        The results root.
    path : str or os.PathLike
        A folder or file, relative to `root` or absolute.

    Returns
    -------
    pathlib.Path
        The resolved path.

    Raises
    ------
    ValueError
        When the resolved path is outside the resolved root, or cannot be resolved.

    Examples
    --------
    >>> confine("/srv/results", "lesions/unet") == Path("/srv/results/lesions/unet").resolve()
    True
    >>> confine("/srv/results", "../secret")
    Traceback (most recent call last):
    ...
    ValueError: ../secret is outside the results root /srv/results: the dashboard reads and writes only inside it
    """
    base = Path(root).expanduser().resolve()
    try:
        target = (base / Path(path).expanduser()).resolve()  # an absolute `path` replaces `base`
    except (OSError, RuntimeError) as exc:  # a link loop, an unreadable folder: refused as well
        raise ValueError(f"{os.fspath(path)} cannot be resolved inside the results root {base}: {exc}") from exc
    if target != base and base not in target.parents:
        raise ValueError(f"{os.fspath(path) or '.'} is outside the results root {base}: "
                         "the dashboard reads and writes only inside it")
    return target


def fingerprint(model: Any) -> str:
    """Short hash of a model's weights (parameters and buffers, in name order).

    Part of a stored result's name, so that a retrained checkpoint never reuses the maps of the
    previous one.

    Parameters
    ----------
    model : torch.nn.Module
        Any model (its ``state_dict`` is hashed).

    Examples
    --------
    >>> net = torch.nn.Linear(2, 1)
    >>> _ = torch.nn.init.zeros_(net.weight), torch.nn.init.zeros_(net.bias)
    >>> a = fingerprint(net)
    >>> _ = torch.nn.init.ones_(net.bias)
    >>> len(a), a == fingerprint(net)
    (10, False)
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:10]


def result_name(model: str, dataset: str, image_id: str, roi: tuple[int, int, int, int], **params: Any) -> str:
    """File name of a result: ``<model>_<dataset>_<image>_r<row>_c<col>_<h>x<w>[_<key><value>...].nc``.

    `params` (e.g. ``fine=5, intervention="zero"``) are appended in sorted order, so that results
    computed with different settings never share a file.

    Parameters
    ----------
    model : str
        Model name.
    dataset : str
        Dataset name.
    image_id : str
        Image name.
    roi : (row, col, height, width)
        The RoI box.
    **params
        Settings of the computation; characters unsafe in file names become ``-``.

    Examples
    --------
    >>> result_name("unet", "lesions", "lesions_0001", (40, 48, 16, 16), intervention="zero", fine=5)
    'unet_lesions_lesions_0001_r40_c48_16x16_fine5_interventionzero.nc'
    """
    row, col, height, width = (int(v) for v in roi)
    parts = [str(model), str(dataset), str(image_id), f"r{row}", f"c{col}", f"{height}x{width}"]
    parts += [f"{key}{value}" for key, value in sorted(params.items())]
    return _UNSAFE.sub("-", "_".join(parts)) + ".nc"


class ResultStore:
    """Results kept as ``.nc`` files in one folder (created on first write).

    Parameters
    ----------
    folder : str or os.PathLike
        The folder (``~`` is expanded); results are written here only.
    fallback : str or os.PathLike, optional
        A read-only folder also searched for a stored result (e.g. the maps the checkout ships):
        a result found there is loaded, never copied or rewritten.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     store = ResultStore(folder)
    ...     calls = []
    ...     def compute():
    ...         calls.append(1)
    ...         return pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    ...     first = store.cached(compute, model="m", dataset="d", image_id="i", roi=(0, 0, 4, 4))
    ...     again = store.cached(compute, model="m", dataset="d", image_id="i", roi=(0, 0, 4, 4))
    ...     names = [p.name for p in store.files()]
    >>> len(calls), again.attrs["model"], names
    (1, 'm', ['m_d_i_r0_c0_4x4.nc'])
    """

    def __init__(self, folder: str | os.PathLike, *, fallback: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.fallback = Path(fallback).expanduser() if fallback is not None else None

    def __repr__(self) -> str:
        return f"ResultStore({str(self.folder)!r}: {len(self.files())} results)"

    def path(self, model: str, dataset: str, image_id: str, roi: tuple[int, int, int, int], **params: Any) -> Path:
        """Where the result of these settings is (or would be) stored.

        Parameters
        ----------
        model, dataset, image_id, roi, **params
            As in :func:`result_name`.
        """
        return self.folder / result_name(model, dataset, image_id, roi, **params)

    def files(self) -> list[Path]:
        """Stored results, newest first."""
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.iterdir() if p.suffix == ".nc" and p.is_file() and not p.name.startswith(".")]
        return sorted(files, key=lambda p: (-p.stat().st_mtime, p.name))

    def load(self, name: str | os.PathLike) -> xr.Dataset:
        """Open a stored result by file name (or path).

        Parameters
        ----------
        name : str or os.PathLike
            A file name in this folder, or a path.
        """
        path = Path(name)
        return load(path if path.is_absolute() or path.parent != Path(".") else self.folder / path)

    def put(self, ds: xr.Dataset, path: Path) -> Path:
        """Save `ds` at `path` (inside this folder), atomically.

        Parameters
        ----------
        ds : xarray.Dataset
            Effects to store.
        path : pathlib.Path
            Destination, usually :meth:`path` of its settings.
        """
        return save(ds, path)

    def explain(
        self,
        model: Any,
        image: Any,
        *,
        name: str,
        dataset: str,
        image_id: str,
        roi: tuple[int, int, int, int],
        target: Any = None,
        bank: Any = None,
        progress: Any = False,
        method: str = "pdcr",
        **settings: Any,
    ) -> xr.Dataset:
        """The map of a registered explainer (:mod:`pdcr_lab.explainers`) of `model` on one image, or its stored result.

        `settings` (``fine``, ``coarse``, ``intervention``, ``seed``, ...) that the explainer takes
        are passed to it and name the file together with the method (when not PdCR) and the
        model's weights (:func:`fingerprint`), so changing any of them, or retraining the model,
        computes a new result. Settings the explainer does not take are left out of both.

        Parameters
        ----------
        model : torch.nn.Module
            The explained model.
        image : Tensor or array (C, H, W)
            The explained image.
        name : str
            The model's name (in the file name and the attrs).
        dataset, image_id : str
            Where the image comes from (in the file name and the attrs).
        roi : (row, col, height, width)
            The RoI box.
        target : array (H, W), optional
            Ground truth, as in :func:`pdcr_lab.explain`.
        bank : PatchBank, optional
            Natural blocks; its block size is the default ``block``.
        progress : bool or callable(done, total)
            As in :func:`pdcr_lab.explain` (for explainers that report progress).
        method : str
            A name of :func:`pdcr_lab.explainers.list_explainers` with a map on the block grid.
        **settings
            Further arguments of the explainer.
        """
        from ..defaults import PAPER
        from ..explainers import get_explainer

        spec = get_explainer(method)
        if not spec.on_grid:
            raise ValueError(f"method={method!r} does not make a map on the block grid; choose a block-map explainer")
        named = spec.parameters or set()
        settings = {k: v for k, v in settings.items() if k in named or k in ("block", "seed")}
        # The bank's block size unless one is given (then it also names the file).
        block = settings.get("block", bank.block if bank is not None else PAPER.block)
        extra = {k: v for k, v in (("bank", bank), ("progress", progress)) if k in named}

        def compute() -> xr.Dataset:
            options = {k: v for k, v in settings.items() if k != "block"}
            return spec.explain(model, image, roi=roi, target=target, block=block, **extra, **options)

        roi = tuple(int(v) for v in roi)
        naming = settings if method == "pdcr" else {"method": method, **settings}
        return self.cached(compute, model=name, dataset=dataset, image_id=image_id, roi=roi, weights=fingerprint(model),
                           **naming)

    def cached(
        self,
        compute: Callable[[], xr.Dataset],
        *,
        model: str,
        dataset: str,
        image_id: str,
        roi: tuple[int, int, int, int],
        **params: Any,
    ) -> xr.Dataset:
        """The stored result of these settings, or ``compute()`` saved and returned.

        The identifying facts are written into the result's attrs (``model``, ``dataset``,
        ``image_id``) so that a file opened on its own says what it shows.

        Parameters
        ----------
        compute : callable() -> xarray.Dataset
            Makes the result when none is stored.
        model, dataset, image_id, roi, **params
            Name the file (:func:`result_name`).
        """
        path = self.path(model, dataset, image_id, roi, **params)
        if path.exists():
            return load(path)
        if self.fallback is not None and (self.fallback / path.name).is_file():
            return load(self.fallback / path.name)
        ds = compute().assign_attrs(model=str(model), dataset=str(dataset), image_id=str(image_id))
        save(ds, path)
        return ds


def notebook_store() -> ResultStore:
    """The notebooks' cache: ``notebooks`` in :func:`results_dir`, falling back on the maps the checkout ships.

    Examples
    --------
    >>> store = notebook_store()
    >>> store.folder == results_dir() / "notebooks", store.fallback == shipped_results() / "notebooks"
    (True, True)
    """
    return ResultStore(results_dir() / "notebooks", fallback=shipped_results() / "notebooks")
