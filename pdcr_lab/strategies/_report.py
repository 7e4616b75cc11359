"""Labels and statistics of many maps: the zoo's perceptual strategies, summarised and compared.

The study that explains the zoo on the embedded datasets is :func:`pdcr_lab.studies.strategies_study`
(``pdcr-lab strategies``); this module reads its maps:

* :func:`label_maps`: :func:`~pdcr_lab.strategies.classify` over a (model, dataset, image) stack,
  each dataset with its ground truth as the structure mask; pairs that were not explained are
  labelled ``"not explained"``.
* :func:`summarize`: images are the sampling unit. For every (model, dataset), strategy shares
  (fraction of maps with each label) and descriptor means come with percentile bootstrap intervals
  over images (:func:`pdcr_lab.statistics.bootstrap_interval`, i.e. ``scipy.stats.bootstrap``,
  `n_boot` resamples, seeded). The shift between datasets per architecture is the total variation
  distance of the label distributions, TVD = 1/2 sum_L |p_second(L) - p_first(L)|, and the
  differences (second - first) of the descriptor means, with intervals from resampling each
  dataset's images independently.
* :func:`format_table`: the Markdown report (settings, shares, descriptors, shift).

Maps of volumes (grid (block_z, block_y, block_x), RoI box with ``roi_z``/``roi_depth``, structure
masks over (z, y, x)) go through the same functions: the labels and descriptors are defined in 3-D
(:mod:`pdcr_lab.strategies._descriptors`, :mod:`pdcr_lab.strategies._classify`), and the statistics
only see one label and one value per map.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import xarray as xr

from ..statistics import bootstrap_interval
from ._classify import LABELS, THRESHOLDS, StrategyThresholds, classify

__all__ = [
    "MAP_VARIABLES",
    "SUMMARY_DESCRIPTORS",
    "SHIFT_DESCRIPTORS",
    "label_maps",
    "summarize",
    "format_table",
]

#: Descriptors summarised in the table (mean over maps; NaN maps without effect are skipped).
SUMMARY_DESCRIPTORS: tuple[str, ...] = (
    "d50", "near_share", "n_eff_fraction", "anisotropy", "balance", "structure_share", "path_mass",
)
#: Descriptors whose between-dataset difference is reported.
SHIFT_DESCRIPTORS: tuple[str, ...] = ("d50", "near_share", "structure_share")
#: The effects variables of the schema that labelled maps carry (everything else is derived).
MAP_VARIABLES: tuple[str, ...] = (
    "ate", "ate_raw", "stderr", "n_draws", "screened", "roi_block", "m0", "forwards", "roi_mask",
    "roi_row", "roi_col", "roi_height", "roi_width", "roi_z", "roi_depth",
)


# -- labels ---------------------------------------------------------------------------------------
def label_maps(maps: xr.Dataset, thresholds: StrategyThresholds = THRESHOLDS) -> xr.Dataset:
    """`maps` (dims model, dataset, image) with the output of :func:`classify` added.

    Every dataset is labelled over its explained models with its ``structure_mask``; pairs that
    were not explained get the label ``"not explained"`` and NaN descriptors. Labelling a result
    again replaces its earlier descriptors and labels.

    Parameters
    ----------
    maps : xarray.Dataset
        Effects with dims (model, dataset, image[, roi], [block_z,] block_y, block_x), optionally
        with ``explained`` (model, dataset) and ``structure_mask`` (dataset, image, [z,] y, x),
        e.g. from :func:`pdcr_lab.studies.strategies_study`.
    thresholds : StrategyThresholds
        The decision rules of :func:`classify`.
    """
    explained = maps["explained"] if "explained" in maps else xr.ones_like(maps["m0"].isel(image=0), dtype=bool)
    effects = maps[[v for v in maps.data_vars if v in MAP_VARIABLES]]
    parts = []
    for d in maps.dataset.values:
        present = [m for m in maps.model.values if bool(explained.sel(model=m, dataset=d))]
        structure = maps["structure_mask"].sel(dataset=d) if "structure_mask" in maps else None
        if not present:
            continue
        sub = effects.sel(dataset=d, model=present)
        part = classify(sub.drop_vars("dataset"), structure, thresholds=thresholds)
        parts.append(part.reindex(model=maps.model.values).expand_dims(dataset=[d]))
    labels = xr.concat(parts, dim="dataset", join="outer", coords="minimal", compat="override",
                       combine_attrs="override")
    labels = labels.reindex(dataset=maps.dataset.values)
    labels["label"] = labels["label"].copy(data=np.where(labels["label"].isnull(), "not explained",
                                                          labels["label"].values).astype(str))
    labels["is_path"] = labels["is_path"].fillna(False).astype(bool)
    threshold_attrs = {k: v for k, v in labels.attrs.items() if k.startswith("threshold_")}
    labels.attrs = {}
    # A relabelled result replaces its earlier descriptors and labels instead of keeping them.
    stale = [v for v in (*labels.data_vars, "ring", "strategy") if v in maps.variables]
    out = maps.drop_vars(stale).merge(labels, compat="override")
    out.attrs = {**maps.attrs, **threshold_attrs}
    return out


# -- statistics -------------------------------------------------------------------------------------
def _per_image(values: xr.DataArray) -> np.ndarray:
    """(model, dataset, image) array: a mean over any other stack dim (e.g. several RoIs per image)."""
    extra = [d for d in values.dims if d not in ("model", "dataset", "image")]
    if extra:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # images whose maps all lack an effect
            values = values.mean(extra, skipna=True)
    return np.asarray(values.transpose("model", "dataset", "image"), dtype=float)


def _tvd(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
    """Total variation distance of two label distributions; samples are (label, image) one-hot arrays."""
    return 0.5 * np.abs(np.mean(second, axis=axis) - np.mean(first, axis=axis)).sum(axis=0)


def _difference(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(second, axis=axis) - np.mean(first, axis=axis)


def _finite(values: np.ndarray) -> np.ndarray:
    """The images (last axis) with a value: every entry finite."""
    keep = np.isfinite(values).all(axis=tuple(range(values.ndim - 1)))
    return values[..., keep]


def summarize(result: xr.Dataset, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> xr.Dataset:
    """Strategy shares, descriptor means and the shift between datasets, with bootstrap intervals.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`label_maps` with dims (model, dataset, image[, roi]).
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling (one generator for the whole summary); recorded in the attrs.
    level : float
        Coverage of the intervals.

    Returns
    -------
    xarray.Dataset over ``stat`` = (estimate, lower, upper):
        ``share`` (model, dataset, label); one variable per :data:`SUMMARY_DESCRIPTORS`
        (model, dataset); ``n_maps`` (model, dataset); ``tvd`` (model) and ``delta_<descriptor>``
        (model) when there are exactly two datasets (second minus first).
    """
    for dim in ("model", "dataset", "image"):
        if dim not in result.dims:
            raise ValueError(f"summarize needs a {dim!r} dim in the result, got dims {tuple(result.dims)}")
    rng = np.random.default_rng(seed)
    n_models, n_sets = result.sizes["model"], result.sizes["dataset"]

    def interval(samples: list[np.ndarray], statistic: Callable[..., Any] | None = None) -> np.ndarray:
        extra = {"statistic": statistic} if statistic is not None else {}
        return bootstrap_interval([_finite(s) for s in samples], n_boot=n_boot, level=level, rng=rng, **extra)

    def dims(*names: str) -> tuple[str, ...]:
        return (*names, "stat")

    out = xr.Dataset(coords={"model": result.model.values, "dataset": result.dataset.values,
                             "label": list(LABELS), "stat": ["estimate", "lower", "upper"]})
    labels = result["label"]
    valid = labels.isin(list(LABELS))  # "not explained" pairs count as missing, not as a label
    # (model, dataset, label, image): the label axis leads each sample, as bootstrap_interval requires.
    onehot = np.stack([_per_image((labels == lab).astype(float).where(valid)) for lab in LABELS], axis=2)
    share = np.array([[interval([onehot[m, d]]) for d in range(n_sets)] for m in range(n_models)])
    out["share"] = (dims("model", "dataset", "label"), share, {"long_name": "fraction of maps with each label"})
    per_map = [d for d in labels.dims if d not in ("model", "dataset")]
    out["n_maps"] = valid.sum(per_map).transpose("model", "dataset").drop_vars(
        [c for c in labels.coords if c not in ("model", "dataset")], errors="ignore")
    values = {name: _per_image(result[name]) for name in SUMMARY_DESCRIPTORS}
    for name in SUMMARY_DESCRIPTORS:
        cells = np.array([[interval([values[name][m, d]]) for d in range(n_sets)] for m in range(n_models)])
        out[name] = (dims("model", "dataset"), cells, {"long_name": result[name].attrs.get("long_name", name)})
    if n_sets == 2:
        first, second = (str(v) for v in result.dataset.values)
        tvd = np.array([interval([onehot[m, 0], onehot[m, 1]], _tvd) for m in range(n_models)])
        out["tvd"] = (dims("model"), tvd,
                      {"long_name": f"total variation distance of the label distributions, {second} vs {first}"})
        for name in SHIFT_DESCRIPTORS:
            delta = np.array([interval([values[name][m, 0], values[name][m, 1]], _difference)
                              for m in range(n_models)])
            out[f"delta_{name}"] = (dims("model"), delta, {"long_name": f"{name}: {second} minus {first}"})
    out.attrs = {"n_boot": int(n_boot), "seed": int(seed), "level": float(level), "unit": "image"}
    return out


# -- the table --------------------------------------------------------------------------------------
def _cell(values: xr.DataArray, digits: int = 2) -> str:
    est, lo, hi = (float(values.sel(stat=s)) for s in ("estimate", "lower", "upper"))
    if not np.isfinite(est):
        return "-"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _header(summary: xr.Dataset, result: xr.Dataset, command: str, seconds: float | None) -> str:
    a = result.attrs
    n, side = result.sizes["image"], a.get("report_roi_size")
    volume = "block_z" in result.dims
    if volume:  # the block's sides and the RoI of a volume's maps
        sides = json.loads(a["block_shape"]) if "block_shape" in a else [a.get("block")] * 3
        blocks, box = f"blocks of {' x '.join(str(v) for v in sides)} voxels", f"{side} x {side} x {side}"
    else:
        blocks, box = f"blocks of {a.get('block')} px", f"{side} x {side}"
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    if "explain_seconds" in result:
        took += f" (explaining all the pairs took {float(result['explain_seconds'].sum()) / 60:.1f} min of wall time)"
    # every threshold the result records, in the table's order (StrategyThresholds)
    keys = [f.name for f in fields(StrategyThresholds)]
    thresholds = ", ".join(f"{k} = {a[f'threshold_{k}']:g}" for k in keys if f"threshold_{k}" in a)
    if "threshold_min_linearity_grid" in a:
        thresholds += f"; min_linearity applied as {a['threshold_min_linearity_grid']:g} on the 3-D grid"
    return (
        f"Generated by `{command or 'pdcr-lab strategies'}`{took}. "
        f"PdCR (natural {blocks}, S = {a.get('coarse')}, N = {a.get('fine')}, "
        f"tau = {a.get('tau')}, seed {a.get('seed')}) on the first {n} test images of each dataset, "
        f"one {box} RoI per image on the ground-truth boundary (`pdcr_lab.rois.boundary_roi`); "
        "the ground truth is the outcome's reference and the structure mask. "
        f"Labels by `pdcr_lab.strategies.classify` ({thresholds}; distances in blocks). "
        f"Intervals: {round(100 * summary.attrs['level'])}% percentile bootstrap over images "
        f"({summary.attrs['n_boot']} resamples, seed {summary.attrs['seed']}); with {n} images per cell they are wide, "
        f"and a share is a count out of {n}."
    )


_SHORT = {
    "d50": "d50", "near_share": "near", "n_eff_fraction": "n_eff/n", "anisotropy": "anisotropy",
    "balance": "balance", "structure_share": "on structure", "path_mass": "path",
}

_LEGEND = (
    "d50: distance from the RoI (blocks) holding half of the effect mass; near: share of the mass within the near "
    "radius; n_eff/n: effective number of blocks (exp entropy) over candidate blocks; anisotropy: "
    "1 - l_min/l_max of the mass's second moment around the RoI centre; balance: (support - harm)/(support + harm); "
    "on structure: share of the mass on ground-truth structure connected to the RoI; path: share of the mass in the "
    "RoI's path component (strong blocks connected to the RoI)."
)


def _rows(summary: xr.Dataset, cells: Callable[[xr.Dataset], list[str]], per_dataset: bool = True) -> list[str]:
    rows = []
    for m in summary.model.values:
        for d in summary.dataset.values if per_dataset else [None]:
            s = summary.sel(model=m) if d is None else summary.sel(model=m, dataset=d)
            rows.append("| " + " | ".join([str(m), *([] if d is None else [str(d)]), *cells(s)]) + " |")
    return rows


def format_table(summary: xr.Dataset, result: xr.Dataset, *, command: str = "",
                 skipped: dict[tuple[str, str], str] | None = None, seconds: float | None = None) -> str:
    """The report as Markdown: settings, strategy shares, descriptors and the shift between datasets.

    Parameters
    ----------
    summary : xarray.Dataset
        Output of :func:`summarize`.
    result : xarray.Dataset
        The labelled maps it summarises (:func:`label_maps`); its attrs give the settings.
    command : str
        The command line that produced the result (default ``pdcr-lab strategies``).
    skipped : dict (model, dataset) -> reason, optional
        Pairs that were not explained, listed at the end.
    seconds : float, optional
        Wall time of the run, quoted in the header.
    """
    dice = result["model_test_dice"] if "model_test_dice" in result else None

    def shares(s: xr.Dataset) -> list[str]:
        test_dice = float(dice.sel(model=s.model, dataset=s.dataset)) if dice is not None else np.nan
        if int(s["n_maps"]) == 0:
            return ["0", *(["not explained"] + ["-"] * (len(LABELS) - 1)), "-"]
        return [str(int(s["n_maps"])), *(_cell(s["share"].sel(label=lab)) for lab in LABELS),
                f"{test_dice:.3f}" if np.isfinite(test_dice) else "-"]

    names = [_SHORT[n] for n in SUMMARY_DESCRIPTORS]
    lines = [
        "# Perceptual strategies of the zoo", "", _header(summary, result, command, seconds), "",
        "## Strategy shares (fraction of maps)", "",
        "| model | dataset | maps | " + " | ".join(LABELS) + " | test Dice |",
        "|---" * (len(LABELS) + 4) + "|",
        *_rows(summary, shares),
        "", "## Descriptors (mean over maps with an effect)", "", _LEGEND, "",
        "| model | dataset | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
        *_rows(summary, lambda s: [_cell(s[n]) for n in SUMMARY_DESCRIPTORS]),
    ]
    if "tvd" in summary:
        first, second = (str(v) for v in summary.dataset.values)
        lines += [
            "", f"## Shift between datasets ({second} minus {first})", "",
            "TVD: total variation distance between the two label distributions (0: the same, 1: disjoint).", "",
            "| model | TVD | " + " | ".join(f"delta {_SHORT[n]}" for n in SHIFT_DESCRIPTORS) + " |",
            "|---" * (len(SHIFT_DESCRIPTORS) + 2) + "|",
            *_rows(summary, lambda s: [_cell(s["tvd"]), *(_cell(s[f"delta_{n}"]) for n in SHIFT_DESCRIPTORS)],
                   per_dataset=False),
        ]
    if skipped:
        by_model: dict[str, list[str]] = {}
        for model, dataset in skipped:
            by_model.setdefault(model, []).append(dataset)
        missing = "; ".join(f"{m} ({', '.join(d)})" for m, d in by_model.items())
        lines += ["", f"Not explained (no usable checkpoint in the zoo when the report ran): {missing}."]
    return "\n".join(lines) + "\n"
