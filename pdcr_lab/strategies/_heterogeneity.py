"""Do strategies differ? Permutation tests of heterogeneity across architectures and across datasets.

The paper's two findings are tested on a labelled (model, dataset, image) stack
(:func:`~pdcr_lab.strategies.label_maps`):

* **Across architectures** (per dataset): H0 "the strategy does not depend on the model". Every
  model explains the same images, so the design is paired by image: the null distribution comes from
  permuting the models' values *within each image* (a randomisation test that keeps each image's
  own difficulty). Labels: the chi-square statistic of the (model x label) table, effect size
  Cramér's V. Continuous measures (d50, near share, the strategies' shares of the effect mass):
  the F statistic of a two-way layout (model + image, no interaction), effect size the partial
  eta squared of the model term. ``dataset="all"`` sums the statistic over datasets (one
  stratified test; its effect is the datasets' effects averaged with the number of maps as weights).
* **Across datasets** (per model): H0 "the model's strategy is the same on every dataset". The
  datasets' images are different, so the dataset of each map is permuted over all of the model's
  maps. Labels: chi-square of the (dataset x label) table and Cramér's V; continuous: one-way F and
  eta squared.

p-values are ``(1 + hits) / (1 + n_perm)`` and, per family (the datasets of one measure, the
models of one measure), Holm-adjusted (:func:`pdcr_lab.statistics.holm`). A small p says the
strategies differ; the effect size says by how much (V and eta squared lie in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..checks import check_int
from ..statistics import holm, permutation_p
from ._classify import LABELS, STRATEGIES

__all__ = ["HETEROGENEITY_MEASURES", "format_heterogeneity", "heterogeneity"]

#: What the tests compare: the label, then continuous descriptors of each map.
HETEROGENEITY_MEASURES: tuple[str, ...] = (
    "label", "d50", "near_share", *(f"share_{s}" for s in STRATEGIES),
)
_EXPLAINED = list(LABELS)


def _measure(result: xr.Dataset, name: str) -> xr.DataArray:
    """(model, dataset, image) values of one measure; labels as integer codes, -1 when not explained."""
    if name == "label":
        codes = np.full(result["label"].shape, -1)
        for k, lab in enumerate(_EXPLAINED):
            codes[np.asarray(result["label"] == lab)] = k
        values = result["label"].copy(data=codes)
    elif name.startswith("share_"):
        values = result["share"].sel(strategy=name.removeprefix("share_"), drop=True)
    else:
        values = result[name]
    extra = [d for d in values.dims if d not in ("model", "dataset", "image")]
    if extra:  # several RoIs per image: one value per image (labels: the first RoI's)
        values = values.isel({d: 0 for d in extra}) if name == "label" else values.mean(extra)
    return values.transpose("model", "dataset", "image")


def _chi2(codes: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Chi-square statistic of the (group x label) table; codes/groups (..., n) -> (...)."""
    n_labels = len(_EXPLAINED)
    cells = groups * n_labels + codes
    flat = cells.reshape(-1, cells.shape[-1])
    table = np.stack([np.bincount(row, minlength=n_groups * n_labels) for row in flat]).astype(float)
    table = table.reshape(*cells.shape[:-1], n_groups, n_labels)
    n = table.sum((-2, -1), keepdims=True)
    expected = table.sum(-1, keepdims=True) * table.sum(-2, keepdims=True) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(expected > 0, (table - expected) ** 2 / expected, 0.0)
    return terms.sum((-2, -1))


def _cramers_v(chi2: float, codes: np.ndarray, n_groups: int) -> float:
    k = min(n_groups, len(np.unique(codes)))
    return float(np.sqrt(chi2 / (codes.size * (k - 1)))) if k > 1 else 0.0


