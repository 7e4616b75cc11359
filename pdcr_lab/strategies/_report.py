"""The strategies report: the zoo over the embedded datasets, labelled, summarised with bootstrap
intervals, and compared between datasets (``pdcr-lab strategies``).

Design of the run (:class:`ReportSettings`): the first `images` test images of each embedded
dataset (``lesions``, ``vessels``: 96 x 96, block 8, a 12 x 12 grid), one 16 x 16 RoI per image
placed by :func:`pdcr_lab.rois.boundary_roi` on the ground truth (the grid-aligned window closest
to half foreground, so that the RoI's Dice responds in both directions), the ground truth as the
outcome's reference and as the structure mask of the alignment descriptors, natural blocks from the
dataset's bank. PdCR runs with the paper's screening (S = 3, tau = 0.02) and a reduced number of
fine draws (default N = 8 instead of 50) to keep the report within minutes on two CPU cores; the
value used is recorded in the result and the table.

Statistics (:func:`summarize`): images are the sampling unit. For every (model, dataset), strategy
shares (fraction of maps with each label) and descriptor means are bootstrapped over images
(`n_boot` resamples with replacement, seeded; percentile intervals). The shift between datasets per
architecture is the total variation distance of the label distributions,
TVD = 1/2 sum_L |p_vessels(L) - p_lesions(L)|, and the differences (vessels - lesions) of the
descriptor means, with intervals from resampling each dataset's images independently.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_float, check_int
from ..schema import stack
from ._classify import LABELS, THRESHOLDS, StrategyThresholds, classify

__all__ = [
    "ReportSettings",
    "SUMMARY_DESCRIPTORS",
    "explain_zoo",
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


@dataclass(frozen=True)
class ReportSettings:
    """The fixed design of the strategies report (module docstring)."""

    images: int = 4  #: first test images of each dataset explained
    roi_size: int = 16  #: RoI side in pixels (two blocks)
    coarse: int = 3  #: S, screening draws (paper)
    fine: int = 8  #: N, estimation draws (paper: 50; reduced for CPU cost)
    tau: float = 0.02  #: screening / zeroing threshold (paper)
    seed: int = 0  #: seed of the bank draws and of the bootstrap
    n_boot: int = 2000  #: bootstrap resamples
    level: float = 0.95  #: interval coverage

    def __post_init__(self) -> None:
        for name in ("images", "roi_size", "coarse", "fine", "n_boot"):
            check_int(name, getattr(self, name), minimum=1 if name != "coarse" else 0)
        check_int("seed", self.seed, minimum=0)
        check_float("tau", self.tau, minimum=0.0)
        if not 0 < check_float("level", self.level) < 1:
            raise ValueError(f"level={self.level} must lie in (0, 1)")


# -- computing the maps ---------------------------------------------------------------------------
def _explain_pair(model: Any, data: Any, settings: ReportSettings, device: Any) -> xr.Dataset:
    """Maps of one (model, dataset) over the report's images, stacked along ``image``."""
    from ..engine import explain
    from ..rois import boundary_roi

    images, masks, ids = data.images("test"), data.masks("test"), data.ids("test")
    if settings.images > len(images):
        raise ValueError(f"images={settings.images} but the test split of {data.name!r} has {len(images)} images")
    block = data.bank.block
    maps = []
    for i in range(settings.images):
        roi = boundary_roi(masks[i], size=settings.roi_size, block=block)
        ds = explain(model, images[i], roi=roi, target=masks[i], bank=data.bank, block=block,
                     coarse=settings.coarse, fine=settings.fine, tau=settings.tau, seed=settings.seed,
                     device=device)
        maps.append(ds.assign_attrs(image_id=ids[i]))
    return stack(maps, dim="image", labels=list(range(settings.images)))


def _same_settings(previous: xr.Dataset, settings: ReportSettings) -> bool:
    keys = ("coarse", "fine", "tau", "seed")
    return all(previous.attrs.get(k) == getattr(settings, k) for k in keys) and (
        previous.attrs.get("report_roi_size") == settings.roi_size and previous.sizes.get("image") == settings.images
    )


