"""The strategies study: PdCR maps of the zoo on the embedded datasets, for the strategy labels.

Design of the run (:class:`StrategiesSettings`): the first `images` test images (32) of each embedded
dataset (``lesions``, ``vessels``, ``brain``: 96 x 96, the block of the dataset's bank, a 12 x 12 grid), one
``roi_size`` x ``roi_size`` RoI per image placed by :func:`pdcr_lab.rois.boundary_roi` on the ground
truth (the grid-aligned window closest to half foreground, so that the RoI's Dice responds in both
directions), the ground truth as the outcome's reference and as the structure mask of the alignment
descriptors, natural blocks from the dataset's bank. PdCR runs with the paper's settings (S = 3,
N = 50, tau); the values used are recorded in the result and the table.

The maps are labelled, summarised and tabulated by :mod:`pdcr_lab.strategies`
(:func:`~pdcr_lab.strategies.label_maps`, :func:`~pdcr_lab.strategies.summarize`,
:func:`~pdcr_lab.strategies.format_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_float, check_int
from ..defaults import PAPER, WORKING
from ..engine import explain
from ._loop import CellStore, Item, Loader, Pair, PairRun, RoiRegion, grid, run_pairs

__all__ = ["StrategiesSettings", "strategies_study"]


@dataclass(frozen=True)
class StrategiesSettings:
    """The fixed design of the strategies study (module docstring).

    Parameters
    ----------
    images : int
        First test images of each dataset explained.
    roi_size : int
        RoI side in pixels (:data:`~pdcr_lab.defaults.WORKING`: two blocks).
    coarse : int
        S, screening draws (the paper's).
    fine : int
        N, estimation draws (the paper's 50).
    tau : float
        Screening / zeroing threshold (the paper's).
    seed : int
        Seed of the bank draws and of the bootstrap.
    n_boot : int
        Bootstrap resamples of the summary.
    level : float
        Coverage of the summary's intervals.

    Examples
    --------
    >>> StrategiesSettings().fine, StrategiesSettings().images, StrategiesSettings().roi_size
    (50, 32, 16)
    """

    images: int = 32
    roi_size: int = WORKING.roi_size
    coarse: int = PAPER.coarse
    fine: int = PAPER.fine
    tau: float = PAPER.tau
    seed: int = WORKING.seed
    n_boot: int = 2000
    level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("images", "roi_size", "coarse", "fine", "n_boot"):
            check_int(name, getattr(self, name), minimum=1 if name != "coarse" else 0)
        check_int("seed", self.seed, minimum=0)
        check_float("tau", self.tau, minimum=0.0)
        if not 0 < check_float("level", self.level) < 1:
            raise ValueError(f"level={self.level} must lie in (0, 1)")

    def cell_key(self) -> dict[str, Any]:
        """What a stored cell depends on (the summary's `n_boot` and `level` do not change maps)."""
        return {"study": "strategies", **{k: v for k, v in asdict(self).items() if k not in ("n_boot", "level")}}


def _per_pair(settings: StrategiesSettings, device: Any) -> Callable[[Pair], Callable[[Item], xr.Dataset]]:
    def setup(pair: Pair) -> Callable[[Item], xr.Dataset]:
        view = pair.view

        def explain_image(item: Item) -> xr.Dataset:
            return explain(pair.model, item.image, roi=item.roi, target=item.target, bank=view.bank, block=view.block,
                           coarse=settings.coarse, fine=settings.fine, tau=settings.tau, seed=settings.seed,
                           device=device)

        return explain_image

    return setup


def _combine(run: PairRun, settings: StrategiesSettings) -> xr.Dataset:
    """One grid over the models and datasets that have a cell; per-pair facts and the structure added."""
    maps = grid(run.cells, run.models, run.datasets)
    models, sets = [str(m) for m in maps.model.values], [str(d) for d in maps.dataset.values]
    maps["explained"] = (("model", "dataset"), np.array([[(m, d) in run.cells for d in sets] for m in models]),
                         {"long_name": "the pair had a checkpoint and was explained"})
    facts = [[run.facts.get((m, d), {}) for d in sets] for m in models]
    maps["model_test_dice"] = (("model", "dataset"), np.array([[f.get("test_dice", np.nan) for f in r] for r in facts]),
                               {"long_name": "test Dice recorded with the checkpoint"})
    maps["explain_seconds"] = (("model", "dataset"), np.array([[f.get("seconds", np.nan) for f in r] for r in facts]),
                               {"long_name": "wall time of explaining the pair's images", "units": "s"})
    structure = np.stack([np.stack([item.target.numpy() for item in run.views[d].items]) for d in sets])
    maps["structure_mask"] = (("dataset", "image", "y", "x"), structure.astype(bool),
                              {"long_name": "ground truth, the structure of the alignment descriptors"})
    # coarse, fine, tau and seed are already attrs of every map.
    design = {f"report_{k}": v for k, v in asdict(settings).items() if k not in ("coarse", "fine", "tau", "seed")}
    return maps.assign_attrs(design)


def strategies_study(
    models: Sequence[str] | None = None,
    datasets: Sequence[str] = ("lesions", "vessels", "brain"),
    settings: StrategiesSettings = StrategiesSettings(),
    *,
    device: Any = None,
    loader: Loader | None = None,
    store: CellStore | None = None,
    log: Callable[[str], None] = print,
    roi_region: RoiRegion | None = None,
) -> tuple[xr.Dataset, dict[tuple[str, str], str]]:
    """PdCR maps of zoo models on the study's images, stacked over (model, dataset, image).

    A (model, dataset) pair without a usable checkpoint is skipped and reported; its maps are
    missing in the result (NaN ``ate``, ``explained`` False), so the result stays one grid over
    every model and dataset that has at least one explained pair. With a `store` every pair is
    saved when done, and with ``store.reuse`` the pairs it holds with the same settings and
    checkpoint are reused instead of explained again.

    Parameters
    ----------
    models : sequence of str, optional
        Zoo architectures (default: all of ``pdcr_lab.zoo.list()``).
    datasets : sequence of str
        Embedded datasets.
    settings : StrategiesSettings
        The design.
    device : str or torch.device, optional
        Where the models run.
    loader : callable (name, dataset) -> (model, metadata), optional
        Default ``pdcr_lab.zoo.load``.
    store : CellStore, optional
        Where the cells are saved (and reused from).
    log : callable str -> None
        One line per pair.
    roi_region : callable data -> bool (N_test, H, W), optional
        Where the RoIs may go (:func:`~pdcr_lab.studies.load_view`); default anywhere on the
        ground truth's boundary. A store's key must name it (the RoIs change).

    Returns
    -------
    maps : xarray.Dataset
        The effects schema with dims (model, dataset, image, block_y, block_x), plus ``explained``
        (model, dataset), the ground truth as ``structure_mask`` (dataset, image, y, x), the test
        Dice recorded with each checkpoint in ``model_test_dice`` and the wall time of explaining
        each pair in ``explain_seconds`` (model, dataset).
    skipped : dict (model, dataset) -> why the pair was not explained
    """
    run = run_pairs(models, datasets, _per_pair(settings, device), images=range(settings.images),
                    roi_size=settings.roi_size, roi_region=roi_region, loader=loader, store=store, log=log)
    if not run.cells:
        raise RuntimeError(f"no zoo model could be explained; skipped: {run.missing}")
    reasons = {**run.missing, **run.skipped}
    skipped = {(m, d): reasons[m, d] for m in run.models for d in run.datasets if (m, d) in reasons}
    return _combine(run, settings), skipped
