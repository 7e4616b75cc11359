"""The faithfulness study: every method on every zoo model and embedded dataset, one result.

Protocol *(ours)*: for each dataset (default ``lesions``, ``vessels``; the shipped study adds
``brain``) the test images at the fixed indices ``images`` (default 0, 1; the shipped study 0 to
15) are explained in a ``roi_size`` x ``roi_size`` RoI on the ground truth's boundary
(:func:`pdcr_lab.rois.boundary_roi`, the block of the dataset's bank), with the ground truth as the
outcome's reference. Every method gets the same image, RoI, target, natural bank (the
dataset's) and seed. Each map is scored by :func:`~pdcr_lab.faithfulness.deletion_insertion` under
the ``natural``, ``zero`` and ``blur`` policies with a random ranking as control, and (on the first
``sanity_images`` images) by the randomisation check. Summaries are means over images with a 95%
percentile bootstrap interval (``n_boot`` resamples of the images, seeded).

The methods are entries of the explainer registry (:func:`pdcr_lab.explainers.get_explainer`): each
brings its own support sign and defaults; the study adds only its budget options (PdCR's draws,
RISE's masks, MiSuRe's steps) and calls them through :class:`Method`.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_float, check_int
from ..defaults import PAPER, WORKING
from ..explainers import get_explainer
from ..faithfulness import CURVES, POLICIES, deletion_insertion, randomization_check, support_scores
from ..schema import stack
from ..strategies import MAP_VARIABLES
from ._loop import CellStore, Item, Loader, Pair, PairRun, reindex_filled, run_pairs

__all__ = ["FaithfulnessSettings", "METHODS", "Method", "study_methods", "faithfulness_study"]

#: The study's methods: registry names, compared in this order (``random`` is the control).
METHODS: tuple[str, ...] = ("pdcr", "occlusion_zero", "occlusion_blur", "gradcam", "gradcam_signed", "misure", "rise",
                            "random")


@dataclass(frozen=True)
class FaithfulnessSettings:
    """The faithfulness study's protocol and budget (module docstring).

    Parameters
    ----------
    images : tuple of int
        Test-image indices per dataset.
    roi_size : int
        Side of the boundary RoI in pixels (:data:`~pdcr_lab.defaults.WORKING`).
    methods : tuple of str
        Registry names of the compared methods (:data:`METHODS`).
    coarse : int
        PdCR's S (the paper's).
    fine : int
        PdCR's N. The study's own value, 5 (paper: 50; working maps: 10): eight methods, every zoo
        model and the randomisation check share a 2-core CPU budget.
    rise_masks, misure_steps : int
        RISE's masks and MiSuRe's optimisation steps (CPU budget; their own defaults are larger).
    policies : tuple of str
        Replacement policies of the deletion/insertion curves.
    steps : int or None
        Points per curve (None: every block).
    sanity_images : int
        The randomisation check runs on this many of the images.
    planted_images : int
        Images per planted-cause task (0: no planted benchmark).
    min_images_per_s : float
        Skip models whose recorded CPU throughput (the zoo manifest's ``images_per_s``) is lower.
    seed : int
        Shared by every method, the natural draws, the tie-breaking and the bootstrap.
    n_boot : int
        Bootstrap resamples of the summary.

    Examples
    --------
    >>> s = FaithfulnessSettings(fine=2)
    >>> s.method_options()["pdcr"], s.method_options()["rise"]
    ({'coarse': 3, 'fine': 2}, {'n_masks': 300})
    """

    images: tuple[int, ...] = (0, 1)
    roi_size: int = WORKING.roi_size
    methods: tuple[str, ...] = METHODS
    coarse: int = PAPER.coarse
    fine: int = 5
    rise_masks: int = 300
    misure_steps: int = 60
    policies: tuple[str, ...] = POLICIES
    steps: int | None = 7
    sanity_images: int = 1
    planted_images: int = 3
    min_images_per_s: float = 0.0
    seed: int = WORKING.seed
    n_boot: int = 2000

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(check_int("images", i, minimum=0) for i in self.images))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "policies", tuple(self.policies))
        for name in ("roi_size", "fine", "rise_masks", "misure_steps", "n_boot"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("coarse", "sanity_images", "planted_images", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        if self.steps is not None:
            check_int("steps", self.steps, minimum=2)
        check_float("min_images_per_s", self.min_images_per_s, minimum=0.0)
        if not self.images or not self.methods:
            raise ValueError(f"images={self.images} and methods={self.methods} must not be empty")

    def method_options(self) -> dict[str, dict[str, Any]]:
        """The study's budget options by registry name (other methods run with their registry defaults)."""
        return {"pdcr": {"coarse": self.coarse, "fine": self.fine}, "rise": {"n_masks": self.rise_masks},
                "misure": {"steps": self.misure_steps}}

    def cell_key(self) -> dict[str, Any]:
        """What a stored cell depends on (the summary's `n_boot` and the planted images do not)."""
        skip = ("n_boot", "planted_images", "min_images_per_s")
        return {"study": "faithfulness", **{k: v for k, v in asdict(self).items() if k not in skip}}


@dataclass(frozen=True)
class Method:
    """A registered explainer with the study's options, called as ``f(model, image, *, roi, target, bank, seed)``.

    The bank is passed to explainers that take one (PdCR, occlusion, RISE, MiSuRe, random) and its
    block to every explainer; the sign convention and defaults come from the registry entry.

    Parameters
    ----------
    name : str
        Registry name (:func:`pdcr_lab.explainers.list_explainers`) or import path.
    options : mapping
        Keyword options added to the entry's defaults.
    device : str or torch.device, optional
        Where the explainer runs.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid())
    >>> ds = Method("occlusion_blur")(net, torch.rand(1, 16, 16), roi=(4, 4, 4, 4), seed=0, block=4)
    >>> ds.attrs["method"], ds.attrs["support_sign"]
    ('occlusion_blur', -1)
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    device: Any = None

    def __call__(self, model: Any, image: Any, *, roi: Any, target: Any = None, bank: Any = None, seed: int = 0,
                 **more: Any) -> xr.Dataset:
        """Explain one image with the entry's defaults, the study's options and `more`.

        Parameters
        ----------
        model, image, roi, target, seed
            As in :class:`pdcr_lab.explainers.Explainer`.
        bank : PatchBank, optional
            The natural bank; also fixes the block of the map.
        **more
            Further options of the explainer (they override the study's).
        """
        spec = get_explainer(self.name)
        extra: dict[str, Any] = {}
        if bank is not None:
            extra["block"] = int(bank.block)
            if "bank" in inspect.signature(spec.func).parameters:
                extra["bank"] = bank
        options = {**self.options, **extra, **more}
        return spec.explain(model, image, roi=roi, target=target, seed=seed, device=self.device, **options)


def study_methods(settings: FaithfulnessSettings, device: Any = None) -> dict[str, Method]:
    """The study's methods by label: each registry name of `settings` bound to its budget options.

    Parameters
    ----------
    settings : FaithfulnessSettings
        The protocol (methods and budget).
    device : str or torch.device, optional
        Where the explainers run.

    Examples
    --------
    >>> methods = study_methods(FaithfulnessSettings(methods=("pdcr", "gradcam"), fine=2))
    >>> {label: dict(m.options) for label, m in methods.items()}
    {'pdcr': {'coarse': 3, 'fine': 2}, 'gradcam': {}}
    """
    options = settings.method_options()
    return {name: Method(name, options.get(name, {}), device) for name in settings.methods}


def _explain_all(pair: Pair, item: Item, methods: Mapping[str, Method], seed: int, say: Callable[[str], None],
                 ) -> tuple[dict[str, xr.Dataset], dict[str, float], dict[str, str]]:
    """Every method's map of one image; a method that does not apply to the model is left out, with why."""
    results, seconds, failed = {}, {}, {}
    for label, method in methods.items():
        say(f"{pair.view.name} {pair.model_name} image {item.index}: {label}")
        start = time.perf_counter()
        try:
            results[label] = method(pair.model, item.image, roi=item.roi, target=item.target, bank=pair.view.bank,
                                    seed=seed)
        except (ValueError, TypeError) as exc:  # the method does not apply to this model
            failed[label] = str(exc)
            continue
        seconds[label] = time.perf_counter() - start
    if not results:
        raise RuntimeError(f"no method could explain {pair.model_name} on {pair.view.name}: {failed}")
    return results, seconds, failed


def _analyse(pair: Pair, item: Item, methods: Mapping[str, Method], settings: FaithfulnessSettings,
             say: Callable[[str], None]) -> xr.Dataset:
    """One image: the maps, their curves' areas, their explaining time and (sanity images) the randomisation check.

    The result is the effects schema along ``method`` (every label; a failed method is filled), with
    the analysis as variables on the stack dims: ``support`` (support scores on the grid),
    ``auc_<curve>_<policy>``, ``seconds``, ``spearman``, ``sanity_constant``, ``failed`` (why a method
    did not apply, "" otherwise) (method) and the factual outcome of the curves ``curve_m0``.
    """
    results, seconds, failed = _explain_all(pair, item, methods, settings.seed, say)
    say(f"{pair.view.name} {pair.model_name} image {item.index}: deletion/insertion")
    curves = deletion_insertion(pair.model, item.image, results, target=item.target, policies=settings.policies,
                                bank=pair.view.bank, steps=settings.steps, random_control=False, seed=settings.seed)
    labels = list(results)
    # A cell keeps the schema's variables of each map; method-specific pixel-level extras are dropped.
    ds = stack({k: results[k][[v for v in MAP_VARIABLES if v in results[k]]] for k in labels}, "method")
    ds["support"] = (("method", "block_y", "block_x"), np.stack([support_scores(results[k]) for k in labels]))
    for curve in CURVES:
        for policy in settings.policies:
            values = curves["auc"].sel({"curve": curve, "policy": policy, "method": labels}).values
            ds[f"auc_{curve}_{policy}"] = ("method", np.asarray(values, dtype=np.float64))
    ds["seconds"] = ("method", np.array([seconds[k] for k in labels]))
    ds["curve_m0"] = ((), float(curves["m0"]))
    rho, flat = np.full(len(labels), np.nan), np.full(len(labels), np.nan)
    if item.position < settings.sanity_images:
        for k, label in enumerate(labels):
            say(f"{pair.view.name} {pair.model_name} image {item.index}: randomisation check of {label}")
            check = randomization_check(methods[label], pair.model, item.image, roi=item.roi, target=item.target,
                                        bank=pair.view.bank, seed=settings.seed)
            rho[k], flat[k] = float(check["spearman"]), float(check["constant_after"])
    ds["spearman"], ds["sanity_constant"] = ("method", rho), ("method", flat)
    ds = reindex_filled(ds, "method", list(methods))
    return ds.assign(failed=("method", [failed.get(label, "") for label in methods]))


def _assemble(run: PairRun, labels: list[str], settings: FaithfulnessSettings) -> dict[str, Any]:
    """The result's arrays from the cells: (model, dataset, image, method, ...) with NaN where not run."""
    present = run.present()
    n_images = len(settings.images)
    shape = (len(present), len(run.datasets), n_images)
    out = {
        "auc": np.full((*shape, len(labels), len(settings.policies), len(CURVES)), np.nan),
        "seconds": np.full((*shape, len(labels)), np.nan),
        "forwards": np.full((*shape, len(labels)), -1, dtype=np.int64),
        "m0": np.full(shape, np.nan),
        "spearman": np.full((len(present), len(run.datasets), len(labels), max(settings.sanity_images, 1)), np.nan),
        "constant": np.full((len(present), len(run.datasets), len(labels), max(settings.sanity_images, 1)), np.nan),
        "maps": None,
    }
    for (name, dname), cell in run.cells.items():
        a, b = present.index(name), run.datasets.index(dname)
        cell = cell.transpose("image", "method", ...)
        ran = np.isfinite(cell["seconds"].values)
        for c, curve in enumerate(CURVES):
            for p, policy in enumerate(settings.policies):
                out["auc"][a, b, ..., p, c] = cell[f"auc_{curve}_{policy}"].values
        out["seconds"][a, b] = cell["seconds"].values
        out["forwards"][a, b] = np.where(ran, cell["forwards"].values, -1)
        out["m0"][a, b] = cell["curve_m0"].values
        checked = min(settings.sanity_images, n_images)
        out["spearman"][a, b, :, :checked] = cell["spearman"].values[:checked].T
        out["constant"][a, b, :, :checked] = cell["sanity_constant"].values[:checked].T
        if out["maps"] is None:
            out["maps"] = np.full((*shape, len(labels), *cell["support"].shape[-2:]), np.nan)
        out["maps"][a, b] = np.where(ran[..., None, None], cell["support"].values, np.nan)
    return out


def _failures(run: PairRun) -> dict[str, str]:
    """``"model/dataset/method"`` -> why the method did not apply (read from the cells, stored ones too)."""
    failures = {}
    for (name, dname), cell in run.cells.items():
        for label in cell["method"].values:
            why = [str(v) for v in np.ravel(cell["failed"].sel({"method": label}).values) if str(v)]
            if why:
                failures[f"{name}/{dname}/{label}"] = why[0]
    return failures


def _result(run: PairRun, settings: FaithfulnessSettings, seconds: float) -> xr.Dataset:
    labels = list(settings.methods)
    present = run.present()
    arrays = _assemble(run, labels, settings)
    maps = arrays["maps"] if arrays["maps"] is not None else np.zeros((len(present), len(run.datasets),
                                                                       len(settings.images), len(labels), 0, 0))
    dims_i = ("model", "dataset", "image")
    spearman, constant = arrays["spearman"], arrays["constant"]
    checked = np.isfinite(spearman)
    counts = np.maximum(checked.sum(axis=-1), 1)
    spearman_mean = np.where(checked.any(axis=-1), np.where(checked, spearman, 0).sum(axis=-1) / counts, np.nan)
    low = checked & (np.abs(np.nan_to_num(spearman, nan=1.0)) < 0.5)
    passed = np.where(checked.any(axis=-1), low.sum(axis=-1) / counts, np.nan)
    roi_box = np.array([[item.roi for item in run.views[d].items] for d in run.datasets], dtype=np.int64)
    return xr.Dataset(
        {
            "auc": ((*dims_i, "method", "policy", "curve"), arrays["auc"],
                    {"long_name": "normalised AUC of the RoI outcome (deletion: lower is better; insertion: higher)"}),
            "seconds": ((*dims_i, "method"), arrays["seconds"],
                        {"long_name": "wall time of the explanation", "units": "s"}),
            "forwards": ((*dims_i, "method"), arrays["forwards"], {"long_name": "forward passes of the explanation"}),
            "m0": (dims_i, arrays["m0"], {"long_name": "factual outcome M0", "units": "DSC points"}),
            "ate": ((*dims_i, "method", "block_y", "block_x"), maps,
                    {"long_name": "support score (support_sign * map): larger = supports the RoI more"}),
            "spearman": (("model", "dataset", "method"), spearman_mean,
                         {"long_name": "Spearman correlation of the map before/after weight randomisation"}),
            "sanity_passed": (("model", "dataset", "method"), passed,
                              {"long_name": "fraction of checked images with |spearman| < 0.5"}),
            "sanity_constant": (("model", "dataset", "method"),
                                np.where(checked.any(axis=-1), np.nan_to_num(constant).sum(axis=-1) / counts, np.nan),
                                {"long_name": "fraction of checked images whose randomised-model map is constant"}),
            "roi_box": (("dataset", "image", "side"), roi_box),
        },
        coords={"model": present, "dataset": list(run.datasets), "image": list(settings.images), "method": labels,
                "policy": list(settings.policies), "curve": list(CURVES), "side": ["row", "col", "height", "width"],
                "block_y": np.arange(maps.shape[-2]), "block_x": np.arange(maps.shape[-1])},
        attrs={"seed": settings.seed, "steps": "all" if settings.steps is None else int(settings.steps),
               "sanity_images": settings.sanity_images, "roi_size": settings.roi_size,
               "missing": json.dumps([f"{m}/{d}" for m, d in run.missing]),
               "skipped": json.dumps([f"{m}/{d} ({why})" for (m, d), why in run.skipped.items()]),
               "failures": json.dumps(_failures(run)),
               "wall_seconds": round(seconds, 1),
               # a resumed run reuses cells: their own compute time is the cost of the study
               "cell_seconds": round(float(np.nansum([f.get("seconds", np.nan) for f in run.facts.values()])), 1),
               "protocol": __doc__.split("\n\n", 1)[1].split("\n\n")[0].strip()},
    )


def faithfulness_study(
    models: Sequence[str] | None = None,
    datasets: Sequence[str] = ("lesions", "vessels"),
    settings: FaithfulnessSettings = FaithfulnessSettings(),
    *,
    methods: Mapping[str, Method] | None = None,
    device: Any = None,
    loader: Loader | None = None,
    store: CellStore | None = None,
    progress: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Run the comparison; returns one xarray Dataset (see the module notes for the protocol).

    Parameters
    ----------
    models : sequence of str, optional
        Zoo models; None: ``pdcr_lab.zoo.list()``. Pairs without a checkpoint are skipped and
        listed in ``attrs["missing"]``.
    datasets : sequence of str
        Embedded dataset names.
    settings : FaithfulnessSettings
        Images, methods, budget, curves, sanity images, speed threshold and seed.
    methods : mapping label -> Method, optional
        Default :func:`study_methods` of `settings`; the labels name the ``method`` coordinate.
    device : str or torch.device, optional
        Where the explainers and curves run.
    loader : callable (name, dataset) -> (model, metadata), optional
        Default ``pdcr_lab.zoo.load``.
    store : CellStore, optional
        Saves each (model, dataset) cell; with ``reuse`` reuses cells with the same settings.
    progress : callable str -> None, optional
        Progress lines.

    Returns
    -------
    xarray.Dataset
        ``auc`` (model, dataset, image, method, policy, curve), ``seconds`` and ``forwards`` (model,
        dataset, image, method), ``m0`` (model, dataset, image), ``ate`` support scores (model,
        dataset, image, method, block_y, block_x), ``spearman``, ``sanity_passed`` and
        ``sanity_constant`` (model, dataset, method; over the checked images), ``roi_box``
        (dataset, image, side); attrs ``missing``, ``skipped`` (too slow), ``failures`` (JSON).
    """
    methods = dict(methods) if methods is not None else study_methods(settings, device)
    if list(methods) != list(settings.methods):
        settings = FaithfulnessSettings(**{**asdict(settings), "methods": tuple(methods)})
    say = progress or (lambda _msg: None)

    def accept(meta: Mapping[str, Any]) -> str | None:
        speed = meta.get("images_per_s")
        if speed is not None and float(speed) < settings.min_images_per_s:
            return f"{float(speed):.1f} images/s"
        return None

    def per_pair(pair: Pair) -> Callable[[Item], xr.Dataset]:
        return lambda item: _analyse(pair, item, methods, settings, say)

    start = time.perf_counter()
    run = run_pairs(models, datasets, per_pair, images=settings.images, roi_size=settings.roi_size, loader=loader,
                    accept=accept, store=store, log=say)
    return _result(run, settings, time.perf_counter() - start)
