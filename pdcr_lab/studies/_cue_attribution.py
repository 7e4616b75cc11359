"""Attribution accuracy on the cue tasks: does each method's map point to the cue the model relies on?

The cue study (:func:`~pdcr_lab.studies.cue_study`) gives every (model, cue dataset) pair a ground
truth that does not come from any explainer: the strategy of the cue whose ablation costs the most
RoI Dice. Here every baseline of the faithfulness study explains the *same* test images in the
*same* RoIs (chosen again by the same deterministic rule and checked against the stored boxes), with
the dataset's natural bank and the cue study's seed. Each map is read through its support scores
(``support_sign * map``: larger = supports the RoI more) and written in PdCR's sign convention
(``ate = -support``), then labelled by the same rule, :func:`pdcr_lab.strategies.classify`, and
scored against the truth by :func:`~pdcr_lab.studies.cue_agreement` (exact and named agreement,
Wilson intervals). The rule uses only ratios of masses and the sign of each block, so maps in any
unit (DSC points, gradients, mask weights) are read alike. PdCR's labels are the cue study's own.

**Paired comparison.** On the maps of pairs with a known truth, each method's per-map hits are
compared with PdCR's on the same maps by an exact McNemar test (a two-sided binomial test on the
maps where exactly one of the two names the truth), Holm-adjusted over the methods, per kind of
agreement.

Caveat, stated with the results: the rule's thresholds were set on PdCR maps and a hand-built
family (docs/strategy_family.md), so a method whose maps have another texture (Grad-CAM's smooth
upsampled maps, RISE's mask noise) may be labelled less well for that reason alone; the comparison
asks what each method's map says about the strategy when read by one documented rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from ..faithfulness import support_scores
from ..schema import stack
from ..statistics import holm
from ..strategies import MAP_VARIABLES
from ._cues import FAR_FROM_SOURCE, cue_agreement, roi_region
from ._faithfulness import METHODS, FaithfulnessSettings, Method, study_methods
from ._loop import CellStore, Item, Loader, Pair, grid, reindex_filled, run_pairs

__all__ = ["ATTRIBUTION_METHODS", "cue_attribution", "format_cue_attribution"]

#: The baselines compared with PdCR (the faithfulness study's methods, PdCR itself aside).
ATTRIBUTION_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "pdcr")
_BOX = ("roi_row", "roi_col", "roi_height", "roi_width")


def _as_effects(result: xr.Dataset) -> xr.Dataset:
    """One method's map in PdCR's sign convention (negative = supports the RoI), schema variables only."""
    support = support_scores(result)
    out = result[[v for v in MAP_VARIABLES if v in result]].copy()
    out["ate"] = out["ate"].copy(data=-support)
    out.attrs = {**result.attrs, "support_sign": -1}
    return out


def _per_pair(methods: Mapping[str, Method], seed: int, log: Callable[[str], None]) -> Callable[[Pair], Callable]:
    def setup(pair: Pair) -> Callable[[Item], xr.Dataset]:
        def explain(item: Item) -> xr.Dataset:
            maps, failed = {}, {}
            for label, method in methods.items():
                log(f"{pair.view.name} {pair.model_name} image {item.index}: {label}")
                try:
                    maps[label] = _as_effects(method(pair.model, item.image, roi=item.roi, target=item.target,
                                                     bank=pair.view.bank, seed=seed))
                except (ValueError, TypeError) as exc:  # the method does not apply to this model
                    failed[label] = str(exc)
            if not maps:
                raise RuntimeError(f"no method could explain {pair.model_name} on {pair.view.name}: {failed}")
            ds = reindex_filled(stack(maps, "method"), "method", list(methods))
            return ds.assign(failed=("method", [failed.get(label, "") for label in methods]))

        return explain

    return setup


def _check_boxes(cues: xr.Dataset, maps: xr.Dataset) -> None:
    """The baselines' RoIs must be the cue study's (same rule, same images); anything else is a bug."""
    for d in maps.dataset.values:
        models = [m for m in maps.model.values if bool(cues["explained"].sel(model=m, dataset=d))]
        # each map's box where its method ran (a method that does not apply to a model has filled boxes)
        ran = np.isfinite(maps["ate"].sel(dataset=d, model=models)).any(("block_y", "block_x"))
        for side in _BOX:
            ours = maps[side].sel(dataset=d, model=models)
            theirs = cues[side].sel(dataset=d, model=models).broadcast_like(ours)
            if not bool(((ours == theirs) | ~ran).all()):
                raise ValueError(f"the RoIs ({side}) on {d!r} differ from the cue study's; was it run with other "
                                 "images, RoI size or data?")


def _mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Maps only A names, maps only B names, and the exact two-sided McNemar p (NaN without discordant maps)."""
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep].astype(bool), b[keep].astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return only_a, only_b, np.nan
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def cue_attribution(
    cues: xr.Dataset,
    methods: Mapping[str, Method] | None = None,
    *,
    device: Any = None,
    loader: Loader | None = None,
    store: CellStore | None = None,
    log: Callable[[str], None] = print,
) -> xr.Dataset:
    """Every baseline's maps on the cue study's images, labelled and scored against the ablation truth.

    Parameters
    ----------
    cues : xarray.Dataset
        A :func:`~pdcr_lab.studies.cue_study` result (``data/results/cues.nc``): its models, datasets,
        images, RoIs, structure masks, seed, truth and PdCR labels are used.
    methods : mapping label -> Method, optional
        Default: :data:`ATTRIBUTION_METHODS` with the faithfulness study's budget
        (:class:`~pdcr_lab.studies.FaithfulnessSettings`); labels must not be ``"pdcr"``.
    device : str or torch.device, optional
        Where the explainers run.
    loader : callable (name, dataset) -> (model, metadata), optional
        Default ``pdcr_lab.zoo.load``.
    store : CellStore, optional
        Saves each (model, dataset) cell; with ``reuse`` returns matching stored cells.
    log : callable
        Progress lines.

    Returns
    -------
    xarray.Dataset
        Over ``method`` (``pdcr`` first, then the baselines): ``label`` and ``present`` (method, model,
        dataset, image[, strategy]); ``exact`` / ``named`` per map (NaN where not explained);
        ``accuracy`` (method, subset, kind, stat) with subset all / known and stat estimate, lower,
        upper, n; ``accuracy_by_truth`` (method, truth_label, kind, stat); ``accuracy_balanced``
        (method, kind): the mean of the per-truth agreement over the cue truths; ``vs_pdcr`` (method,
        kind, test) with test = pdcr_only, method_only, p, p_holm (known maps); ``support`` maps
        (method, model, dataset, image, block_y, block_x); ``truth`` (model, dataset); attrs
        ``failures`` (JSON ``"model/dataset/method"`` -> why a method did not apply to a model: its
        maps are NaN and the pair is left out of that method's agreement).
    """
    if methods is None:
        settings = FaithfulnessSettings(methods=ATTRIBUTION_METHODS)
        methods = study_methods(settings, device)
    if "pdcr" in methods:
        raise ValueError("methods must not contain 'pdcr': its labels are the cue study's own")
    required = ("label", "present", "explained", "structure_mask", "cue_truth", *_BOX)
    missing = [v for v in required if v not in cues]
    if missing:
        raise ValueError(f"cues lacks {missing}; expected a cue_study result (data/results/cues.nc)")
    seed = int(cues.attrs.get("cue_seed", cues.attrs.get("seed", 0)))
    models = [str(m) for m in cues.model.values]
    datasets = [str(d) for d in cues.dataset.values]
    pairs = [(m, d) for m in models for d in datasets if bool(cues["explained"].sel(model=m, dataset=d))]
    cells: dict[tuple[str, str], xr.Dataset] = {}
    for d in datasets:  # one run per dataset: only the pairs the cue study explained
        names = [m for m, dd in pairs if dd == d]
        if names:
            run = run_pairs(names, [d], _per_pair(methods, seed, log), images=range(cues.sizes["image"]),
                            roi_size=int(cues.attrs.get("cue_roi_size", 16)), roi_region=roi_region, loader=loader,
                            store=store, log=log)
            cells.update(run.cells)
    maps = grid(cells, models, datasets)
    _check_boxes(cues, maps)
    return _score(cues, maps, list(methods), seed)


