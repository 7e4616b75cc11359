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

from ..storage import load, save

__all__ = ["ResultStore", "result_name", "results_dir", "fingerprint", "RESULTS_ENV"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Environment variable that points stored results (and the notebooks' cache) elsewhere.
RESULTS_ENV = "PDCR_LAB_RESULTS"


def results_dir() -> Path:
    """Where results are kept: ``$PDCR_LAB_RESULTS``, else ``data/results`` of the checkout."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "results"


def fingerprint(model: Any) -> str:
    """Short hash of a model's weights (parameters and buffers, in name order).

    Part of a stored result's name, so that a retrained checkpoint never reuses the maps of the
    previous one.
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
    """
    row, col, height, width = (int(v) for v in roi)
    parts = [str(model), str(dataset), str(image_id), f"r{row}", f"c{col}", f"{height}x{width}"]
    parts += [f"{key}{value}" for key, value in sorted(params.items())]
    return _UNSAFE.sub("-", "_".join(parts)) + ".nc"


class ResultStore:
    """Results kept as ``.nc`` files in one folder (created on first write).

    Parameters
    ----------
    folder : path of the folder
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.folder)!r}: {len(self.files())} results)"

    def path(self, model: str, dataset: str, image_id: str, roi: tuple[int, int, int, int], **params: Any) -> Path:
        """Where the result of these settings is (or would be) stored."""
        return self.folder / result_name(model, dataset, image_id, roi, **params)

    def files(self) -> list[Path]:
        """Stored results, newest first."""
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.iterdir() if p.suffix == ".nc" and p.is_file() and not p.name.startswith(".")]
        return sorted(files, key=lambda p: (-p.stat().st_mtime, p.name))

    def load(self, name: str | os.PathLike) -> xr.Dataset:
        """Open a stored result by file name (or path)."""
        path = Path(name)
        return load(path if path.is_absolute() or path.parent != Path(".") else self.folder / path)

    def put(self, ds: xr.Dataset, path: Path) -> Path:
        """Save `ds` at `path` (inside this folder), atomically."""
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
        **settings: Any,
    ) -> xr.Dataset:
        """:func:`pdcr_lab.explain` of `model` (called `name`) on one image, or its stored result.

        `settings` (``fine``, ``coarse``, ``intervention``, ``seed``, ...) are passed to ``explain``
        and name the file together with the model's weights (:func:`fingerprint`), so changing any
        of them, or retraining the model, computes a new result.
        """
        from ..defaults import PAPER
        from ..engine import explain

        # The bank's block size unless one is given (then it also names the file).
        block = settings.get("block", bank.block if bank is not None else PAPER.block)

        def compute() -> xr.Dataset:
            options = {k: v for k, v in settings.items() if k != "block"}
            return explain(model, image, roi=roi, target=target, bank=bank, block=block, progress=progress, **options)

        roi = tuple(int(v) for v in roi)
        return self.cached(compute, model=name, dataset=dataset, image_id=image_id, roi=roi, weights=fingerprint(model), **settings)

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
        """
        path = self.path(model, dataset, image_id, roi, **params)
        if path.exists():
            return load(path)
        ds = compute().assign_attrs(model=str(model), dataset=str(dataset), image_id=str(image_id))
        save(ds, path)
        return ds
