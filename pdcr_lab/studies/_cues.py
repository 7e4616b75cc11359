"""The cue study: do the strategy labels name the cue a model really relies on?

The ``cues`` dataset (:mod:`pdcr_lab.datasets._cues`) decides its foreground by three redundant cues
that act at different ranges: a local one (edge sharpness and texture of the structure itself), a
global one (an image-wide colour cast setting the brightness level) and a sequential one (the
chain's connection to a source disc). Each can be removed (``absent``) or turned the wrong way
(``contradicted``) per image with the mask unchanged. That gives every trained model a ground truth
independent of PdCR:

1. **Reliance by ablation** (:func:`cue_reliance_study`): for every test image, the drop of the
   model's Dice inside the image's RoI (the outcome PdCR explains, in DSC points) when one cue is
   ablated, for each cue and mode; mean drops with percentile bootstrap intervals over images.
   The RoIs lie on the ground truth's boundary at least :data:`FAR_FROM_SOURCE` of the side from
   the source disc (:func:`roi_region`): near the source a chain has nothing to connect through.
2. **Ground truth** (:func:`cue_truth`): the strategy of the cue with the largest mean drop
   (``local``, ``global``, ``sequential``), ``mixed`` when a second cue's drop is at least
   ``mixed_ratio`` of the largest, ``no reliance`` when no drop reaches ``min_drop``.
3. **Agreement** (:func:`cue_agreement`): each PdCR map of the model is labelled by
   :func:`pdcr_lab.strategies.classify` and compared with the model's ground truth: exact agreement
   (the label equals the truth), and *named* agreement (the truth's strategy is among the map's
   present strategies, or both are mixed; a map without effect names a local truth, since PdCR
   leaves the RoI's own blocks alone); per map and per model (the majority label), with Wilson
   intervals.

:func:`cue_study` runs all three: the maps through :func:`~pdcr_lab.studies.strategies_study` on
``cues`` (so they resume from its cell store), the ablations on every test image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..checks import check_choice, check_float, check_int
from ..defaults import PAPER, WORKING
from ..outcomes import Dice
from ..statistics import bootstrap_interval
from ._loop import CellStore, Loader, pick_rois
from ._strategies import StrategiesSettings, strategies_study

__all__ = ["CUE_SETS", "FAR_FROM_SOURCE", "CueSettings", "TRUTHS", "roi_region", "cue_agreement", "cue_reliance_study", "cue_study", "cue_truth",
           "format_cues"]

#: The cue-controlled datasets: all cues (the model's choice), the global cue alone, the sequential cue alone.
CUE_SETS: tuple[str, ...] = ("cues", "cues_global", "cues_sequential")
#: RoIs lie at least this fraction of the side from the source disc (:func:`roi_region`).
FAR_FROM_SOURCE = 0.3
#: Ground-truth labels: one cue's strategy, several, or none.
TRUTHS: tuple[str, ...] = ("local", "global", "sequential", "mixed", "no reliance")
_CUE_STRATEGY = {"local": "local", "global": "global", "sequential": "sequential"}


@dataclass(frozen=True)
class CueSettings:
    """The design of the cue study (module docstring).

    Parameters
    ----------
    images : int
        Test images explained by PdCR per model.
    roi_size : int
        RoI side in pixels (on the ground truth's boundary, aligned to the bank's 8-px blocks).
    coarse, fine, tau : int, int, float
        PdCR's S, N and tau (the paper's).
    seed : int
        Seed of PdCR's draws and of the bootstrap.
    truth_mode : {"contradicted", "absent"}
        The ablation that defines the ground truth. Contradiction is the default: the training
        images miss cues, so a model learns fallbacks and removing one cue it uses may cost little,
        whereas a cue turned the wrong way shows which cue wins.
    min_drop : float
        Smallest mean RoI Dice drop (DSC points) that counts as reliance.
    mixed_ratio : float
        A second cue whose drop is at least this fraction of the largest makes the truth ``mixed``.
    n_boot, level : int, float
        Bootstrap resamples and coverage of the intervals.

    Examples
    --------
    >>> CueSettings().fine, CueSettings().truth_mode
    (50, 'contradicted')
    """

    images: int = 16
    roi_size: int = WORKING.roi_size
    coarse: int = PAPER.coarse
    fine: int = PAPER.fine
    tau: float = PAPER.tau
    seed: int = 0
    truth_mode: str = "contradicted"
    min_drop: float = 5.0
    mixed_ratio: float = 0.5
    n_boot: int = 2000
    level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("images", "roi_size", "fine", "n_boot"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("coarse", self.coarse, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_choice("truth_mode", self.truth_mode, ("contradicted", "absent"))
        check_float("min_drop", self.min_drop, minimum=0.0)
        if not 0 < check_float("mixed_ratio", self.mixed_ratio) <= 1:
            raise ValueError(f"mixed_ratio={self.mixed_ratio} must lie in (0, 1]")

    def strategies(self) -> StrategiesSettings:
        """The PdCR maps' settings, as the strategies study takes them."""
        return StrategiesSettings(images=self.images, roi_size=self.roi_size, coarse=self.coarse, fine=self.fine,
                                  tau=self.tau, seed=self.seed, n_boot=self.n_boot, level=self.level)