def explain_zoo(
    models: Sequence[str] | None = None,
    datasets: Sequence[str] = ("lesions", "vessels"),
    settings: ReportSettings = ReportSettings(),
    *,
    device: Any = None,
    previous: xr.Dataset | None = None,
    log: Callable[[str], None] = print,
    on_model: Callable[[xr.Dataset], None] | None = None,
) -> tuple[xr.Dataset, dict[tuple[str, str], str]]:
    """PdCR maps of zoo models on the report's images, stacked over (model, dataset, image).

    A (model, dataset) pair without a usable checkpoint is skipped and reported; its maps are
    missing in the result (NaN ``ate``, ``explained`` False), so the result stays one grid over
    every model and dataset that has at least one explained pair. With `previous` (an earlier result
    with the same settings), the pairs it holds are reused instead of explained again.

    Returns
    -------
    maps : xarray.Dataset
        The effects schema with dims (model, dataset, image, block_y, block_x), plus ``explained``
        (model, dataset), the ground truth as ``structure_mask`` (dataset, image, y, x) and the
        test Dice recorded with each checkpoint in ``model_test_dice`` and the wall time of
        explaining each pair in ``explain_seconds`` (model, dataset).
    skipped : dict (model, dataset) -> why the pair was not explained
    """
    from .. import datasets as datasets_module
    from .. import zoo

    names = list(models) if models is not None else list(zoo.list())
    reuse = previous is not None and _same_settings(previous, settings)
    data = {name: datasets_module.load(name) for name in datasets}
    done: dict[tuple[str, str], xr.Dataset] = {}
    facts: dict[tuple[str, str], tuple[float, float]] = {}  # (test Dice, seconds spent explaining)
    skipped: dict[tuple[str, str], str] = {}
    for name in names:
        for dname in datasets:
            if reuse and _holds(previous, name, dname):
                old = previous.sel(model=name, dataset=dname)
                done[name, dname] = _maps_only(old)
                facts[name, dname] = tuple(float(old[v]) if v in old else np.nan for v in _FACTS)
                continue
            try:
                model, meta = zoo.load(name, dname)
            except (FileNotFoundError, OSError, ValueError) as exc:
                skipped[name, dname] = str(exc).split("\n")[0]
                log(f"  {name:16s} {dname:8s} skipped: no usable checkpoint")
                continue
            start = time.perf_counter()
            done[name, dname] = _explain_pair(model, data[dname], settings, device)
            seconds = time.perf_counter() - start
            facts[name, dname] = (float(meta.get("test_dice", np.nan)), seconds)
            log(f"  {name:16s} {dname:8s} {settings.images} maps in {seconds:6.1f} s")
        if on_model is not None and done:
            on_model(_combine(done, facts, data, settings))
    if not done:
        raise RuntimeError(f"no zoo model could be explained; skipped: {skipped}")
    return _combine(done, facts, data, settings), skipped


def _holds(result: xr.Dataset, model: str, dataset: str) -> bool:
    """Whether a stored result holds the maps of (model, dataset)."""
    if model not in result.model.values or dataset not in result.dataset.values:
        return False
    return "explained" not in result or bool(result["explained"].sel(model=model, dataset=dataset))


#: The effects variables of the schema that a stored report carries (everything else is derived).
_EFFECT_VARS = ("ate", "ate_raw", "stderr", "n_draws", "screened", "roi_block", "m0", "forwards", "roi_mask",
                "roi_row", "roi_col", "roi_height", "roi_width")


def _maps_only(ds: xr.Dataset) -> xr.Dataset:
    """The effects variables of a stored result (descriptors and labels dropped, attrs restored)."""
    out = ds[[v for v in ds.data_vars if v in _EFFECT_VARS]].drop_vars(["model", "dataset"], errors="ignore")
    # Facts that varied between models or datasets were stored as coordinates; back to attrs.
    scalars = {c: out[c].item() for c in out.coords if out[c].ndim == 0}
    # The report's own attrs (design, thresholds) are set again when the results are combined.
    attrs = {k: v for k, v in ds.attrs.items() if not k.startswith(("report_", "threshold_"))}
    out.attrs = {}
    return out.drop_vars(list(scalars)).assign_attrs({**attrs, **scalars})