def _f_twoway(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F of the model term and its partial eta squared; values (..., model, image)."""
    grand = values.mean((-2, -1), keepdims=True)
    rows, cols = values.mean(-1, keepdims=True), values.mean(-2, keepdims=True)
    m, n = values.shape[-2:]
    ss_model = n * ((rows - grand) ** 2).sum((-2, -1))
    ss_resid = ((values - rows - cols + grand) ** 2).sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (ss_model / (m - 1)) / (ss_resid / ((m - 1) * (n - 1)))
        eta = ss_model / (ss_model + ss_resid)
    return np.where(ss_resid > 0, f, np.where(ss_model > 0, np.inf, 0.0)), np.nan_to_num(eta)


def _f_oneway(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """One-way F and eta squared; values (n,), groups (..., n) -> (...)."""
    onehot = groups[..., None] == np.arange(n_groups)
    counts = onehot.sum(-2)
    means = (onehot * values[:, None]).sum(-2) / np.maximum(counts, 1)
    grand = values.mean()
    ss_between = (counts * (means - grand) ** 2).sum(-1)
    ss_total = ((values - grand) ** 2).sum()
    ss_within = ss_total - ss_between
    df_b, df_w = n_groups - 1, values.size - n_groups
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (ss_between / df_b) / (ss_within / df_w)
        eta = ss_between / ss_total
    return np.where(ss_within > 1e-12 * max(ss_total, 1e-300), f, np.where(ss_between > 0, np.inf, 0.0)), \
        np.nan_to_num(eta)


def _within_image_permutations(n_models: int, n_images: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm, model, image) indices: the models shuffled independently in every image."""
    return np.argsort(rng.random((n_perm, n_models, n_images)), axis=1)


def _across_architectures(values: np.ndarray, name: str, n_perm: int, rng: np.random.Generator
                          ) -> tuple[float, float, np.ndarray]:
    """(statistic, effect, permuted statistics) of one dataset; values (model, image)."""
    m, n = values.shape
    order = _within_image_permutations(m, n, n_perm, rng)
    shuffled = np.take_along_axis(np.broadcast_to(values, (n_perm, m, n)), order, axis=1)
    if name == "label":
        codes = values.astype(int)
        groups = np.broadcast_to(np.arange(m)[:, None], (m, n))
        stat = float(_chi2(codes.ravel()[None], groups.ravel()[None], m)[0])
        perm = _chi2(shuffled.astype(int).reshape(n_perm, -1), np.broadcast_to(groups.ravel(), (n_perm, m * n)), m)
        return stat, _cramers_v(stat, codes, m), perm
    f, eta = _f_twoway(values)
    return float(f), float(eta), _f_twoway(shuffled)[0]


def _across_datasets(values: np.ndarray, groups: np.ndarray, name: str, n_groups: int, n_perm: int,
                     rng: np.random.Generator) -> tuple[float, float, float]:
    """(statistic, effect, p) of one model; values and groups (n_maps,)."""
    shuffled = np.stack([rng.permutation(groups) for _ in range(n_perm)])
    if name == "label":
        codes = values.astype(int)
        stat = float(_chi2(codes[None], groups[None], n_groups)[0])
        perm = _chi2(np.broadcast_to(codes, shuffled.shape), shuffled, n_groups)
        return stat, _cramers_v(stat, codes, n_groups), float(permutation_p(stat, perm))
    f, eta = _f_oneway(values, groups, n_groups)
    perm = _f_oneway(values, shuffled, n_groups)[0]
    return float(f), float(eta), float(permutation_p(f, perm))


def heterogeneity(result: xr.Dataset, *, measures: Sequence[str] = HETEROGENEITY_MEASURES, n_perm: int = 9999,
                  seed: int = 0) -> xr.Dataset:
    """Permutation tests: do strategies differ across architectures, and across datasets per model?

    Parameters
    ----------
    result : xarray.Dataset
        Labelled maps (:func:`~pdcr_lab.strategies.label_maps`) with dims (model, dataset, image).
        Pairs labelled ``"not explained"`` are left out; a continuous measure uses the images where
        every compared map has a finite value.
    measures : sequence of str
        Of :data:`HETEROGENEITY_MEASURES`.
    n_perm : int
        Permutations per test.
    seed : int
        Seed of the permutations (recorded in the attrs).

    Returns
    -------
    xarray.Dataset
        ``het_arch_statistic``, ``het_arch_effect``, ``het_arch_p``, ``het_arch_p_holm``,
        ``het_arch_n`` (dataset, measure); the test stratified over every dataset in
        ``het_arch_all_statistic``, ``_effect``, ``_p``, ``_n`` (measure); ``het_shift_statistic``,
        ``het_shift_effect``, ``het_shift_p``, ``het_shift_p_holm``, ``het_shift_n`` (model,
        measure). Effects: Cramér's V (label), partial eta squared (across architectures) or eta
        squared (across datasets). Attrs ``het_n_perm``, ``het_seed``. The names do not collide
        with the maps' variables, so the result merges into the study's file.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> labels = np.where(np.arange(4)[:, None, None] < 2, "local", "global") * np.ones((4, 2, 8), object)
    >>> result = xr.Dataset({"label": (("model", "dataset", "image"), labels.astype(str))},
    ...                     coords={"model": list("abcd"), "dataset": ["x", "y"]})
    >>> het = heterogeneity(result, measures=["label"], n_perm=199)
    >>> float(het.het_arch_effect.sel(dataset="x", measure="label")), float(het.het_arch_all_p.sel(measure="label"))
    (1.0, 0.005)
    >>> float(het.het_shift_p.sel(model="a", measure="label"))    # the same labels on both datasets
    1.0
    """
    n_perm = check_int("n_perm", n_perm, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    for name in measures:
        if name not in HETEROGENEITY_MEASURES:
            raise ValueError(f"measures: unknown measure {name!r}; expected some of {HETEROGENEITY_MEASURES}")
        if name != "label" and name.removeprefix("share_") not in STRATEGIES and name not in result:
            raise ValueError(f"measures: {name!r} is not a variable of the result; label it first (label_maps)")
    rng = np.random.default_rng(seed)
    models, sets = [str(m) for m in result.model.values], [str(d) for d in result.dataset.values]
    codes = _measure(result, "label").values
    shape_a, shape_s = (len(sets) + 1, len(measures)), (len(models), len(measures))
    arch = {k: np.full(shape_a, np.nan) for k in ("statistic", "effect", "p", "n")}
    shift = {k: np.full(shape_s, np.nan) for k in ("statistic", "effect", "p", "n")}
    for j, name in enumerate(measures):
        values = _measure(result, name).values.astype(float)
        total, total_perm = 0.0, np.zeros(n_perm)
        for d in range(len(sets)):
            rows = (codes[:, d] >= 0).any(axis=1)  # the explained models of this dataset
            block = values[rows, d]
            block = block[:, np.isfinite(block).all(axis=0) & (codes[rows, d] >= 0).all(axis=0)]
            if block.shape[0] < 2 or block.shape[1] < 2:
                continue
            stat, effect, perm = _across_architectures(block, name, n_perm, rng)
            arch["statistic"][d, j], arch["effect"][d, j], arch["n"][d, j] = stat, effect, block.size
            arch["p"][d, j] = permutation_p(stat, perm)
            total, total_perm = total + stat, total_perm + perm
        if np.isfinite(arch["p"][:-1, j]).any():
            arch["statistic"][-1, j], arch["p"][-1, j] = total, permutation_p(total, total_perm)
            arch["n"][-1, j] = np.nansum(arch["n"][:-1, j])
            done = np.isfinite(arch["effect"][:-1, j])
            arch["effect"][-1, j] = np.average(arch["effect"][:-1, j][done], weights=arch["n"][:-1, j][done])
        for m in range(len(models)):
            ok = (codes[m] >= 0) & np.isfinite(values[m])
            groups = np.broadcast_to(np.arange(len(sets))[:, None], ok.shape)[ok]
            used = np.unique(groups)
            if used.size < 2:
                continue
            stat, effect, p = _across_datasets(values[m][ok], np.searchsorted(used, groups), name, used.size,
                                               n_perm, rng)
            shift["statistic"][m, j], shift["effect"][m, j], shift["p"][m, j] = stat, effect, p
            shift["n"][m, j] = ok.sum()
    arch_holm = np.stack([holm(arch["p"][:-1, j]) for j in range(len(measures))], axis=1)
    shift_holm = np.stack([holm(shift["p"][:, j]) for j in range(len(measures))], axis=1)
    a_dims, s_dims = ("dataset", "measure"), ("model", "measure")
    arch_effect = "Cramér's V (label) or partial eta squared of the model term"
    out = xr.Dataset(
        {
            "het_arch_statistic": (a_dims, arch["statistic"][:-1], {"long_name": "chi-square (label) or F across models"}),
            "het_arch_effect": (a_dims, arch["effect"][:-1], {"long_name": arch_effect}),
            "het_arch_p": (a_dims, arch["p"][:-1], {"long_name": "permutation p, models shuffled within each image"}),
            "het_arch_p_holm": (a_dims, arch_holm, {"long_name": "het_arch_p, Holm-adjusted over the datasets"}),
            "het_arch_n": (a_dims, arch["n"][:-1], {"long_name": "maps compared"}),
            "het_arch_all_statistic": ("measure", arch["statistic"][-1], {"long_name": "sum over the datasets"}),
            "het_arch_all_effect": ("measure", arch["effect"][-1],
                                    {"long_name": f"{arch_effect}, averaged over the datasets by maps"}),
            "het_arch_all_p": ("measure", arch["p"][-1],
                               {"long_name": "permutation p, stratified by dataset and image"}),
            "het_arch_all_n": ("measure", arch["n"][-1], {"long_name": "maps compared"}),
            "het_shift_statistic": (s_dims, shift["statistic"], {"long_name": "chi-square (label) or F across datasets"}),
            "het_shift_effect": (s_dims, shift["effect"], {"long_name": "Cramér's V (label) or eta squared"}),
            "het_shift_p": (s_dims, shift["p"], {"long_name": "permutation p, datasets shuffled over the model's maps"}),
            "het_shift_p_holm": (s_dims, shift_holm, {"long_name": "het_shift_p, Holm-adjusted over the models"}),
            "het_shift_n": (s_dims, shift["n"], {"long_name": "maps compared"}),
        },
        coords={"dataset": sets, "model": models, "measure": list(measures)},
        attrs={"het_n_perm": n_perm, "het_seed": seed},
    )
    return out


def format_heterogeneity(het: xr.Dataset, digits: int = 3) -> str:
    """Markdown tables of :func:`heterogeneity`: statistic, effect size, p and Holm-adjusted p.

    Parameters
    ----------
    het : xarray.Dataset
        Output of :func:`heterogeneity`.
    digits : int
        Decimals of the effect sizes.
    """
    def p_text(p: float) -> str:
        return "-" if not np.isfinite(p) else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")

    def cell(effect: float, p: float) -> str:
        size = f"{effect:.{digits}f}" if np.isfinite(effect) else "-"
        return "-" if not np.isfinite(p) else f"{size} (p {p_text(p)})"

    def rows(prefix: str, dim: str) -> list[str]:
        return [f"| {key} | " + " | ".join(
            cell(float(het[f"{prefix}_effect"].sel({dim: key, "measure": name})),
                 float(het[f"{prefix}_p_holm"].sel({dim: key, "measure": name}))) for name in het.measure.values) + " |"
            for key in het[dim].values]

    every = "| all (stratified) | " + " | ".join(
        cell(float(het["het_arch_all_effect"].sel(measure=name)), float(het["het_arch_all_p"].sel(measure=name)))
        for name in het.measure.values) + " |"
    header = "| {} | " + " | ".join(str(m) for m in het.measure.values) + " |"
    rule = "|---" * (het.sizes["measure"] + 1) + "|"
    return "\n".join([
        f"Permutation tests ({het.attrs['het_n_perm']} permutations, seed {het.attrs['het_seed']}); each cell: "
        "effect size (Cramér's V for the label, eta squared for the others) and the p-value, Holm-adjusted "
        "over the datasets (across architectures) or the models (across datasets).", "",
        "Across architectures (models shuffled within each image; `all`: one test stratified over the datasets):",
        "", header.format("dataset"), rule, *rows("het_arch", "dataset"), every, "",
        "Across datasets, per model (datasets shuffled over the model's maps):", "",
        header.format("model"), rule, *rows("het_shift", "model"),
    ]) + "\n"