def roi_region(data: Any) -> np.ndarray:
    """Where the cue study places RoIs: the ground truth at least 0.3 of the side from the source disc.

    Parameters
    ----------
    data : SegmentationData
        A cue dataset (its test metadata gives each source).
    """
    from ..datasets import cues as _cues

    test = data.images("test")
    return _cues.far_from_source(data.metadata("test"), int(test.shape[-1]), far=FAR_FROM_SOURCE)


def _roi_dice(model: torch.nn.Module, images: np.ndarray, masks: torch.Tensor, rois: list[tuple[int, ...]],
              batch: int = 16) -> np.ndarray:
    """Dice (DSC points) of the thresholded prediction inside each image's RoI."""
    from ..zoo import predict

    x = torch.as_tensor(images).float() / (255.0 if images.dtype == np.uint8 else 1.0)
    with torch.no_grad():
        pred = (predict(model, x, batch_size=batch) > 0.5).float()
    out = np.empty(len(rois))
    for k, (row, col, h, w) in enumerate(rois):
        roi = torch.zeros((1, *masks.shape[-2:]))
        roi[0, row:row + h, col:col + w] = 1.0
        out[k] = float(Dice()(pred[k:k + 1], masks[k].float(), roi)[0, 0])
    return out


def cue_reliance_study(models: Sequence[str] | None = None, datasets: Sequence[str] = CUE_SETS,
                       settings: CueSettings = CueSettings(), *, images: int | None = None,
                       loader: Loader | None = None, log: Callable[[str], None] = print) -> xr.Dataset:
    """Every model's RoI Dice drop when each cue is ablated, on every test image of the cue sets.

    A cue that a set's test images do not show (the single-cue sets show one) is not ablated: its
    drops are NaN. The cue sets share their geometry, so the test masks and RoIs are the same.

    Parameters
    ----------
    models : sequence of str, optional
        Zoo architectures (default: every one with a checkpoint on the first dataset).
    datasets : sequence of str
        Cue datasets (:data:`CUE_SETS`).
    settings : CueSettings
        RoI size, bootstrap.
    images : int, optional
        Only the first `images` test images that can hold an RoI (default: all of them).
    loader : callable (name, dataset) -> (model, metadata), optional
        Default ``pdcr_lab.zoo.load``; a pair without a checkpoint is left NaN.
    log : callable
        One line per pair.

    Returns
    -------
    xarray.Dataset
        ``roi_dice`` (model, dataset, image): the factual RoI Dice; ``drop`` (model, dataset,
        mode, cue, image); ``drop_mean`` / ``drop_low`` / ``drop_high`` (model, dataset, mode,
        cue); ``dice_whole`` (model, dataset): mean whole-image Dice; the RoIs per image.
    """
    from .. import datasets as data_sets
    from .. import zoo
    from ..datasets import cues as _cues

    names = list(models) if models is not None else zoo.trained(datasets[0])
    load = loader or zoo.load
    modes = ("contradicted", "absent")
    shape = (len(names), len(datasets))
    base = drop = whole = None
    index: list[int] = []
    rois: list[tuple[int, int, int, int]] = []
    for j, dname in enumerate(datasets):
        data = data_sets.load(dname)
        raw = (data.images("test").numpy() * 255.0).round().astype(np.uint8)
        masks, metas = data.masks("test"), data.metadata("test")
        if not index:
            where = masks & torch.as_tensor(roi_region(data))
            picks = pick_rois(where, len(masks) if images is None else images, roi_size=settings.roi_size,
                              block=int(data.bank.block))
            index, rois = [i for i, _ in picks], [roi for _, roi in picks]
            base = np.full((*shape, len(index)), np.nan)
            drop = np.full((*shape, len(modes), len(_cues.CUES), len(index)), np.nan)
            whole = np.full(shape, np.nan)
        raw, masks, metas = raw[index], masks[index], [metas[i] for i in index]
        shown = [c for c in _cues.CUES if all(m["controls"][c] == "present" for m in metas)]
        ablated = {(mode, cue): _cues.ablate_batch(raw, metas, cue, mode) for mode in modes for cue in shown}
        for i, name in enumerate(names):
            try:
                model, _ = load(name, dname)
            except (OSError, ValueError) as exc:
                log(f"{name} on {dname}: not measured ({str(exc).splitlines()[0]})")
                continue
            model.eval()
            base[i, j] = _roi_dice(model, raw, masks, rois)
            for (mode, cue), images in ablated.items():
                drop[i, j, modes.index(mode), _cues.CUES.index(cue)] = base[i, j] - _roi_dice(model, images, masks, rois)
            with torch.no_grad():
                pred = zoo.predict(model, torch.as_tensor(raw).float() / 255.0) > 0.5
            whole[i, j] = float(_cues.dice(pred.numpy(), masks.numpy()).mean())
            log(f"{name} on {dname}: RoI Dice {base[i, j].mean():.1f}; contradicted: "
                + ", ".join(f"{c} {drop[i, j, 0, _cues.CUES.index(c)].mean():.1f}" for c in shown))
    rng = np.random.default_rng(settings.seed)
    ci = np.full((*drop.shape[:-1], 3), np.nan)
    finite = np.isfinite(drop).all(axis=-1)
    if finite.any():
        ci[finite] = bootstrap_interval([drop[finite]], n_boot=settings.n_boot, level=settings.level, rng=rng)
    rows, cols, heights, widths = (np.array([r[k] for r in rois]) for k in range(4))
    dims = ("model", "dataset", "mode", "cue")
    return xr.Dataset(
        {
            "roi_dice": (("model", "dataset", "image"), base,
                         {"units": "DSC points", "long_name": "RoI Dice of the unablated test image"}),
            "drop": ((*dims, "image"), drop,
                     {"units": "DSC points", "long_name": "RoI Dice lost when the cue is ablated (NaN: not shown)"}),
            "drop_mean": (dims, ci[..., 0], {"units": "DSC points"}),
            "drop_low": (dims, ci[..., 1], {"units": "DSC points"}),
            "drop_high": (dims, ci[..., 2], {"units": "DSC points"}),
            "dice_whole": (("model", "dataset"), whole, {"long_name": "mean whole-image Dice on the test split"}),
            "roi_row": ("image", rows), "roi_col": ("image", cols),
            "roi_height": ("image", heights), "roi_width": ("image", widths),
        },
        coords={"model": names, "dataset": list(datasets), "mode": list(modes), "cue": list(_cues.CUES),
                "image": index},
        attrs={"level": settings.level, "n_boot": settings.n_boot, "seed": settings.seed},
    )