def _fill_value(da: xr.DataArray) -> Any:
    """What a missing (model, dataset) pair holds: NaN for floats, 0 for integers, False for flags."""
    kind = da.dtype.kind
    return np.nan if kind == "f" else False if kind == "b" else 0 if kind in "iu" else ""


#: Per-pair facts stored beside the maps: the checkpoint's test Dice and the wall time of explaining.
_FACTS = ("model_test_dice", "explain_seconds")


def _combine(done: dict[tuple[str, str], xr.Dataset], facts: dict[tuple[str, str], tuple[float, float]],
             data: dict[str, Any], settings: ReportSettings) -> xr.Dataset:
    """One grid over the models and datasets of `done`; missing pairs filled (see :func:`_fill_value`)."""
    models = list(dict.fromkeys(m for m, _ in done))
    sets = [d for d in data if any((m, d) in done for m in models)]
    per_set = []
    for d in sets:
        present = [m for m in models if (m, d) in done]
        part = stack([done[m, d] for m in present], dim="model", labels=present)
        fill = {v: _fill_value(part[v]) for v in part.data_vars}
        per_set.append(part.reindex(model=models, fill_value=fill))
    maps = stack(per_set, dim="dataset", labels=sets)
    maps["explained"] = (("model", "dataset"), np.array([[(m, d) in done for d in sets] for m in models]),
                         {"long_name": "the pair had a checkpoint and was explained"})
    values = np.array([[facts.get((m, d), (np.nan, np.nan)) for d in sets] for m in models])
    maps["model_test_dice"] = (("model", "dataset"), values[..., 0],
                               {"long_name": "test Dice recorded with the checkpoint"})
    maps["explain_seconds"] = (("model", "dataset"), values[..., 1],
                               {"long_name": "wall time of explaining the pair's images", "units": "s"})
    structure = np.stack([data[d].masks("test")[: settings.images].numpy() for d in sets])
    maps["structure_mask"] = (("dataset", "image", "y", "x"), structure.astype(bool),
                              {"long_name": "ground truth, the structure of the alignment descriptors"})
    # coarse, fine, tau and seed are already attrs of every map.
    design = {f"report_{k}": v for k, v in asdict(settings).items() if k not in ("coarse", "fine", "tau", "seed")}
    maps.attrs.update(design)
    return maps


