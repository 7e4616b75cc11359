"""The component study: effects of the main stages of every zoo architecture on the embedded datasets.

Protocol (fixed, so that reruns are comparable; :class:`ComponentsSettings`):

* datasets ``lesions`` and ``vessels`` (96 x 96, the block of the dataset's bank); explained: the
  first ``images`` test images whose ground truth has both foreground and background; one RoI each,
  ``roi_size`` x ``roi_size`` on the ground truth's boundary (:func:`pdcr_lab.rois.boundary_roi`);
  the outcome is measured against the ground truth;
* donors: the first ``donors`` train images (the natural distribution; never explained);
* ``unit="module"`` over the model's main stages (:func:`~pdcr_lab.components.find_components`:
  the zoo's declared stages without the head and without blocks nested inside a stage),
  natural intervention, ``coarse`` + ``fine`` draws, ``tau``, ``seed``.

Layers are relabelled by :func:`pdcr_lab.components.stage_labels` (``encoder1``, ``bottleneck``,
``decoder2``, ...), which makes architectures comparable on one ``layer`` axis; the module path is
kept in the coordinate ``layer_path``. A stage an architecture does not have is NaN in ``ate``
(``n_draws`` 0, ``layer_path`` ""), and so is every stage of a pair whose checkpoint is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import xarray as xr

from ..checks import check_float, check_int
from ..components import explain_components, find_components, stage_labels, stage_order
from ..defaults import PAPER, WORKING
from ._loop import CellStore, Item, Loader, Pair, grid, reindex_filled, run_pairs

__all__ = ["ComponentsSettings", "COMPONENTS", "components_study"]


@dataclass(frozen=True)
class ComponentsSettings:
    """The component study's protocol (module docstring).

    Parameters
    ----------
    images : int
        Test images per dataset (the first ones with foreground and background).
    roi_size : int
        RoI side in pixels (:data:`~pdcr_lab.defaults.WORKING`).
    donors : int
        Train images whose activations replace a stage's output.
    coarse : int
        S, screening draws (the paper's).
    fine : int
        N, estimation draws. The study's own value, 20: between the working N of quick maps (10)
        and the paper's 50, since one stage effect costs one forward pass per draw and a model has
        only a handful of stages.
    tau : float
        Screening / zeroing threshold (the paper's).
    seed : int
        Seed of the donor draws; recorded in every result.

    Examples
    --------
    >>> ComponentsSettings().fine, ComponentsSettings(images=1).images
    (20, 1)
    """

    images: int = 3
    roi_size: int = WORKING.roi_size
    donors: int = WORKING.donors
    coarse: int = PAPER.coarse
    fine: int = 20
    tau: float = PAPER.tau
    seed: int = WORKING.seed

    def __post_init__(self) -> None:
        for name in ("images", "roi_size", "donors", "fine"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("coarse", self.coarse, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_float("tau", self.tau, minimum=0.0)

    def cell_key(self) -> dict[str, Any]:
        """What a stored cell depends on: every setting."""
        return {"study": "components", **asdict(self)}


#: The study's default protocol.
COMPONENTS = ComponentsSettings()


def _per_pair(settings: ComponentsSettings, device: Any) -> Callable[[Pair], Callable[[Item], xr.Dataset]]:
    """The study's per-pair setup: the model's main stages, their labels, the donors."""

    def setup(pair: Pair) -> Callable[[Item], xr.Dataset]:
        view = pair.view
        main = [c for c in find_components(pair.model, view.items[0].image) if c.main]
        labels = stage_labels(main)
        donors = view.data.images("train")[: settings.donors]

        def explain_image(item: Item) -> xr.Dataset:
            ds = explain_components(
                pair.model, item.image, roi=item.roi, target=item.target, layers=[c.path for c in main],
                unit="module", donors=donors, block=view.block, coarse=settings.coarse, fine=settings.fine,
                tau=settings.tau, seed=settings.seed, device=device,
            )
            ds = ds.assign_coords(layer_path=("layer", [str(p) for p in ds.layer.values]))
            return ds.assign_coords(layer=[labels[p] for p in ds.layer.values])

        return explain_image

    return setup


def components_study(
    models: Sequence[str] | None = None,
    datasets: Sequence[str] = ("lesions", "vessels"),
    *,
    settings: ComponentsSettings = COMPONENTS,
    device: str | torch.device | None = None,
    loader: Loader | None = None,
    store: CellStore | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[xr.Dataset, list[str]]:
    """Run the component study; returns the stacked effects and the pairs without a checkpoint.

    Parameters
    ----------
    models : sequence of str, optional
        Zoo architectures (default: all of ``pdcr_lab.zoo.list()``).
    datasets : sequence of str
        Embedded dataset names.
    settings : ComponentsSettings
        The protocol.
    device : str or torch.device, optional
        Where the models run (default: the model's device).
    loader : callable (name, dataset) -> (model, metadata), optional
        Default ``pdcr_lab.zoo.load``. A pair whose loader raises FileNotFoundError (or another
        :data:`~pdcr_lab.studies.UNUSABLE` error) is skipped and listed as missing.
    store : CellStore, optional
        Saves each (model, dataset) cell; with ``reuse`` reuses cells with the same settings.
    echo : callable str -> None
        Progress lines.

    Returns
    -------
    report : xarray.Dataset
        Component effects with dims (model, dataset, image, layer); attrs ``report_settings`` and
        ``missing``.
    missing : list of str
        ``"model/dataset"`` pairs whose checkpoint could not be loaded.
    """
    run = run_pairs(models, datasets, _per_pair(settings, device), images=settings.images,
                    roi_size=settings.roi_size, loader=loader, store=store, log=echo)
    missing = [f"{m}/{d}" for m, d in run.missing]
    if not run.cells:
        raise ValueError(f"no zoo model could be loaded for {run.models} on {run.datasets}")
    union = sorted({str(k) for cell in run.cells.values() for k in cell.layer.values}, key=stage_order)
    report = grid({pair: reindex_filled(cell, "layer", union) for pair, cell in run.cells.items()},
                  run.models, run.datasets)
    return report.assign_attrs(report_settings=repr(settings), missing=", ".join(missing) or "none"), missing