def cue_truth(reliance: xr.Dataset, settings: CueSettings = CueSettings()) -> xr.DataArray:
    """Each pair's ground-truth strategy from its mean drops under ``settings.truth_mode``.

    Cues without a measured drop (NaN: not shown) are left out; a pair without any is ``no reliance``.

    Parameters
    ----------
    reliance : xarray.Dataset
        Output of :func:`cue_reliance_study` (``drop_mean`` (model, [dataset,] mode, cue)).
    settings : CueSettings
        ``truth_mode``, ``min_drop``, ``mixed_ratio``.

    Examples
    --------
    >>> drops = xr.Dataset({"drop_mean": (("model", "mode", "cue"), [[[40.0, 2.0, 1.0]], [[30.0, 20.0, 0.0]],
    ...                                                               [[1.0, 2.0, 3.0]], [[np.nan, 9.0, np.nan]]])},
    ...                    coords={"model": ["a", "b", "c", "d"], "mode": ["contradicted"],
    ...                            "cue": ["local", "global", "sequential"]})
    >>> cue_truth(drops).values.tolist()
    ['local', 'mixed', 'no reliance', 'global']
    """
    means = reliance["drop_mean"].sel(mode=settings.truth_mode).transpose(..., "cue")
    cues = [str(c) for c in reliance.cue.values]

    def one(row: np.ndarray) -> str:
        row = np.where(np.isfinite(row), row, -np.inf)
        order = np.argsort(row)[::-1]
        top = row[order[0]]
        if top < settings.min_drop:
            return "no reliance"
        if len(row) > 1 and row[order[1]] >= settings.mixed_ratio * top:
            return "mixed"
        return _CUE_STRATEGY[cues[order[0]]]

    values = means.values
    truth = np.array([one(r) for r in values.reshape(-1, values.shape[-1])], dtype=object).reshape(values.shape[:-1])
    return xr.DataArray(truth.astype(str), dims=means.dims[:-1],
                        coords={d: means[d].values for d in means.dims[:-1]},
                        attrs={"long_name": "the strategy of the cue the model relies on, by ablation",
                               "truth_mode": settings.truth_mode, "min_drop": settings.min_drop,
                               "mixed_ratio": settings.mixed_ratio})