def label_maps(maps: xr.Dataset, thresholds: StrategyThresholds = THRESHOLDS) -> xr.Dataset:
    """`maps` (dims model, dataset, image) with the output of :func:`classify` added.

    Every dataset is labelled over its explained models with its ``structure_mask``; pairs that
    were not explained get the label ``"not explained"`` and NaN descriptors.
    """
    explained = maps["explained"] if "explained" in maps else xr.ones_like(maps["m0"].isel(image=0), dtype=bool)
    effects = maps[[v for v in maps.data_vars if v in _EFFECT_VARS]]
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
        values = values.mean(extra, skipna=True)
    return np.asarray(values.transpose("model", "dataset", "image"), dtype=float)


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean ignoring NaN (maps without effect); NaN, without a warning, where all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _boot_mean(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Bootstrap means over the image axis: values (..., n), index (B, n) -> (..., B)."""
    return _nanmean(values[..., index], axis=-1)


def _interval(estimate: np.ndarray, draws: np.ndarray, level: float) -> np.ndarray:
    """Stack (estimate, lower, upper) on a last axis; percentile interval of `draws` (last axis)."""
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples (maps without effect)
        lower = np.nanquantile(draws, alpha, axis=-1)
        upper = np.nanquantile(draws, 1 - alpha, axis=-1)
    return np.stack([estimate, lower, upper], axis=-1)


def summarize(result: xr.Dataset, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> xr.Dataset:
    """Strategy shares, descriptor means and the shift between datasets, with bootstrap intervals.

    Parameters
    ----------
    result : output of :func:`label_maps` with dims (model, dataset, image[, roi])
    n_boot, seed, level : bootstrap resamples, seed and interval coverage

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
    n_images, n_sets = result.sizes["image"], result.sizes["dataset"]
    # One index table per dataset: the datasets' test images are independent samples.
    index = rng.integers(0, n_images, size=(n_sets, n_boot, n_images))

    def boot(values: np.ndarray) -> np.ndarray:
        """(model, dataset, image) -> (model, dataset, B) bootstrap means."""
        return np.stack([_boot_mean(values[:, d], index[d]) for d in range(n_sets)], axis=1)

    def dims(*names: str) -> tuple[str, ...]:
        return (*names, "stat")

    out = xr.Dataset(coords={"model": result.model.values, "dataset": result.dataset.values,
                             "label": list(LABELS), "stat": ["estimate", "lower", "upper"]})
    labels = result["label"]
    valid = labels.isin(list(LABELS))  # "not explained" pairs count as missing, not as a label
    onehot = np.stack([_per_image((labels == lab).astype(float).where(valid)) for lab in LABELS], axis=2)
    share_est = _nanmean(onehot)  # (model, dataset, label)
    share_draws = np.stack([boot(onehot[:, :, k]) for k in range(len(LABELS))], axis=2)  # (model, dataset, label, B)
    out["share"] = (dims("model", "dataset", "label"), _interval(share_est, share_draws, level),
                    {"long_name": "fraction of maps with each label"})
    per_map = [d for d in labels.dims if d not in ("model", "dataset")]
    out["n_maps"] = valid.sum(per_map).transpose("model", "dataset").drop_vars(
        [c for c in labels.coords if c not in ("model", "dataset")], errors="ignore")
    draws_of: dict[str, np.ndarray] = {}
    for name in SUMMARY_DESCRIPTORS:
        values = _per_image(result[name])
        draws_of[name] = boot(values)
        out[name] = (dims("model", "dataset"), _interval(_nanmean(values), draws_of[name], level),
                     {"long_name": result[name].attrs.get("long_name", name)})
    if n_sets == 2:
        first, second = (str(v) for v in result.dataset.values)
        tvd = 0.5 * np.abs(share_est[:, 1] - share_est[:, 0]).sum(-1)
        tvd_draws = 0.5 * np.abs(share_draws[:, 1] - share_draws[:, 0]).sum(-2)
        out["tvd"] = (dims("model"), _interval(tvd, tvd_draws, level),
                      {"long_name": f"total variation distance of the label distributions, {second} vs {first}"})
        for name in SHIFT_DESCRIPTORS:
            est = out[name].sel(stat="estimate").values
            delta = _interval(est[:, 1] - est[:, 0], draws_of[name][:, 1] - draws_of[name][:, 0], level)
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
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    if "explain_seconds" in result:
        took += f" (explaining all the pairs took {float(result['explain_seconds'].sum()) / 60:.1f} min of wall time)"
    keys = ("near", "dominance", "min_linearity", "min_path_far", "path_level", "min_on_structure")
    thresholds = ", ".join(f"{k} = {a[f'threshold_{k}']:g}" for k in keys if f"threshold_{k}" in a)
    return (
        f"Generated by `{command or 'pdcr-lab strategies'}`{took}. "
        f"PdCR (natural blocks of {a.get('block')} px, S = {a.get('coarse')}, N = {a.get('fine')}, "
        f"tau = {a.get('tau')}, seed {a.get('seed')}) on the first {n} test images of each dataset, "
        f"one {side} x {side} RoI per image on the ground-truth boundary (`pdcr_lab.rois.boundary_roi`); "
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
    """The report as Markdown: settings, strategy shares, descriptors and the shift between datasets."""
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
