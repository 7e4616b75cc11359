"""Paper figures: one matplotlib style, shared colour scales, and files as PDF, SVG and 300-dpi PNG.

:func:`paper_style` fixes fonts and sizes for every figure made inside it, so the report's figures
look alike whatever produced them (:func:`maps_figure`, :func:`curves_figure`,
:func:`components_figure`, or the static figures of :mod:`pdcr_lab.viz`). Colours follow the package
convention: red = support (ATE < 0), blue = harm, white = 0, green = RoI, symmetric scales.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import GRID_DIMS, to_pixels
from ._maps import split_maps
from ._static import EFFECT_CMAP, ROI_COLOUR, as_display_image, effect_rgba, symmetric_limit

__all__ = ["PAPER_RC", "paper_style", "save_figure", "maps_figure", "curves_figure", "components_figure"]

#: Matplotlib settings of every paper figure: one font, small sizes, text kept as text in PDF/SVG.
PAPER_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "figure.dpi": 100,
}


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Context in which figures are made with :data:`PAPER_RC` (restored afterwards)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    with matplotlib.rc_context(PAPER_RC):
        yield


def save_figure(fig: Any, stem: str, folder: str | os.PathLike, formats: Sequence[str] = ("pdf", "svg", "png"), dpi: int = 300) -> list[Path]:
    """Write `fig` as ``<folder>/<stem>.<format>`` for every format (PNG at `dpi`); returns the paths.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    stem : str
        File name without the extension.
    folder : str or os.PathLike
        Destination folder (created when missing).
    formats : sequence of str
        Matplotlib output formats; the files carry no date, so re-running rewrites identical files.
    dpi : int
        Resolution of raster formats.

    Examples
    --------
    >>> import tempfile
    >>> import matplotlib.pyplot as plt
    >>> fig = plt.figure()
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     [path.name for path in save_figure(fig, "demo", folder, formats=("svg", "png"))]
    ['demo.svg', 'demo.png']
    >>> plt.close(fig)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{stem}.{fmt}"
        # Fixed metadata: re-running the notebook rewrites identical files (no date in them).
        metadata = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}, "png": {"Software": None}}.get(fmt)
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
        paths.append(path)
    return paths


