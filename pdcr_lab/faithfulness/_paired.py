"""Paired comparisons of the faithfulness study: is one method more faithful than another, image by image?

Every method explains the same images with the same models, so the comparison is paired. For a
pair of methods (A, B), a replacement policy and a curve, the difference of the curve's area
``A - B`` is taken on every (model, image) where both have a value, in AUC units (the RoI Dice as
a fraction, 0..1, integrated over the deleted or inserted fraction of blocks: a difference of 0.01
is one DSC point on average along the curve). Deletion: lower is more faithful;
insertion: higher is; ``better`` counts the units where A is the more faithful.

The unit of inference is the **image**: one test image is explained by every model, so the models'
differences on it are not independent; they are averaged per image, and the test is the two-sided
Wilcoxon signed-rank test of those per-image means (``scipy.stats.wilcoxon``, exact for small
samples), with the mean difference and a percentile bootstrap interval over images. Per model the
same test runs on that model's images. p-values are Holm-adjusted within each family: one family per
dataset (and one for all datasets pooled) over every comparison, policy and curve, and one over
every per-model test.

The comparisons: the reference method (PdCR) minus each other method, and each method minus the
random ranking (the control).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from ..checks import check_int
from ..statistics import bootstrap_interval, holm

__all__ = ["VERDICTS", "comparisons", "format_paired", "paired_tests", "verdicts"]

#: The outcomes of one comparison at a level: A significantly more faithful, no significant difference, B more.
VERDICTS: tuple[str, ...] = ("A better", "tie", "B better")


def comparisons(methods: Sequence[str], reference: str = "pdcr", control: str = "random") -> list[tuple[str, str]]:
    """(A, B) pairs compared: the reference against every other method, every method against the control.

    Parameters
    ----------
    methods : sequence of str
        Methods of the study.
    reference, control : str
        The method under test and the random control.

    Examples
    --------
    >>> comparisons(["pdcr", "rise", "random"])
    [('pdcr', 'rise'), ('pdcr', 'random'), ('rise', 'random')]
    """
    methods = [str(m) for m in methods]
    pairs = [(reference, m) for m in methods if m != reference] if reference in methods else []
    pairs += [(m, control) for m in methods if control in methods and m not in (control, reference)]
    return pairs


def _wilcoxon(d: np.ndarray) -> float:
    d = d[np.isfinite(d)]
    if d.size < 2 or np.all(d == 0):
        return 1.0 if d.size else np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties / zeros: scipy switches to the normal approximation
        return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def _sign(curve: str) -> float:
    """+1 when a larger area is more faithful (insertion), -1 when a smaller is (deletion)."""
    return -1.0 if curve == "deletion" else 1.0


def paired_tests(result: xr.Dataset, *, reference: str = "pdcr", control: str = "random", n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> xr.Dataset:
    """Paired differences of the curves' areas with Wilcoxon p-values, Holm-adjusted per family.

    Parameters
    ----------
    result : xarray.Dataset
        The faithfulness study's result: ``auc`` (model, dataset, image, method, policy, curve).
    reference, control : str
        The method compared with every other one, and the random control.
    n_boot, level : int, float
        Bootstrap resamples and coverage of the intervals of the mean difference.
    seed : int
        Seed of the bootstrap (recorded).

    Returns
    -------
    xarray.Dataset
        Over ``comparison`` (``"A - B"``), ``policy``, ``curve``:
        ``paired_diff`` (dataset, comparison, policy, curve, stat): mean over images of A - B with
        its interval (stat = mean, lo, hi: the labels of :func:`summarize`'s ``stat``, so that both
        share one dim when stored together); ``paired_better`` (share of images where A is
        more faithful), ``paired_p``, ``paired_p_holm``, ``paired_n`` (images) on the same dims
        without ``stat``; the same pooled over datasets as ``paired_all_*``; per model
        ``paired_model_diff``, ``paired_model_p``, ``paired_model_p_holm`` (model, dataset,
        comparison, policy, curve).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> auc = rng.normal(50, 5, (2, 1, 12, 3, 1, 1))
    >>> auc[:, :, :, 0] -= 10                      # "pdcr" deletes the RoI faster: more faithful
    >>> result = xr.Dataset({"auc": (("model", "dataset", "image", "method", "policy", "curve"), auc)},
    ...                     coords={"method": ["pdcr", "rise", "random"], "policy": ["natural"],
    ...                             "curve": ["deletion"], "dataset": ["d"]})
    >>> out = paired_tests(result, n_boot=200)
    >>> sel = dict(dataset="d", comparison="pdcr - rise", policy="natural", curve="deletion")
    >>> float(out.paired_better.sel(sel)), float(out.paired_p_holm.sel(sel)) < 0.01
    (1.0, True)
    """
    n_boot = check_int("n_boot", n_boot, minimum=1)
    auc = result["auc"].transpose("model", "dataset", "image", "method", "policy", "curve")
    methods = [str(m) for m in auc.method.values]
    for name, value in (("reference", reference), ("control", control)):
        if value not in methods:
            raise ValueError(f"{name}={value!r} is not a method of the result; methods: {methods}")
    pairs = comparisons(methods, reference, control)
    names = [f"{a} - {b}" for a, b in pairs]
    policies, curves = [str(p) for p in auc.policy.values], [str(c) for c in auc.curve.values]
    sets = [str(d) for d in auc.dataset.values]
    values = auc.values  # (model, dataset, image, method, policy, curve)
    diff = np.stack([values[..., methods.index(a), :, :] - values[..., methods.index(b), :, :] for a, b in pairs],
                    axis=3)  # (model, dataset, image, comparison, policy, curve)
    signs = np.array([_sign(c) for c in curves])
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # images no model has a value for
        per_image = np.nanmean(diff, axis=0)  # (dataset, image, comparison, policy, curve)

    def summarise(d: np.ndarray) -> tuple[np.ndarray, ...]:
        """d (image, comparison, policy, curve) -> diff (..., 3), better, p, n."""
        shape = d.shape[1:]
        est, better, p, n = (np.full((*shape, 3), np.nan), np.full(shape, np.nan), np.full(shape, np.nan),
                             np.zeros(shape))
        for idx in np.ndindex(*shape):
            x = d[(slice(None), *idx)]
            x = x[np.isfinite(x)]
            n[idx] = x.size
            if x.size:
                est[idx] = bootstrap_interval([x], n_boot=n_boot, level=level, rng=rng)
                better[idx] = float(np.mean(signs[idx[-1]] * x > 0))
                p[idx] = _wilcoxon(x)
        return est, better, p, n

    parts = [summarise(per_image[j]) for j in range(len(sets))]
    pooled = summarise(per_image.reshape(-1, *per_image.shape[2:]))
    p_sets = np.stack([part[2] for part in parts])
    p_holm = np.stack([holm(p) for p in p_sets])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pairs that were not run
        model_diff = np.nanmean(diff, axis=2)
    model_p = np.full(model_diff.shape, np.nan)
    for idx in np.ndindex(*model_diff.shape):
        model_p[idx] = _wilcoxon(diff[(idx[0], idx[1], slice(None), *idx[2:])])
    d_dims = ("dataset", "comparison", "policy", "curve")
    m_dims = ("model", *d_dims)
    out = xr.Dataset(
        {
            "paired_diff": ((*d_dims, "stat"), np.stack([part[0] for part in parts]),
                            {"long_name": "mean over images of A - B (AUC units)"}),
            "paired_better": (d_dims, np.stack([part[1] for part in parts]),
                              {"long_name": "share of images where A is more faithful"}),
            "paired_p": (d_dims, p_sets, {"long_name": "two-sided Wilcoxon signed-rank p over images"}),
            "paired_p_holm": (d_dims, p_holm, {"long_name": "paired_p, Holm-adjusted within the dataset"}),
            "paired_n": (d_dims, np.stack([part[3] for part in parts]), {"long_name": "images compared"}),
            "paired_all_diff": ((*d_dims[1:], "stat"), pooled[0]),
            "paired_all_better": (d_dims[1:], pooled[1]),
            "paired_all_p": (d_dims[1:], pooled[2]),
            "paired_all_p_holm": (d_dims[1:], holm(pooled[2])),
            "paired_all_n": (d_dims[1:], pooled[3]),
            "paired_model_diff": (m_dims, model_diff, {"long_name": "mean over the model's images of A - B"}),
            "paired_model_p": (m_dims, model_p),
            "paired_model_p_holm": (m_dims, holm(model_p), {"long_name": "Holm over every per-model test"}),
        },
        coords={"model": auc.model.values, "dataset": sets, "comparison": names, "policy": policies,
                "curve": curves, "stat": ["mean", "lo", "hi"],
                "comparison_a": ("comparison", [a for a, _ in pairs]),
                "comparison_b": ("comparison", [b for _, b in pairs])},
        attrs={"paired_n_boot": n_boot, "paired_level": level, "paired_seed": seed,
               "paired_test": "two-sided Wilcoxon signed-rank over per-image means (scipy.stats.wilcoxon)"},
    )
    return out


def _verdict(diff: float, p: float, curve: str, alpha: float) -> str:
    if not np.isfinite(p) or p >= alpha:
        return "tie"
    return "A better" if _sign(curve) * diff > 0 else "B better"


def verdicts(paired: xr.Dataset, *, alpha: float = 0.05) -> xr.DataArray:
    """Wins, ties and losses of every comparison over its (policy, curve) cells, per dataset and pooled.

    A cell is won by A when its Holm-adjusted p is below `alpha` and the mean difference favours A
    (lower deletion area, higher insertion area), lost when it favours B, a tie otherwise.

    Parameters
    ----------
    paired : xarray.Dataset
        Output of :func:`paired_tests`.
    alpha : float
        Level, on the Holm-adjusted p-values.

    Returns
    -------
    xarray.DataArray
        Counts (comparison, scope, verdict); scope = each dataset, then ``"all"`` (pooled).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> auc = rng.normal(0.9, 0.01, (1, 1, 10, 2, 1, 1))
    >>> auc[:, :, :, 0] -= 0.05  # A deletes faster: more faithful on every image
    >>> result = xr.Dataset({"auc": (("model", "dataset", "image", "method", "policy", "curve"), auc)},
    ...                     coords={"model": ["m"], "dataset": ["d"], "image": np.arange(10),
    ...                             "method": ["pdcr", "random"], "policy": ["natural"], "curve": ["deletion"]})
    >>> verdicts(paired_tests(result, n_boot=200)).sel(scope="all").values.tolist()
    [[1, 0, 0]]
    """
    scopes = [str(d) for d in paired.dataset.values]
    counts = np.zeros((paired.sizes["comparison"], len(scopes) + 1, len(VERDICTS)), dtype=np.int64)
    for i, name in enumerate(paired.comparison.values):
        for policy in paired.policy.values:
            for curve in paired.curve.values:
                s = paired.sel(comparison=name, policy=policy, curve=curve)
                cells = [(s["paired_diff"].sel(dataset=d, stat="mean"), s["paired_p_holm"].sel(dataset=d))
                         for d in scopes] + [(s["paired_all_diff"].sel(stat="mean"), s["paired_all_p_holm"])]
                for j, (diff, p) in enumerate(cells):
                    counts[i, j, VERDICTS.index(_verdict(float(diff), float(p), str(curve), alpha))] += 1
    return xr.DataArray(counts, dims=("comparison", "scope", "verdict"),
                        coords={"comparison": paired.comparison.values, "scope": [*scopes, "all"],
                                "verdict": list(VERDICTS)},
                        attrs={"long_name": "(policy, curve) cells won by A, tied, won by B", "alpha": alpha})


def format_paired(paired: xr.Dataset, *, alpha: float = 0.05, digits: int = 2) -> str:
    """Markdown: the pooled comparisons, each cell ``diff [interval] p`` with a verdict.

    Parameters
    ----------
    paired : xarray.Dataset
        Output of :func:`paired_tests`.
    alpha : float
        Level of the verdict (on the Holm-adjusted p).
    digits : int
        Decimals of the differences.
    """
    cols = [(p, c) for c in paired.curve.values for p in paired.policy.values]
    lines = [
        f"Pooled over datasets: mean over images of A - B (AUC units) with its {round(100 * paired.attrs['paired_level'])}% "
        f"bootstrap interval, the Holm-adjusted Wilcoxon p and the verdict at {alpha} (deletion: lower is more "
        "faithful; insertion: higher is).", "",
        "| A - B | " + " | ".join(f"{c} {p}" for p, c in cols) + " |", "|---" * (len(cols) + 1) + "|",
    ]
    for name in paired.comparison.values:
        cells = []
        for policy, curve in cols:
            s = paired.sel(comparison=name, policy=policy, curve=curve)
            est, lo, hi = (float(s["paired_all_diff"].sel(stat=k)) for k in ("mean", "lo", "hi"))
            p = float(s["paired_all_p_holm"])
            p_text = "-" if not np.isfinite(p) else (f"{p:.3f}" if p >= 1e-3 else f"{p:.0e}")
            cells.append(f"{est:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] p {p_text} {_verdict(est, p, str(curve), alpha)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = verdicts(paired, alpha=alpha)
    lines += ["", f"Cells won by A / tied / won by B at {alpha} (Holm), over the "
              f"{paired.sizes['policy'] * paired.sizes['curve']} (policy, curve) cells of each scope:", "",
              "| A - B | " + " | ".join(str(s) for s in counts.scope.values) + " |", "|---" * (counts.sizes["scope"] + 1) + "|"]
    for name in counts.comparison.values:
        row = counts.sel(comparison=name)
        lines.append(f"| {name} | " + " | ".join("/".join(str(int(v)) for v in row.sel(scope=s).values)
                                                  for s in counts.scope.values) + " |")
    return "\n".join(lines) + "\n"
