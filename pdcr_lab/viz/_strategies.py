"""Figure of the strategies report: radial profiles, strategy shares, d50 and the dataset shift (paper style)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._paper import Layout

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


def strategies_figure(result: xr.Dataset, summary: xr.Dataset, *, title: str | None = None,
                      layout: Layout = "double") -> Figure:
    """Radial profiles per architecture and dataset, strategy shares, d50 and the shift between datasets.

    Drawn in the paper style (:data:`~pdcr_lab.viz.PAPER_RC`) at a journal width: the radial
    profiles (one panel per dataset, the models' legend beside or under them) above the panels with
    one row per model (strategy shares per dataset, d50, the between-dataset TVD), which share the
    model axis and wrap into more rows when they do not fit side by side.

    Parameters
    ----------
    result : xarray.Dataset
        Labelled maps (:func:`pdcr_lab.strategies.label_maps`) with dims (model, dataset, image).
    summary : xarray.Dataset
        :func:`pdcr_lab.strategies.summarize` of `result`.
    title : str, optional
        Figure title.
    layout : {"single", "double"}
        Width: one column (3.5 in) or two (7.2 in).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.lines import Line2D

    from ._paper import (
        _WIDER,
        PAPER_RC,
        _grid,
        _legend_columns,
        _paper_figure,
        _text_width,
        _titles_height,
        _width,
        _wrap,
        paper_style,
    )

    models = [str(m) for m in summary.model.values]
    sets = [str(d) for d in summary.dataset.values]
    n_models = len(models)
    width = _width(layout)
    small, title_size = PAPER_RC["legend.fontsize"], PAPER_RC["axes.titlesize"]
    # Top: radial profiles, the models' legend to the right (double) or under them (single).
    beside = layout == "double"
    legend_width = max(_text_width(m, small) for m in models) + 0.5
    model_cols = 1 if beside else _legend_columns(models, width - 0.2)
    top_rows, top_cols = _grid(len(sets), width - (legend_width if beside else 0), 1.6)
    top_panel = ((width - (legend_width if beside else 0)) - 0.5) / top_cols
    legend_rows = -(-n_models // model_cols)
    top_height = top_rows * (1.4 + 0.2 + 0.35)  # plot, title, tick labels and x label
    if not beside:
        top_height += legend_rows * small * 1.6 / 72 + 0.1
    # Bottom: one row per model in every panel; the first column carries the model names.
    names = max(_text_width(m, PAPER_RC["ytick.labelsize"]) for m in models) + 0.15
    has_tvd = "tvd" in summary
    bottom = len(sets) + 1 + has_tvd
    rows, cols = _grid(bottom, width - names, 1.3)
    bottom_panel = (width - names - 0.1) / cols
    strategies = [str(lab) for lab in summary.label.values]
    keys = strategies + [f"d50, {d}" for d in sets]
    key_cols = _legend_columns(keys, width - 0.2)
    key_height = -(-len(keys) // key_cols) * small * 1.6 / 72 + 0.1
    bottom_height = rows * (max(0.14 * n_models, 1.0) + 0.2 + 0.45) + key_height
    title = _wrap(title, width - 0.1, PAPER_RC["figure.titlesize"]) if title else None
    height = top_height + bottom_height + _titles_height(title, None) + 0.1
    radial = _radial_share(result)
    # Rings no RoI of the result can reach (beyond the farthest block) would only add flat zeros.
    has_mass = result["radial_mass"] > 0
    reached = np.flatnonzero(np.asarray(has_mass.any([d for d in has_mass.dims if d != "ring"])))
    radial = radial.isel(ring=slice(0, max(int(reached.max()) + 1 if reached.size else 1, 3)))
    rings = radial.ring.values

    def fit(text: str, panel: float, size: float = title_size) -> str:
        return _wrap(text, panel - 0.05, size)

    with paper_style():
        import matplotlib.pyplot as plt

        cmap = plt.get_cmap("tab20" if n_models > 10 else "tab10")
        colours = {m: cmap(i % cmap.N) for i, m in enumerate(models)}
        fig = _paper_figure(layout, height, advice=f"draw fewer models or datasets per figure{_WIDER[layout]}")
        upper, lower = fig.subfigures(2, 1, height_ratios=[top_height, bottom_height])
        axes = list(upper.subplots(top_rows, top_cols, sharey=True, squeeze=False).ravel())
        for ax in axes[len(sets):]:
            ax.remove()
        for ax, d in zip(axes, sets):
            for m in models:
                ax.plot(rings, radial.sel(model=m, dataset=d).values, marker="o", ms=2.5, lw=1.0, color=colours[m],
                        label=m)
            ax.set_xlabel(fit("distance ring k from the RoI (blocks)", top_panel, PAPER_RC["axes.labelsize"]))
            ax.set_title(fit(f"{d}: radial profile", top_panel))
            ax.set_xticks(rings)
            ax.grid(alpha=0.3, lw=0.5)
        axes[0].set_ylabel("share of the effect mass")
        handles, labels = axes[0].get_legend_handles_labels()
        upper.legend(handles, labels, loc="outside right upper" if beside else "outside lower center", ncol=model_cols,
                     frameon=False)

        panels = list(lower.subplots(rows, cols, sharey=True, squeeze=False).ravel())
        for ax in panels[bottom:]:
            ax.remove()
        y = np.arange(n_models)
        for ax, d in zip(panels, sets):
            left = np.zeros(n_models)
            shares = summary["share"].sel(dataset=d, stat="estimate")
            for lab in strategies:
                values = shares.sel(label=lab).values
                ax.barh(y, values, left=left, color=STRATEGY_COLOURS.get(lab, "k"), edgecolor="white", lw=0.4,
                        label=lab)
                left += values
            for i in np.flatnonzero(np.isnan(left)):
                ax.text(0.02, i, "not explained", va="center", fontsize=small, color="0.4")
            ax.set_xlim(0, 1)
            ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
            ax.set_xlabel("share of maps")
            ax.set_title(fit(f"{d}: strategy labels", bottom_panel))
        ax = panels[len(sets)]
        offsets = np.linspace(-0.15, 0.15, len(sets)) if len(sets) > 1 else [0.0]
        markers = ["o", "s", "^", "D"]
        for k, d in enumerate(sets):
            values = summary["d50"].sel(dataset=d)
            est = values.sel(stat="estimate").values
            err = np.abs(np.stack([est - values.sel(stat="lower").values, values.sel(stat="upper").values - est]))
            ax.errorbar(est, y + offsets[k], xerr=np.nan_to_num(err), fmt=markers[k % 4], ms=3, capsize=1.5, lw=0.8,
                        color="k", mfc="white" if k else "k")
        ax.set_xlabel(fit("d50 (blocks from the RoI)", bottom_panel, PAPER_RC["axes.labelsize"]))
        ax.set_title(fit("d50, bootstrap interval", bottom_panel))
        ax.grid(alpha=0.3, axis="x", lw=0.5)
        if has_tvd:
            ax = panels[len(sets) + 1]
            est = summary["tvd"].sel(stat="estimate").values
            err = np.abs(np.stack([est - summary["tvd"].sel(stat="lower").values,
                                   summary["tvd"].sel(stat="upper").values - est]))
            ax.errorbar(est, y, xerr=np.nan_to_num(err), fmt="o", ms=3, capsize=1.5, lw=0.8, color="k")
            ax.set_xlim(-0.02, 1.02)
            ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
            ax.set_title(fit(f"shift {sets[1]} vs {sets[0]}: TVD of labels", bottom_panel))
            ax.set_xlabel(fit("total variation distance", bottom_panel, PAPER_RC["axes.labelsize"]))
            ax.grid(alpha=0.3, axis="x", lw=0.5)
        panels[0].set_yticks(y, models)
        panels[0].set_ylim(n_models - 0.5, -0.5)  # first model on top (shared by every panel of the row)
        # One key for the bottom: the strategy colours and the datasets' d50 markers.
        handles = panels[0].get_legend_handles_labels()[0] + [
            Line2D([], [], ls="none", marker=markers[k % 4], ms=3, color="k", mfc="white" if k else "k")
            for k in range(len(sets))]
        lower.legend(handles, keys, loc="outside lower center", ncol=key_cols,
                     frameon=False)
        if title:
            fig.suptitle(title)
    return fig
