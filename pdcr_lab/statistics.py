"""Summary statistics of effect maps, as in the reference's statistics file (docs/method.md section 4).

Counts exclude the RoI blocks (``pos``: ATE > 0, the block hurts the RoI; ``neg``: ATE < 0, it
supports it; ``zero``), percentages are of the non-RoI blocks, and the histogram counts *all*
blocks including the RoI's (which sit in the central bin), exactly like the reference output.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .defaults import HISTOGRAM_EDGES
from .schema import GRID_DIMS, validate

__all__ = ["statistics", "histogram_labels"]


def histogram_labels(edges: np.ndarray = HISTOGRAM_EDGES) -> list[str]:
    """Bin labels like the reference's (``"-0.3 to -0.02"``; open ends drop their infinite edge)."""
    def fmt(v: float) -> str:
        return f"{v:g}"

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

    Returns
    -------
    xarray.Dataset with ``pos``, ``neg``, ``zero`` (counts), ``pos_pct``, ``neg_pct``,
    ``zero_pct`` and ``histogram`` over a ``bin`` dim.
    """
    validate(ds)
    if edges is None:
        tau = float(ds.attrs.get("tau", 0.02))
        edges = HISTOGRAM_EDGES.copy()
        edges[4], edges[5] = -tau, tau
    ate = ds["ate"]
    outside = ~ds["roi_block"] if "roi_block" in ds else xr.ones_like(ate, dtype=bool)
    counts = {
        "pos": ((ate > 0) & outside).sum(GRID_DIMS),
        "neg": ((ate < 0) & outside).sum(GRID_DIMS),
        "zero": ((ate == 0) & outside).sum(GRID_DIMS),
    }
    n = outside.sum(GRID_DIMS)
    out = xr.Dataset(counts)
    for key in ("pos", "neg", "zero"):
        out[f"{key}_pct"] = 100.0 * out[key] / n

    def hist(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(*values.shape[:-2], -1)
        idx = np.searchsorted(edges, flat, side="right") - 1
        idx = np.clip(idx, 0, len(edges) - 2)
        return np.stack([(idx == k).sum(-1) for k in range(len(edges) - 1)], axis=-1)

    out["histogram"] = xr.apply_ufunc(
        hist, ate, input_core_dims=[list(GRID_DIMS)], output_core_dims=[["bin"]], dask="forbidden"
    )
    out = out.assign_coords(bin=histogram_labels(edges), bin_lower=("bin", edges[:-1]), bin_upper=("bin", edges[1:]))
    out.attrs = {"tau": float(edges[5])}
    return out