def _failures(maps: xr.Dataset) -> dict[str, str]:
    """``"model/dataset/method"`` -> why the method could not explain the model (first image's reason)."""
    if "failed" not in maps:
        return {}
    out = {}
    for m in maps.model.values:
        for d in maps.dataset.values:
            for label in maps.method.values:
                why = [str(v) for v in np.ravel(maps["failed"].sel({"model": m, "dataset": d, "method": label}).values)
                       if str(v)]
                if why:
                    out[f"{m}/{d}/{label}"] = why[0]
    return out


def _balanced(by_truth: np.ndarray, truths: list[str]) -> np.ndarray:
    """(method, kind): the mean over the cue truths (local, global, sequential) that have maps of their agreement."""
    cue_truths = [truths.index(t) for t in ("local", "global", "sequential")]
    chosen = by_truth[:, cue_truths]  # (method, truth, kind, stat)
    rates, counts = chosen[..., 0], chosen[..., 3]
    shown = counts > 0
    n = shown.sum(axis=1)
    total = np.where(shown, rates, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)  # NaN for a method without maps


def _score(cues: xr.Dataset, maps: xr.Dataset, labels: list[str], seed: int) -> xr.Dataset:
    """Label every method's maps, score them against the truth and compare with PdCR."""
    from ..strategies import label_maps

    truth = cues["cue_truth"]
    level = float(cues.attrs.get("cue_level", 0.95))
    explained = cues["explained"].sel(model=maps.model, dataset=maps.dataset)
    per_method = {"pdcr": cue_agreement(cues, truth, level=level)}
    labelled = {"pdcr": cues[["label", "present", "explained"]]}
    for label in labels:
        # a pair counts for a method only where the method explained every image (it may not apply to a model)
        ran = np.isfinite(maps["ate"].sel({"method": label})).any(("block_y", "block_x")).all("image")
        one = maps.sel({"method": label}).drop_vars(["method", "failed"], errors="ignore").assign(
            explained=explained.copy(data=explained.values & ran.transpose(*explained.dims).values),
            structure_mask=cues["structure_mask"])
        one.attrs["method"] = label  # stack made the differing attr a coordinate
        if bool(one["explained"].any()):
            labelled[label] = label_maps(one)[["label", "present", "explained"]]
        else:  # the method applies to none of the models: nothing to label
            labelled[label] = xr.Dataset({"label": xr.full_like(cues["label"], "not explained"),
                                          "present": xr.zeros_like(cues["present"]), "explained": one["explained"]})
        per_method[label] = cue_agreement(labelled[label], truth, level=level)
    order = ["pdcr", *labels]
    known = (truth != "no reliance").values
    tests = np.full((len(order), 2, 4), np.nan)
    for kind_i, kind in enumerate(("exact", "named")):
        ref = per_method["pdcr"][kind].transpose("model", "dataset", "image").values[known]
        for i, label in enumerate(order[1:], start=1):
            other = per_method[label][kind].transpose("model", "dataset", "image").values[known]
            tests[i, kind_i, :3] = _mcnemar(ref, other)
        tests[1:, kind_i, 3] = holm(tests[1:, kind_i, 2])

    def over(name: str, dims: Sequence[str]) -> np.ndarray:
        return np.stack([per_method[m][name].transpose(*dims).values for m in order])

    def labels_of(name: str, dims: Sequence[str]) -> xr.DataArray:
        return xr.concat([labelled[m][name].transpose(*dims) for m in order], dim=xr.DataArray(order, dims="method"),
                         coords="minimal", compat="override", join="outer")

    dims = ("model", "dataset", "image")
    baseline_ate = maps["ate"].transpose("method", *dims, "block_y", "block_x")
    out = xr.Dataset(
        {
            "label": labels_of("label", dims),
            "present": labels_of("present", (*dims, "strategy")),
            "exact": (("method", *dims), over("exact", dims)),
            "named": (("method", *dims), over("named", dims)),
            "accuracy": (("method", "subset", "kind", "stat"), over("agreement", ("subset", "kind", "unit", "stat"))[:, :, :, 0],
                         {"long_name": "share of maps whose label agrees with the ablation truth (Wilson interval)"}),
            "accuracy_by_truth": (("method", "truth_label", "kind", "stat"),
                                  over("agreement_by_truth", ("truth_label", "kind", "stat")),
                                  {"long_name": "share of the maps of each truth whose label agrees with it"}),
            "accuracy_balanced": (("method", "kind"), _balanced(over("agreement_by_truth", ("truth_label", "kind", "stat")),
                                                                  list(per_method["pdcr"].truth_label.values)),
                                  {"long_name": "mean over the single-cue truths with maps of the per-truth agreement "
                                                "(every truth counts alike; the random map's level is the chance level)"}),
            "vs_pdcr": (("method", "kind", "test"), tests,
                        {"long_name": "exact McNemar test of PdCR against the method on the maps of known truth"}),
            "support": (("method", *dims, "block_y", "block_x"),
                        np.concatenate([-cues["ate"].transpose(*dims, "block_y", "block_x").values[None],
                                        -baseline_ate.sel({"method": labels}).values]),
                        {"long_name": "support scores (larger = supports the RoI more)"}),
            "truth": truth,
        },
        coords={"method": order, "model": maps.model.values, "dataset": maps.dataset.values,
                "image": cues.image.values, "strategy": cues.strategy.values, "subset": ["all", "known"],
                "kind": ["exact", "named"], "stat": ["estimate", "lower", "upper", "n"],
                "truth_label": per_method["pdcr"].truth_label.values,
                "test": ["pdcr_only", "method_only", "p", "p_holm"]},
        attrs={"seed": seed, "level": level, "failures": json.dumps(_failures(maps)), "roi_region": f"far_from_source {FAR_FROM_SOURCE}",
               "pdcr_fine": int(cues.attrs.get("cue_fine", cues.attrs.get("fine", 0))),
               "protocol": __doc__.split("\n\n")[1].replace("\n", " ")},
    )
    return out