def _named(label: str, present: Mapping[str, bool], truth: str) -> bool:
    """The truth is named by the map: its strategy is present, or both are mixed / without effect.

    A local truth is also named by ``no effect``: PdCR does not perturb the RoI's own blocks, so a
    model that reads nothing beyond them (the local cue lies on the structure itself) has no effect.
    """
    if truth == "local" and label == "no effect":
        return True
    if truth in _CUE_STRATEGY.values():
        return bool(present.get(truth, False)) or label == truth
    if truth == "mixed":
        return label == "mixed" or sum(bool(v) for v in present.values()) >= 2
    return label == "no effect"


def _proportion(hits: np.ndarray, level: float) -> list[float]:
    from ..strategies import wilson_interval

    k, n = int(hits.sum()), int(hits.size)
    lo, hi = wilson_interval(k, n, level=level)
    return [k / n if n else np.nan, lo, hi, n]


def cue_agreement(labelled: xr.Dataset, truth: xr.DataArray, *, level: float = 0.95) -> xr.Dataset:
    """Agreement of the maps' labels with the ablation ground truth, per map, per pair and per truth.

    Parameters
    ----------
    labelled : xarray.Dataset
        Labelled maps (:func:`pdcr_lab.strategies.label_maps`) with dims (model, dataset, image);
        ``label``, ``present`` (..., strategy) and ``explained`` (if there) are used.
    truth : xarray.DataArray
        :func:`cue_truth` (model, dataset).
    level : float
        Coverage of the Wilson intervals.

    Returns
    -------
    xarray.Dataset
        ``majority`` (model, dataset): the most frequent label of the pair's maps; ``exact`` /
        ``named`` (model, dataset, image) and ``pair_exact`` / ``pair_named`` (model, dataset)
        as 0/1 (NaN where not explained); ``agreement`` (subset, kind, unit, stat) with subset =
        all, known (pairs whose truth is a cue, not ``no reliance``: a model that relies on none of
        the controlled cues has no known answer); kind = exact, named; unit = map, pair; stat =
        estimate, lower, upper, n; ``agreement_by_truth`` (truth_label, kind, stat) over the maps of each
        truth. *Exact*: the label is the truth (``no effect`` for ``no reliance``); *named*: the
        truth's strategy is present in the map (``mixed``: two or more present; ``local``: also a
        map without effect).
    """
    models = [str(m) for m in labelled.model.values]
    sets = [str(d) for d in labelled.dataset.values]
    n_img = labelled.sizes["image"]
    strategies = [str(v) for v in labelled.strategy.values]
    exact = np.full((len(models), len(sets), n_img), np.nan)
    named = np.full_like(exact, np.nan)
    majority = np.full((len(models), len(sets)), "", dtype=object)
    pair_exact = np.full((len(models), len(sets)), np.nan)
    pair_named = np.full_like(pair_exact, np.nan)
    truths = np.asarray(truth.sel(model=models, dataset=sets).values).astype(str)
    for i, m in enumerate(models):
        for j, d in enumerate(sets):
            if "explained" in labelled and not bool(labelled["explained"].sel(model=m, dataset=d)):
                continue
            t = truths[i, j]
            labels = [str(v) for v in labelled["label"].sel(model=m, dataset=d).values]
            present = labelled["present"].sel(model=m, dataset=d).transpose("image", "strategy").values
            for k, lab in enumerate(labels):
                exact[i, j, k] = (lab == t) or (t == "no reliance" and lab == "no effect")
                named[i, j, k] = _named(lab, dict(zip(strategies, present[k].tolist(), strict=True)), t)
            values, counts = np.unique(labels, return_counts=True)
            majority[i, j] = str(values[np.argmax(counts)])
            pair_exact[i, j] = (majority[i, j] == t) or (t == "no reliance" and majority[i, j] == "no effect")
            pair_named[i, j] = np.nanmean(named[i, j]) >= 0.5

    def hits(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
        chosen = values[keep]
        return chosen[np.isfinite(chosen)].astype(bool)

    known = truths != "no reliance"
    table = [[[_proportion(hits(per_map, subset), level), _proportion(hits(per_pair, subset), level)]
              for per_map, per_pair in ((exact, pair_exact), (named, pair_named))]
             for subset in (np.ones_like(known), known)]
    by_truth = [[_proportion(hits(per_map, truths == t), level) for per_map in (exact, named)] for t in TRUTHS]
    dims2 = ("model", "dataset")
    return xr.Dataset(
        {
            "truth": (dims2, truths),
            "majority": (dims2, majority.astype(str)),
            "exact": ((*dims2, "image"), exact),
            "named": ((*dims2, "image"), named),
            "pair_exact": (dims2, pair_exact),
            "pair_named": (dims2, pair_named),
            "agreement": (("subset", "kind", "unit", "stat"), np.array(table),
                          {"long_name": "share of maps (or pairs) whose label agrees with the ablation truth"}),
            "agreement_by_truth": (("truth_label", "kind", "stat"), np.array(by_truth),
                                   {"long_name": "share of the maps of each truth whose label agrees with it"}),
        },
        coords={"model": models, "dataset": sets, "image": labelled.image.values, "subset": ["all", "known"],
                "kind": ["exact", "named"], "unit": ["map", "pair"], "stat": ["estimate", "lower", "upper", "n"],
                "truth_label": list(TRUTHS)},
        attrs={"level": level},
    )


def cue_study(models: Sequence[str] | None = None, settings: CueSettings = CueSettings(), *,
              datasets: Sequence[str] = CUE_SETS, device: Any = None, loader: Loader | None = None,
              store: CellStore | None = None, log: Callable[[str], None] = print) -> xr.Dataset:
    """PdCR maps, ablation reliance, ground truth and agreement of the zoo on the cue sets, in one result.

    Parameters
    ----------
    models : sequence of str, optional
        Zoo architectures (default: every one with a ``cues`` checkpoint).
    settings : CueSettings
        The design.
    datasets : sequence of str
        Cue datasets (:data:`CUE_SETS`).
    device : str or torch.device, optional
        Where PdCR runs.
    loader : callable, optional
        Default ``pdcr_lab.zoo.load``.
    store : CellStore, optional
        Cells of the maps (resume).
    log : callable
        Progress lines.

    Returns
    -------
    xarray.Dataset
        The labelled maps (model, dataset, image, ...); the reliance variables prefixed ``cue_``
        over their own image dim ``cue_image`` (``cue_drop`` (model, dataset, mode, cue,
        cue_image), ``cue_drop_mean`` ...); ``cue_truth`` (model, dataset); the agreement
        variables prefixed ``agree_``; attrs record the settings with the prefix ``cue_``.
    """
    from .. import zoo
    from ..strategies import label_maps

    names = list(models) if models is not None else zoo.trained(datasets[0])
    maps, skipped = strategies_study(names, datasets, settings.strategies(), device=device, loader=loader,
                                     store=store, log=log, roi_region=roi_region)
    labelled = label_maps(maps)
    reliance = cue_reliance_study([str(m) for m in labelled.model.values], [str(d) for d in labelled.dataset.values],
                                  settings, loader=loader, log=log)
    truth = cue_truth(reliance, settings)
    agreement = cue_agreement(labelled, truth, level=settings.level)
    reliance = reliance.rename({"image": "cue_image"})
    reliance = reliance.rename({v: f"cue_{v}" for v in reliance.data_vars})
    agreement = agreement.drop_vars("truth").rename({"image": "agree_image", "truth_label": "agree_truth"})
    agreement = agreement.rename({v: f"agree_{v}" for v in agreement.data_vars})
    reliance.attrs, agreement.attrs = {}, {}
    out = labelled.merge(reliance).merge(agreement)
    out["cue_truth"] = truth
    out.attrs.update({f"cue_{k}": v for k, v in asdict(settings).items()})
    out.attrs["cue_skipped"] = "; ".join(f"{m} on {d}: {r}" for (m, d), r in skipped.items())
    return out


def format_cues(result: xr.Dataset, *, command: str = "") -> str:
    """Markdown report of :func:`cue_study`: reliance, truth and labels per pair, and the agreement.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`cue_study`.
    command : str
        The command line that produced it, quoted at the top.
    """
    from ..strategies import LABELS

    a = result.attrs
    level = round(100 * float(a.get("cue_level", 0.95)))

    def ci(values: xr.DataArray) -> str:
        est, lo, hi = (float(values.sel(stat=s)) for s in ("estimate", "lower", "upper"))
        return "-" if not np.isfinite(est) else f"{est:.2f} [{lo:.2f}, {hi:.2f}] (n = {int(values.sel(stat='n'))})"

    lines = [
        "# Do the strategy labels name the cue a model relies on?", "",
        f"Generated by `{command or 'pdcr-lab cues'}`. PdCR (natural 8-px blocks, S = {a.get('coarse')}, "
        f"N = {a.get('fine')}, tau = {a.get('tau')}, seed {a.get('seed')}) on the first {result.sizes['image']} test "
        f"images of each cue set (128 x 128, one {a.get('cue_roi_size')} px RoI on the ground-truth boundary); "
        "labels by `pdcr_lab.strategies.classify`. Ground truth: the cue whose "
        f"*{a.get('cue_truth_mode')}* ablation costs the most RoI Dice over all test images "
        f"(`mixed` when a second costs >= {a.get('cue_mixed_ratio')} of it; `no reliance` below "
        f"{a.get('cue_min_drop')} DSC points). Intervals: {level}% (bootstrap over images for drops, Wilson for "
        "agreement).", "",
        "## Agreement with the ablation ground truth", "",
        "| pairs | unit | exact | named |", "|---|---|---|---|",
    ]
    for subset in ("all", "known"):
        for unit in ("map", "pair"):
            s = result["agree_agreement"].sel(subset=subset, unit=unit)
            lines.append(f"| {subset} | {unit} | {ci(s.sel(kind='exact'))} | {ci(s.sel(kind='named'))} |")
    lines += ["", "`known`: pairs whose truth is one of the cues (or mixed), not `no reliance`. Exact: the label "
              "equals the truth; named: the truth's strategy is among the map's present ones (a map without "
              "effect names a local truth).", "",
              "By truth (maps):", "", "| truth | exact | named |", "|---|---|---|"]
    for t in result["agree_truth"].values:
        s = result["agree_agreement_by_truth"].sel(agree_truth=t)
        if int(s.sel(kind="exact", stat="n")) > 0:
            lines.append(f"| {t} | {ci(s.sel(kind='exact'))} | {ci(s.sel(kind='named'))} |")
    lines += ["",
              "## Reliance by ablation and the maps' labels", "",
              "| model | dataset | test Dice | RoI Dice lost: local | global | sequential | truth | "
              + " | ".join(LABELS) + " |",
              "|---" * (7 + len(LABELS)) + "|"]
    for m in result.model.values:
        for d in result.dataset.values:
            if "explained" in result and not bool(result["explained"].sel(model=m, dataset=d)):
                continue
            drops = []
            for cue in ("local", "global", "sequential"):
                sel = dict(model=m, dataset=d, mode=a.get("cue_truth_mode", "contradicted"), cue=cue)
                est = float(result["cue_drop_mean"].sel(sel))
                lo, hi = float(result["cue_drop_low"].sel(sel)), float(result["cue_drop_high"].sel(sel))
                drops.append("-" if not np.isfinite(est) else f"{est:.1f} [{lo:.1f}, {hi:.1f}]")
            labels = [str(v) for v in result["label"].sel(model=m, dataset=d).values]
            counts = [str(labels.count(lab)) for lab in LABELS]
            lines.append(f"| {m} | {d} | {float(result['cue_dice_whole'].sel(model=m, dataset=d)):.3f} | "
                         + " | ".join(drops) + f" | {result['cue_truth'].sel(model=m, dataset=d).item()} | "
                         + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"
