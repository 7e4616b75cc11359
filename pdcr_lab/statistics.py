"""Summary statistics of effect maps, as in the reference's statistics file (docs/method.md section 4).

Counts exclude the RoI blocks (``pos``: ATE > 0, the block hurts the RoI; ``neg``: ATE < 0, it
supports it; ``zero``), percentages are of the non-RoI blocks, and the histogram counts *all*
blocks including the RoI's (which sit in the central bin), exactly like the reference output.
:func:`bootstrap_interval` is the interval every study reports over images.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from .checks import check_float, check_int
from .defaults import HISTOGRAM_EDGES
from .schema import grid_dims, validate

__all__ = ["statistics", "histogram_labels", "bootstrap_interval", "effect_interval", "holm", "permutation_p"]


def histogram_labels(edges: np.ndarray = HISTOGRAM_EDGES) -> list[str]:
    """Bin labels like the reference's (``"-0.3 to -0.02"``; open ends drop their infinite edge).

    Parameters
    ----------
    edges : array of shape (K + 1,)
        Increasing bin edges; the first and last may be infinite.

    Examples
    --------
    >>> histogram_labels(np.array([-np.inf, -1.0, 1.0, np.inf]))
    ['to -1', '-1 to 1', '1 to']
    """
    def fmt(v: float) -> str:
        return "0" if v == np.nextafter(0.0, 1.0) else f"{v:g}"  # tau = 0's central bin: exact zeros

    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if np.isinf(lo):
            labels.append(f"to {fmt(hi)}")
        elif np.isinf(hi):
            labels.append(f"{fmt(lo)} to")
        else:
            labels.append(f"{fmt(lo)} to {fmt(hi)}")
    return labels


def statistics(ds: xr.Dataset, edges: np.ndarray | None = None) -> xr.Dataset:
    """Support / harm / irrelevant counts and the effect histogram of every map in `ds`.

    Vectorised over the stack dims (model, image, roi, ...). With ``edges=None`` the reference's
    edges are used with the inner edges at +-tau of the result.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects in the schema of :mod:`pdcr_lab.schema` (one map or a stack).
    edges : array of shape (K + 1,), optional
        Histogram bin edges (default: the reference's, see above).

    Returns
    -------
    xarray.Dataset with ``pos``, ``neg``, ``zero`` (the paper's counts of non-zero effects),
    ``pos_pct``, ``neg_pct``, ``zero_pct``, ``histogram`` over a ``bin`` dim, and ``pos_ci`` /
    ``neg_ci``: the harm / support blocks whose confidence interval excludes 0 (``ci_low`` /
    ``ci_high`` of the result, else ate_raw +- 1.96 stderr; absent when the result has neither).

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4, tau=0.02)
    >>> ds["roi_block"][0, 0] = True
    >>> ds["ate"][1, 1] = -2.5                     # one supporting block
    >>> out = statistics(ds)
    >>> int(out.pos), int(out.neg), int(out.zero), round(float(out.neg_pct), 1)
    (0, 1, 2, 33.3)
    >>> out.histogram.values.tolist()              # the RoI block sits in the central bin
    [0, 1, 0, 0, 3, 0, 0, 0, 0]
    >>> ds["ate_raw"][1, 1], ds["stderr"][1, 1] = -2.5, 2.0   # ... but its interval straddles 0
    >>> int(out.neg), int(statistics(ds).neg_ci)
    (1, 0)
    """
    validate(ds)
    tau = float(ds.attrs.get("tau", 0.02))
    if edges is None:
        # The reference's edges with +-tau inside; outer edges that tau swallows are dropped, so the
        # edges keep increasing for any tau (tau > 0.3 merges the +-0.3 bins into the central one).
        outer = HISTOGRAM_EDGES[np.abs(HISTOGRAM_EDGES) > tau]
        # tau = 0: the central bin holds exact zeros only ([0, smallest positive float))
        centre = [-tau, tau] if tau > 0 else [0.0, np.nextafter(0.0, 1.0)]
        edges = np.concatenate([outer[outer < 0], centre, outer[outer > 0]])
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be a 1-D increasing array of at least 2 bin edges, got {edges.tolist()}")
    ate = ds["ate"]
    grid = grid_dims(ate)
    outside = ~ds["roi_block"] if "roi_block" in ds else xr.ones_like(ate, dtype=bool)
    counts = {
        "pos": ((ate > 0) & outside).sum(grid),
        "neg": ((ate < 0) & outside).sum(grid),
        "zero": ((ate == 0) & outside).sum(grid),
    }
    low, high = effect_interval(ds)
    if low is not None:  # effects distinguishable from zero: the interval excludes 0 on the effect's side
        counts["pos_ci"] = ((ate > 0) & (low > 0) & outside).sum(grid)
        counts["neg_ci"] = ((ate < 0) & (high < 0) & outside).sum(grid)
    n = outside.sum(grid)
    out = xr.Dataset(counts)
    for key in ("pos", "neg", "zero"):
        out[f"{key}_pct"] = 100.0 * out[key] / n

    def hist(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(*values.shape[: values.ndim - len(grid)], -1)
        idx = np.searchsorted(edges, flat, side="right") - 1
        idx = np.clip(idx, 0, len(edges) - 2)
        return np.stack([(idx == k).sum(-1) for k in range(len(edges) - 1)], axis=-1)

    out["histogram"] = xr.apply_ufunc(
        hist, ate, input_core_dims=[list(grid)], output_core_dims=[["bin"]], dask="forbidden"
    )
    out = out.assign_coords(bin=histogram_labels(edges), bin_lower=("bin", edges[:-1]), bin_upper=("bin", edges[1:]))
    out.attrs = {"tau": tau}
    return out


#: z of the normal 95% interval used when a result has a standard error but no ci_low / ci_high.
Z95 = 1.959963984540054


def effect_interval(ds: xr.Dataset) -> tuple[xr.DataArray | None, xr.DataArray | None]:
    """The effects' confidence interval: ``ci_low``/``ci_high``, else ate_raw +- 1.96 stderr, else (None, None).

    Parameters
    ----------
    ds : xarray.Dataset
        Effects in the schema of :mod:`pdcr_lab.schema`.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(1, 1), block=4)
    >>> ds["ate_raw"][0, 0], ds["stderr"][0, 0] = 1.0, 0.5
    >>> [round(float(bound[0, 0]), 2) for bound in effect_interval(ds)]
    [0.02, 1.98]
    """
    if "ci_low" in ds and "ci_high" in ds:
        return ds["ci_low"], ds["ci_high"]
    if "stderr" in ds and "ate_raw" in ds:
        return ds["ate_raw"] - Z95 * ds["stderr"], ds["ate_raw"] + Z95 * ds["stderr"]
    return None, None


def _mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(samples[0], axis=axis)


def bootstrap_interval(
    samples: Sequence[Any],
    statistic: Callable[..., Any] = _mean,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """(estimate, lower, upper) of a statistic of independent samples, by the percentile bootstrap.

    Each sample is resampled with replacement on its own (``scipy.stats.bootstrap`` with
    ``paired=False``, ``method="percentile"``). The percentile method is used, not BCa, because
    the samples here are a handful of images (2 to 5): BCa's acceleration comes from a jackknife
    that is unstable or undefined (NaN, with a warning) at that size, and the percentile interval
    keeps the tables comparable with the earlier ones.

    Degenerate samples are handled before scipy sees them: an empty sample gives NaN throughout;
    when every sample is constant (one value, or all equal) the statistic cannot vary, and the
    interval is the estimate itself (scipy would warn and may return NaN); a one-value sample among
    varying ones is passed as two copies of its value, which resamples identically for the
    statistics of means used here.

    Parameters
    ----------
    samples : sequence of array-like
        One array per sample, observations on the last axis (finite values; drop NaNs first).
        Leading axes, the same for every sample, are batch axes: intervals are computed for each.
    statistic : callable
        ``statistic(*samples, axis=-1)``, vectorised: it reduces the last axis and may reduce
        leading batch axes counted from the front (the resampling axis is inserted just before the
        last one). Default: the mean of the first sample.
    n_boot : int
        Bootstrap resamples.
    level : float
        Coverage of the interval, in (0, 1).
    rng : numpy.random.Generator or int or None
        Source of the resampling (seed it for a reproducible interval).

    Returns
    -------
    numpy.ndarray
        The statistic's shape plus a last axis of 3: estimate, lower, upper.

    Examples
    --------
    >>> est, lo, hi = bootstrap_interval([[1.0, 2.0, 3.0, 4.0]], n_boot=200, rng=0)
    >>> float(est), bool(1.0 <= lo <= est <= hi <= 4.0)
    (2.5, True)
    >>> bootstrap_interval([[3.0, 3.0]]).tolist()      # constant: no spread to resample
    [3.0, 3.0, 3.0]
    >>> bootstrap_interval([[]]).tolist()
    [nan, nan, nan]
    """
    n_boot = check_int("n_boot", n_boot, minimum=1)
    if not 0 < check_float("level", level) < 1:
        raise ValueError(f"level={level} must lie in (0, 1)")
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    if not arrays:
        raise ValueError("samples is empty: give at least one sample")
    if any(a.shape[-1] == 0 for a in arrays):
        shape = np.shape(statistic(*[np.zeros((*a.shape[:-1], 1)) for a in arrays], axis=-1))
        return np.full((*shape, 3), np.nan)
    estimate = np.asarray(statistic(*arrays, axis=-1), dtype=np.float64)
    if all(np.ptp(a, axis=-1).max(initial=0.0) == 0 for a in arrays):
        return np.stack([estimate, estimate, estimate], axis=-1)
    arrays = [np.concatenate([a, a], axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    with warnings.catch_warnings():
        # A constant batch entry beside varying ones is fine for the percentile method.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(arrays, statistic, n_resamples=n_boot, vectorized=True, paired=False, axis=-1,
                                 confidence_level=level, method="percentile", rng=rng)
    interval = result.confidence_interval
    return np.stack([estimate, np.asarray(interval.low), np.asarray(interval.high)], axis=-1)


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error); NaN entries are left out.

    Parameters
    ----------
    pvalues : array-like
        One family of p-values (any shape); NaN marks a test that was not run.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, np.nan]).round(3).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat, out = p.ravel(), np.full(p.size, np.nan)
    finite = np.flatnonzero(np.isfinite(flat))
    if finite.size:
        order = finite[np.argsort(flat[finite], kind="stable")]
        scaled = flat[order] * (finite.size - np.arange(finite.size))
        out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out.reshape(p.shape)


def permutation_p(observed: Any, permuted: Any) -> np.ndarray:
    """One-sided permutation p-value ``(1 + #{permuted >= observed}) / (1 + n_perm)``.

    Parameters
    ----------
    observed : array-like
        The statistic on the data (any shape; large values are evidence against the null).
    permuted : array-like
        The statistic under `n_perm` permutations, on a leading axis.

    Examples
    --------
    >>> float(permutation_p(5.0, np.arange(10.0)))
    0.5454545454545454
    """
    observed, permuted = np.asarray(observed, dtype=np.float64), np.asarray(permuted, dtype=np.float64)
    # a relative tolerance so that ties with the observed value count, whatever float error
    tolerance = np.where(np.isfinite(observed), 1e-12 * np.abs(observed), 0.0)
    hits = (permuted >= observed - tolerance).sum(axis=0)
    return (1.0 + hits) / (1.0 + permuted.shape[0])
