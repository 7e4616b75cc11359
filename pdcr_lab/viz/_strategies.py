"""Figure of the strategies report: radial profiles, strategy shares, d50 and the dataset shift."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["STRATEGY_COLOURS", "strategies_figure"]

#: One colour per label of :func:`pdcr_lab.strategies.classify`.
STRATEGY_COLOURS = {
    "local": "#d95f02",
    "global": "#1b9e77",
    "sequential": "#7570b3",
    "mixed": "#bdbdbd",
    "no effect": "#f0f0f0",
}


def _radial_share(result: xr.DataArray) -> xr.DataArray:
    """Mean over maps of the share of the effect mass per distance ring (maps without effect skipped)."""
    share = result["radial_mass"] / result["mass"].where(result["mass"] > 0)
    extra = [d for d in share.dims if d not in ("model", "dataset", "ring")]
    return share.mean(extra, skipna=True)


def strategies_figure(result: xr.Dataset, summary: xr.Dataset, *, title: str | None = None):
    """Radial profiles per architecture and dataset, strategy shares, d50 and the shift between datasets.

    Parameters
    ----------
    result : xarray.Dataset
        Labelled maps (:func:`pdcr_lab.strategies.label_maps`) with dims (model, dataset, image).
    summary : xarray.Dataset
        :func:`pdcr_lab.strategies.summarize` of `result`.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure with one column per dataset (radial profile of the effect mass, then
    strategy shares per architecture) and a third column (d50 and the between-dataset TVD with their
    bootstrap intervals).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    models = [str(m) for m in summary.model.values]
    sets = [str(d) for d in summary.dataset.values]
    n_models = len(models)
    cmap = plt.get_cmap("tab20" if n_models > 10 else "tab10")
    colours = {m: cmap(i % cmap.N) for i, m in enumerate(models)}
    fig, axes = plt.subplots(2, len(sets) + 1, figsize=(5.0 * (len(sets) + 1), 4.2 + 0.22 * n_models),
                             constrained_layout=True, squeeze=False)
    radial = _radial_share(result)
    # Rings no RoI of the result can reach (beyond the farthest block) would only add flat zeros.
    has_mass = result["radial_mass"] > 0
    reached = np.flatnonzero(np.asarray(has_mass.any([d for d in has_mass.dims if d != "ring"])))
    radial = radial.isel(ring=slice(0, max(int(reached.max()) + 1 if reached.size else 1, 3)))
    rings = radial.ring.values
    for j, d in enumerate(sets):
        ax = axes[0, j]
        for m in models:
            ax.plot(rings, radial.sel(model=m, dataset=d).values, marker="o", ms=3, lw=1.4, color=colours[m], label=m)
        ax.set_xlabel("distance ring k from the RoI (blocks; k-1 < d <= k)")
        ax.set_ylabel("share of the effect mass")
        ax.set_title(f"{d}: radial profile (mean over maps)")
        ax.set_xticks(rings)
        ax.grid(alpha=0.3)
        ax = axes[1, j]
        left = np.zeros(n_models)
        shares = summary["share"].sel(dataset=d, stat="estimate")
        for lab in summary.label.values:
            values = shares.sel(label=lab).values
            ax.barh(np.arange(n_models), values, left=left, color=STRATEGY_COLOURS.get(str(lab), "k"),
                    edgecolor="white", label=str(lab))
            left += values
        for i in np.flatnonzero(np.isnan(left)):
            ax.text(0.02, i, "not explained", va="center", fontsize=8, color="0.4")
        ax.set_yticks(np.arange(n_models), models)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of maps")
        ax.set_title(f"{d}: strategy labels")
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper right")
    handles, names = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=8, frameon=False,
               title="strategy label")
    ax = axes[0, -1]
    offsets = np.linspace(-0.15, 0.15, len(sets)) if len(sets) > 1 else [0.0]
    markers = ["o", "s", "^", "D"]
    for k, d in enumerate(sets):
        values = summary["d50"].sel(dataset=d)
        est = values.sel(stat="estimate").values
        err = np.abs(np.stack([est - values.sel(stat="lower").values, values.sel(stat="upper").values - est]))
        ax.errorbar(est, np.arange(n_models) + offsets[k], xerr=np.nan_to_num(err), fmt=markers[k % 4], ms=4,
                    capsize=2, label=d)
    ax.set_yticks(np.arange(n_models), models)
    ax.invert_yaxis()
    ax.set_xlabel("d50 (blocks from the RoI holding half the mass)")
    ax.set_title("d50 with bootstrap interval")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    ax = axes[1, -1]
    if "tvd" in summary:
        est = summary["tvd"].sel(stat="estimate").values
        err = np.abs(np.stack([est - summary["tvd"].sel(stat="lower").values,
                               summary["tvd"].sel(stat="upper").values - est]))
        ax.errorbar(est, np.arange(n_models), xerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2, color="k")
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(f"shift {sets[1]} vs {sets[0]}: TVD of labels")
        ax.set_xlabel("total variation distance")
        ax.grid(alpha=0.3, axis="x")
    else:
        ax.set_axis_off()
    ax.set_yticks(np.arange(n_models), models)
    ax.invert_yaxis()
    if title:
        fig.suptitle(title)
    return fig