def format_cue_attribution(result: xr.Dataset, *, command: str = "") -> str:
    """Markdown report of :func:`cue_attribution`: accuracy per method and truth, and the tests against PdCR.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`cue_attribution`.
    command : str
        The command line that produced it, quoted at the top.
    """
    level = round(100 * float(result.attrs.get("level", 0.95)))

    def ci(values: xr.DataArray) -> str:
        est, lo, hi, n = (float(values.sel(stat=s)) for s in ("estimate", "lower", "upper", "n"))
        return "-" if not np.isfinite(est) else f"{est:.2f} [{lo:.2f}, {hi:.2f}] (n = {int(n)})"

    lines = [
        "# Attribution accuracy on the cue tasks", "",
        f"Generated by `{command or 'pdcr-lab cue-attribution'}`. Each method explains the cue study's test images "
        f"in its RoIs (seed {result.attrs.get('seed')}; PdCR at N = {result.attrs.get('pdcr_fine')}); every map is "
        "labelled by `pdcr_lab.strategies.classify` from its support scores and compared with the ablation ground "
        f"truth (`docs/cues_table.md`). Intervals: {level}% Wilson. Exact: the label is the truth; named: the "
        "truth's strategy is present in the map; balanced: the mean of the named rates of the local, global and "
        "sequential truths (each truth counts alike; the random map shows the chance level). Tests: exact McNemar "
        "against PdCR on the maps of known truth, Holm over the methods.", "",
        "| method | exact (known) | named (known) | named, balanced over truths | named: PdCR only / method only | "
        "p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for m in result.method.values:
        acc = result["accuracy"].sel({"method": m, "subset": "known"})
        t = result["vs_pdcr"].sel({"method": m, "kind": "named"})
        test = "-" if m == "pdcr" else f"{int(t.sel(test='pdcr_only'))} / {int(t.sel(test='method_only'))}"
        p = float(t.sel(test="p_holm"))
        balanced = float(result["accuracy_balanced"].sel({"method": m, "kind": "named"}))
        lines.append(f"| {m} | {ci(acc.sel(kind='exact'))} | {ci(acc.sel(kind='named'))} | {balanced:.2f} | {test} | "
                     + ("-" if not np.isfinite(p) else f"{p:.2g}") + " |")
    lines += ["", "Named agreement by truth (maps):", "",
              "| method | " + " | ".join(str(t) for t in result.truth_label.values) + " |",
              "|---" * (1 + result.sizes["truth_label"]) + "|"]
    for m in result.method.values:
        row = result["accuracy_by_truth"].sel({"method": m, "kind": "named"})
        lines.append(f"| {m} | " + " | ".join(ci(row.sel(truth_label=t)) for t in result.truth_label.values) + " |")
    return "\n".join(lines) + "\n"