def maps_figure(
    results: xr.Dataset | Mapping[Any, xr.Dataset],
    image: Any | None = None,
    *,
    vmax: float | None = None,
    cols: int | None = None,
    panel_size: float = 1.6,
    title: str | None = None,
    over_image: bool = False,
):
    """Effect maps in a grid on ONE symmetric colour scale, with one colour bar.

    Parameters
    ----------
    results : Dataset or mapping label -> Dataset
        A map, a stack along one dim, or a mapping label -> map (see :func:`split_maps`).
    image : (C, H, W) or (H, W, C) array, optional
        Drawn first, with the RoI of the first map.
    vmax : float, optional
        Half-width of the shared scale (default: max |ATE| over all maps).
    cols : int, optional
        Panels per row (default: all panels, at most 6).
    panel_size : float
        Side of one panel in inches.
    title : str, optional
        Figure title.
    over_image : bool
        Draw the maps over the image (irrelevant blocks transparent) instead of alone.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> a = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> fig = maps_figure({"pdcr": a, "occlusion": a}, np.zeros((1, 8, 8)), cols=3)
    >>> [ax.get_title() for ax in fig.axes[:3]]
    ['image and RoI', 'pdcr', 'occlusion']
    >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    maps = split_maps(results)
    if not maps:
        raise ValueError("results is empty: nothing to draw")
    for label, ds in maps.items():
        extra = [d for d in ds.ate.dims if d not in GRID_DIMS]
        if extra:
            raise ValueError(f"map {label!r} has extra dims {extra}; select one map per panel")
    limit = vmax if vmax is not None else symmetric_limit(np.concatenate([m.ate.values.ravel() for m in maps.values()]))
    panels = len(maps) + (image is not None)
    cols = cols or min(panels, 6)
    rows = int(np.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols + 0.7, panel_size * rows + 0.35), squeeze=False,
                             constrained_layout=True)
    flat = list(axes.ravel())
    rgb = as_display_image(image) if image is not None else None

    def outline(ax, ds):
        r, c, h, w = (int(ds[k]) for k in ("roi_row", "roi_col", "roi_height", "roi_width"))
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, ec=ROI_COLOUR, lw=1.2))
        ax.set_xticks([])
        ax.set_yticks([])

    if rgb is not None:
        ax = flat.pop(0)
        ax.imshow(rgb, cmap="gray" if rgb.ndim == 2 else None)
        ax.set_title("image and RoI")
        outline(ax, next(iter(maps.values())))
    mappable = None
    for ax, (label, ds) in zip(flat, maps.items()):
        pixels = to_pixels(ds)["ate"].values
        if rgb is not None and over_image:
            ax.imshow(rgb, cmap="gray" if rgb.ndim == 2 else None)
            ax.imshow(effect_rgba(pixels, limit))
            mappable = ScalarMappable(Normalize(-limit, limit), EFFECT_CMAP)  # the colour bar: full colours
        else:
            mappable = ax.imshow(pixels, cmap=EFFECT_CMAP, vmin=-limit, vmax=limit)
        ax.set_title(label)
        outline(ax, ds)
    for ax in flat[len(maps):]:
        ax.axis("off")
    units = next(iter(maps.values())).attrs.get("units", "")
    fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, label=f"ATE [{units}]  (red supports, blue hurts)")
    if title:
        fig.suptitle(title)
    return fig


def curves_figure(curves: xr.Dataset, *, title: str | None = None):
    """Deletion / insertion curves (rows: curve, columns: policy), one line per method.

    One legend for all panels; the areas under the curves are in ``curves["auc"]`` (tabulate them
    next to the figure).

    Parameters
    ----------
    curves : xarray.Dataset
        Output of :func:`pdcr_lab.faithfulness.deletion_insertion` (``outcome`` over method, policy,
        curve, step, with the ``fraction`` coordinate).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    kinds, policies = list(curves["curve"].values), list(curves["policy"].values)
    fig, axes = plt.subplots(len(kinds), len(policies), figsize=(2.3 * len(policies) + 0.4, 2.0 * len(kinds) + 0.3),
                             squeeze=False, constrained_layout=True, sharex=True)
    fraction = curves["fraction"].values
    for i, kind in enumerate(kinds):
        for j, policy in enumerate(policies):
            ax = axes[i, j]
            for method in curves["method"].values:
                values = curves["outcome"].sel({"method": method, "curve": kind, "policy": policy}).values
                style = {"color": "0.55", "ls": "--"} if str(method) == "random" else {}
                ax.plot(fraction, values, label=str(method), **style)
            ax.set_title(f"{kind}, {policy} replacement")
            ax.set_xlabel("fraction of blocks")
            ax.set_ylabel(f"RoI outcome [{curves['outcome'].attrs.get('units', 'DSC points')}]")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def components_figure(report: xr.Dataset, *, title: str | None = None):
    """Stage-by-stage effects: a heat map of ATE (rows: models, columns: stages) per dataset.

    Parameters
    ----------
    report : xarray.Dataset
        ``ate`` with dims (model, [dataset], [image], layer), e.g. from
        :func:`pdcr_lab.studies.components_study`; images are averaged, missing stages are grey.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    ate = report["ate"]
    if "image" in ate.dims:
        ate = ate.mean("image")
    sets = list(ate["dataset"].values) if "dataset" in ate.dims else [None]
    limit = symmetric_limit(ate.values[np.isfinite(ate.values)]) if np.isfinite(ate.values).any() else 1.0
    fig, axes = plt.subplots(1, len(sets), figsize=(0.42 * ate.sizes["layer"] * len(sets) + 1.6, 0.32 * ate.sizes["model"] + 1.3),
                             squeeze=False, constrained_layout=True)
    mappable = None
    for ax, d in zip(axes[0], sets):
        values = (ate.sel(dataset=d) if d is not None else ate).transpose("model", "layer")
        masked = np.ma.masked_invalid(values.values)
        mappable = ax.imshow(masked, cmap=EFFECT_CMAP, vmin=-limit, vmax=limit, aspect="auto")
        ax.set_facecolor("0.85")
        ax.set_xticks(range(values.sizes["layer"]), [str(v) for v in values["layer"].values], rotation=60, ha="right")
        ax.set_yticks(range(values.sizes["model"]), [str(v) for v in values["model"].values])
        ax.set_title(str(d) if d is not None else "stage effects")
    units = report["ate"].attrs.get("units", report.attrs.get("units", "DSC points"))
    fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.85, label=f"ATE [{units}]")
    if title:
        fig.suptitle(title)
    return fig
