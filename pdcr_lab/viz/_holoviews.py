"""Interactive figures of effect maps with holoviews (bokeh backend), for notebooks and the dashboard.

Every function takes effects datasets (:mod:`pdcr_lab.schema`) and returns a holoviews object whose
key and value dimensions name what is drawn, so tests and callers can inspect the data behind a
plot. Colours follow the static figures: red = support (ATE < 0), blue = harm (ATE > 0), white =
irrelevant, green outline = RoI, on a symmetric scale. Images use pixel coordinates: ``x`` is the
column, ``y`` the row, with the y axis inverted so that row 0 is at the top like in an image viewer.

Resources are always inlined (:func:`extension`): plots render without internet access.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..schema import GRID_DIMS, STACK_DIMS, to_pixels, validate
from ..statistics import effect_interval, statistics
from ._maps import split_maps
from ._static import EFFECT_CMAP, OVERLAY_ALPHA, ROI_COLOUR, as_display_image, effect_rgba, symmetric_limit

__all__ = [
    "SIGN_COLOURS",
    "VIEW_WIDTH",
    "holoviews_backend",
    "extension",
    "image_plot",
    "roi_outline",
    "map_image",
    "overlay",
    "side_by_side",
    "radial_profile",
    "composition",
    "histogram",
    "component_heatmap",
    "deletion_curves",
    "method_maps",
]

#: Colours of the three kinds of blocks, consistent with :data:`EFFECT_CMAP`.
SIGN_COLOURS = {"support": "#d7301f", "harm": "#2b6cb0", "irrelevant": "#c8c8c8"}

#: The widest a view may be, in screen pixels: the output area of a notebook in JupyterLab at a
#: 1280-px window with the file browser open (848 px), and the dashboard's results column. Every
#: default size below keeps a view inside it; the browser tests check it.
VIEW_WIDTH = 820
#: Frame width of one map (pixels), so that a map and an overlay, each with its colour bar, fit side by side.
_MAP_SIZE = 260
#: Room next to a frame for the y axis and for a colour bar with its label (pixels, measured in Chromium).
_AXIS, _COLORBAR = 75, 110


def _fitting_width(cols: int, *, colorbar: bool = True) -> int:
    """Frame width of `cols` maps in a row (one colour bar at the row's end) that keeps the row within VIEW_WIDTH."""
    room = VIEW_WIDTH - cols * _AXIS - (_COLORBAR if colorbar else 0)
    return int(max(100, min(_MAP_SIZE, room // cols)))


def extension(*, notebook: bool = True) -> None:
    """Load the bokeh backend with inline resources (no CDN), for holoviews and panel.

    Call it once at the top of a notebook. With ``notebook=False`` only the backend is selected
    (scripts, servers and tests, where nothing is displayed in a notebook).

    Parameters
    ----------
    notebook : bool
        Also load the notebook extensions of holoviews and panel.
    """
    import holoviews as hv

    if notebook:
        import panel as pn

        from ._offline import inline_stylesheets_in_notebooks

        hv.extension("bokeh", inline=True, logo=False)
        pn.extension(inline=True)
        inline_stylesheets_in_notebooks()
    else:
        holoviews_backend()


def holoviews_backend() -> Any:
    """The ``holoviews`` module with the bokeh backend loaded and current (what every element here draws with).

    Examples
    --------
    >>> from pdcr_lab.viz import holoviews_backend
    >>> holoviews_backend().Store.current_backend
    'bokeh'
    """
    import holoviews as hv

    if "bokeh" not in hv.Store.renderers:
        import holoviews.plotting.bokeh  # noqa: F401  (registers the backend)
    if hv.Store.current_backend != "bokeh":
        hv.Store.set_current_backend("bokeh")
    return hv


def _one_map(ds: xr.Dataset, what: str) -> None:
    validate(ds)
    extra = [d for d in ds.ate.dims if d not in GRID_DIMS]
    if extra:
        raise ValueError(f"{what} draws one map; select along {extra} first (e.g. ds.isel({extra[0]}=0))")


def _roi_box(ds: xr.Dataset) -> tuple[int, int, int, int]:
    return tuple(int(ds[k]) for k in ("roi_row", "roi_col", "roi_height", "roi_width"))  # type: ignore[return-value]


def _frame(element: Any, height: int, width: int, title: str = "") -> Any:
    """Image-like axes: pixel coordinates, row 0 at the top, square pixels."""
    return element.opts(
        invert_yaxis=True,
        xlim=(-0.5, width - 0.5),
        ylim=(-0.5, height - 0.5),
        data_aspect=1,
        frame_width=_MAP_SIZE,
        title=title,
        xlabel="x (column)",
        ylabel="y (row)",
    )


def image_plot(image: Any, *, title: str = "image") -> Any:
    """The image as ``hv.RGB`` (colour) or a grey ``hv.Image``; kdims ``x, y`` in pixels.

    Parameters
    ----------
    image : (C, H, W) or (H, W, C) array or tensor in [0, 1]
        The image (one channel is drawn grey).
    title : str
        Plot title.

    Examples
    --------
    >>> type(image_plot(np.zeros((3, 4, 6)))).__name__, type(image_plot(np.zeros((1, 4, 6)))).__name__
    ('RGB', 'Image')
    """
    hv = holoviews_backend()
    pixels = as_display_image(image)
    h, w = pixels.shape[:2]
    xs, ys = np.arange(w), np.arange(h)
    if pixels.ndim == 2:
        element = hv.Image((xs, ys, pixels), kdims=["x", "y"], vdims=["intensity"]).opts(
            cmap="gray", clim=(0, 1), colorbar=False
        )
    else:
        element = hv.RGB((xs, ys, *np.moveaxis(pixels, -1, 0)), kdims=["x", "y"], vdims=["R", "G", "B"])
    return _frame(element, h, w, title)


def roi_outline(box: tuple[int, int, int, int] | xr.Dataset) -> Any:
    """Green rectangle around an RoI ``(row, col, height, width)`` (or the RoI of a result).

    Parameters
    ----------
    box : (row, col, height, width) or xarray.Dataset
        The RoI box in pixels, or an effects dataset whose recorded RoI box is drawn.

    Examples
    --------
    >>> roi_outline((2, 4, 8, 8)).data[["x0", "y0", "x1", "y1"]].values.tolist()   # pixel edges
    [[3.5, 1.5, 11.5, 9.5]]
    """
    hv = holoviews_backend()
    row, col, height, width = _roi_box(box) if isinstance(box, xr.Dataset) else (int(v) for v in box)
    rect = (col - 0.5, row - 0.5, col + width - 0.5, row + height - 0.5)
    return hv.Rectangles([rect], kdims=["x0", "y0", "x1", "y1"]).opts(
        fill_alpha=0, line_color=ROI_COLOUR, line_width=2
    )


def _map_array(ds: xr.Dataset, variable: str) -> xr.DataArray:
    da = to_pixels(ds[[variable, "roi_block"]].assign_attrs(ds.attrs))[variable]
    return da.astype(float).rename(variable)


def map_image(
    ds: xr.Dataset,
    *,
    vmax: float | None = None,
    variable: str = "ate",
    title: str | None = None,
    colorbar: bool = True,
) -> Any:
    """The effect map as an ``hv.Image`` (kdims ``x, y`` in pixels, vdim `variable`) with the RoI.

    Returns an ``hv.Overlay`` of the map and the RoI outline; the map is ``overlay.Image.I``.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map.
    vmax : float, optional
        Half-width of the symmetric colour scale (default max |ATE|; share it between maps).
    variable : {"ate", "ate_raw", "stderr"}
        The block variable drawn (``stderr`` on a sequential scale from 0).
    title : str, optional
        Plot title (default: the method's name).
    colorbar : bool
        Draw the colour bar.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> ds["ate"][0, 1] = -2.0
    >>> plot = map_image(ds)
    >>> plot.Image.I.vdims[0].name, plot.Image.I.data["ate"].shape
    ('ate', (8, 8))
    """
    hv = holoviews_backend()
    _one_map(ds, "map_image")
    da = _map_array(ds, variable)
    units = ds[variable].attrs.get("units", ds.attrs.get("units", ""))
    if variable == "stderr":
        limit = vmax if vmax is not None else symmetric_limit(ds[variable])
        cmap, clim = "viridis", (0.0, limit)
    else:
        limit = vmax if vmax is not None else symmetric_limit(ds[variable])
        cmap, clim = EFFECT_CMAP, (-limit, limit)
    vdim = hv.Dimension(variable, label=variable.upper() if variable == "ate" else variable, unit=units or None)
    image = hv.Image(da, kdims=["x", "y"], vdims=[vdim]).opts(
        cmap=cmap, clim=clim, colorbar=colorbar, tools=["hover"], clabel=f"{variable} [{units}]" if units else variable
    )
    h, w = da.shape
    label = title if title is not None else f"{ds.attrs.get('method', 'pdcr').upper()} map"
    return _frame(image * roi_outline(ds), h, w, label)


def overlay(ds: xr.Dataset, image: Any, *, vmax: float | None = None, alpha: float = OVERLAY_ALPHA,
            title: str = "map over image", colorbar: bool = True) -> Any:
    """Image, effect map (opacity growing with |ATE|, irrelevant blocks transparent) and RoI outline.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map.
    image : (C, H, W) or (H, W, C) array or tensor in [0, 1]
        The explained image.
    vmax : float, optional
        Half-width of the symmetric colour scale (default max |ATE|).
    alpha : float
        Opacity of the strongest effects (:func:`~pdcr_lab.viz.effect_rgba`); weaker ones fade to
        transparent at ATE = 0. Hovering shows the ATE, its standard error and its interval.
    title : str
        Plot title.
    colorbar : bool
        Draw the colour bar.
    """
    hv = holoviews_backend()
    _one_map(ds, "overlay")
    da = _map_array(ds, "ate")
    limit = vmax if vmax is not None else symmetric_limit(ds.ate)
    units = ds.ate.attrs.get("units", ds.attrs.get("units", ""))
    h, w = da.shape
    xs, ys = np.arange(w), np.arange(h)
    rgba = effect_rgba(da.values, limit, alpha)
    colours = hv.RGB((xs, ys, *np.moveaxis(rgba, -1, 0)), kdims=["x", "y"], vdims=["R", "G", "B", "A"])
    # An invisible copy of the values carries the colour bar and the hover (ATE, standard error, interval).
    low, high = _interval_pixels(ds)
    shown = da.where(da != 0).values  # irrelevant blocks: NaN, nothing to hover
    values = hv.Image((xs, ys, shown, _map_array(ds, "stderr").values, low, high), kdims=["x", "y"],
                      vdims=["ate", "stderr", "ci_low", "ci_high"]).opts(
        cmap=EFFECT_CMAP, clim=(-limit, limit), alpha=0, colorbar=colorbar, tools=["hover"],
        clabel=f"ate [{units}]" if units else "ate",
    )
    return _frame(image_plot(image, title="") * colours * values * roi_outline(ds), h, w, title)


def _interval_pixels(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The effects' confidence interval (:func:`~pdcr_lab.statistics.effect_interval`) on the pixel grid."""
    low, high = effect_interval(ds)
    bounds = ds.assign(interval_low=low, interval_high=high)
    return _map_array(bounds, "interval_low").values, _map_array(bounds, "interval_high").values


def side_by_side(
    results: xr.Dataset | Mapping[Any, xr.Dataset],
    *,
    dim: str | None = None,
    image: Any | None = None,
    vmax: float | None = None,
    cols: int = 3,
    width: int | None = None,
) -> Any:
    """Maps next to each other on ONE shared symmetric colour scale (an ``hv.Layout``).

    Parameters
    ----------
    results : Dataset or mapping label -> Dataset
        A stacked effects dataset (one stack dim, or choose it with `dim`) or a mapping
        label -> single-map dataset.
    dim : str, optional
        The stack dim to lay out.
    image : array, optional
        Draw each map over this image (:func:`overlay`) instead of alone.
    vmax : float, optional
        Shared half-width of the colour scale (default: max |ATE| over all maps).
    cols : int
        Maps per row.
    width : int, optional
        Frame width of each map in pixels (default: the widest that keeps a row of `cols` maps
        within :data:`VIEW_WIDTH`); the one colour bar is drawn next to the last map of each row.
    """
    hv = holoviews_backend()
    maps = split_maps(results, dim)
    if not maps:
        raise ValueError("results is empty: nothing to draw")
    limit = vmax if vmax is not None else symmetric_limit(np.concatenate([m.ate.values.ravel() for m in maps.values()]))
    cols = min(cols, len(maps))
    width = width or _fitting_width(cols)
    panels = []
    for k, (label, m) in enumerate(maps.items()):
        bar = k % cols == cols - 1 or k == len(maps) - 1
        panel = overlay(m, image, vmax=limit, title=label, colorbar=bar) if image is not None else map_image(
            m, vmax=limit, title=label, colorbar=bar)
        panels.append(panel.opts(frame_width=width))
    return hv.Layout(panels).cols(cols).opts(shared_axes=True)


def radial_profile(results: xr.Dataset | Mapping[Any, xr.Dataset], *, dim: str | None = None, cumulative: bool = False) -> Any:
    """Radial profile: the share of each map's effect mass per distance ring around the RoI.

    Ring k holds the blocks at distance k-1 < d <= k (in blocks) from the RoI; the mass per ring is
    ``radial_mass`` of :func:`pdcr_lab.strategies.descriptors` (the same profile the strategy labels
    are derived from), divided by the map's total mass ``mass``. A local map puts its mass in the
    first rings, a global one spreads it out.

    Parameters
    ----------
    results : Dataset or mapping label -> Dataset
        One map, a stacked dataset (one stack dim, or choose it with `dim`), or a mapping
        label -> map.
    dim : str, optional
        The stack dim to lay out.
    cumulative : bool
        Plot the cumulative share (reaches 1 at the last ring).

    Returns
    -------
    ``hv.NdOverlay`` of ``hv.Curve`` (kdims ``ring``, vdims ``mass_share``), one per map.
    """
    from ..strategies import descriptors

    hv = holoviews_backend()
    maps = split_maps(results, dim)
    curves = {}
    for label, m in maps.items():
        d = descriptors(m)
        share = d["radial_mass"] / d["mass"].where(d["mass"] > 0)
        if cumulative:
            share = share.cumsum("ring")
        curves[label] = hv.Curve((d.ring.values, share.values), kdims=["ring"], vdims=["mass_share"], label=label).opts(
            xlabel="distance ring k from the RoI [blocks]",
            ylabel="cumulative share of |ATE| mass" if cumulative else "share of |ATE| mass",
            width=520, height=300, tools=["hover"],
        )
    if dim is None and isinstance(results, xr.Dataset):
        dim = next((d for d in results.ate.dims if d in STACK_DIMS), None)
    return hv.NdOverlay(curves, kdims=[dim or "map"]).opts(legend_position="right", title="radial profile")


def _wedges(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Pie slices as polygons (holoviews has no working pie element for bokeh)."""
    total = sum(counts.values())
    slices, start = [], np.pi / 2  # start at 12 o'clock, go clockwise
    for name, n in counts.items():
        if n == 0:
            continue
        sweep = 2 * np.pi * n / total
        angles = np.linspace(start, start - sweep, max(4, int(120 * n / total) + 2))
        xs = np.concatenate([[0.0], np.cos(angles), [0.0]])
        ys = np.concatenate([[0.0], np.sin(angles), [0.0]])
        slices.append({"pie_x": xs, "pie_y": ys, "category": name, "blocks": int(n), "percent": round(100.0 * n / total, 2)})
        start -= sweep
    return slices


def composition(ds: xr.Dataset, *, kind: str = "pie", title: str = "blocks outside the RoI") -> Any:
    """Support / harm / irrelevant blocks (RoI excluded) as a pie (``hv.Polygons``) or ``hv.Bars``.

    Bars: kdims ``category``, vdims ``blocks``. Pie: one polygon per non-empty category, kdims
    ``pie_x, pie_y``, vdims ``category, blocks, percent``. Counts come from :func:`pdcr_lab.statistics`.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map.
    kind : {"pie", "bars"}
        The chart.
    title : str
        Plot title.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> ds["ate"][0, 1], ds["ate"][1, 1] = -2.0, 0.5
    >>> composition(ds, kind="bars").data.values.tolist()
    [['support', 1], ['harm', 1], ['irrelevant', 2]]
    """
    hv = holoviews_backend()
    _one_map(ds, "composition")
    st = statistics(ds)
    counts = {"support": int(st.neg), "harm": int(st.pos), "irrelevant": int(st.zero)}
    if kind == "pie":
        # Own axis names: a pie must never share (link) the x, y ranges of the image plots.
        element = hv.Polygons(_wedges(counts), kdims=["pie_x", "pie_y"], vdims=["category", "blocks", "percent"]).opts(
            color="category", cmap=SIGN_COLOURS, line_color="white", data_aspect=1, frame_width=200,
            xaxis=None, yaxis=None, show_grid=False, tools=["hover"], show_legend=True, legend_position="right",
            xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), toolbar=None,
        )
    elif kind == "bars":
        element = hv.Bars(list(counts.items()), kdims=["category"], vdims=["blocks"]).opts(
            color="category", cmap=SIGN_COLOURS, width=320, height=300, tools=["hover"], show_legend=False
        )
    else:
        raise ValueError(f"kind={kind!r} is not supported; expected one of ['pie', 'bars']")
    return element.opts(title=title)


def histogram(ds: xr.Dataset, *, title: str = "ATE histogram (all blocks)") -> Any:
    """The reference's effect histogram as ``hv.Bars`` (kdims ``bin``, vdims ``blocks``, ``sign``).

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map (:func:`pdcr_lab.statistics.statistics` gives the bins).
    title : str
        Plot title.
    """
    hv = holoviews_backend()
    _one_map(ds, "histogram")
    st = statistics(ds)
    lower, upper = st.bin_lower.values, st.bin_upper.values
    # The central bin (-tau, tau) straddles 0: irrelevant; every other bin lies on one side of 0.
    sign = np.where(upper <= 0, "support", np.where(lower >= 0, "harm", "irrelevant"))
    data = list(zip(st.bin.values.tolist(), st.histogram.values.astype(int).tolist(), sign.tolist()))
    return hv.Bars(data, kdims=["bin"], vdims=["blocks", "sign"]).opts(
        color="sign", cmap=SIGN_COLOURS, xrotation=45, width=380, height=300, tools=["hover"], title=title, show_legend=False,
        xlabel=f"ATE [{ds.attrs.get('units', '')}]",
    )


def component_heatmap(report: xr.Dataset, *, dataset: str | None = None, title: str = "stage-by-stage effects") -> Any:
    """Component effects as ``hv.HeatMap`` (kdims ``layer, model``, vdims ``ate``) on one symmetric scale.

    A report with several datasets gives one heat map per dataset (an ``hv.Layout``, one column,
    each titled with its dataset) unless `dataset` picks one; a report of one dataset gives one
    ``hv.HeatMap``. Rows are at least 24 px high, so the stage names and the models stay readable.

    Parameters
    ----------
    report : xarray.Dataset
        ``ate`` with dims (model, [dataset], [image], layer) (e.g. the components report); images
        are averaged.
    dataset : str, optional
        Draw this dataset only (default: all of them).
    title : str
        Plot title (the dataset's name is added when there are several).
    """
    hv = holoviews_backend()
    ate = report["ate"]
    if "image" in ate.dims:
        ate = ate.mean("image")
    if "model" not in ate.dims:
        ate = ate.expand_dims(model=[str(report.attrs.get("model", "model"))])
    if dataset is not None and "dataset" in ate.dims:
        ate = ate.sel(dataset=dataset)
    finite = ate.values[np.isfinite(ate.values)]
    limit = symmetric_limit(finite) if finite.size else 1.0  # one scale over every dataset drawn
    units = report["ate"].attrs.get("units", report.attrs.get("units", ""))

    def heatmap(one: xr.DataArray, label: str) -> Any:
        one = one.transpose("model", "layer")
        rows = [(str(layer), str(model), float(one.sel(model=model, layer=layer)))
                for model in one["model"].values for layer in one["layer"].values]
        return hv.HeatMap(rows, kdims=["layer", "model"], vdims=["ate"]).opts(
            cmap=EFFECT_CMAP, clim=(-limit, limit), colorbar=True, xrotation=60, tools=["hover"],
            frame_width=min(520, 40 * one.sizes["layer"] + 40), frame_height=max(120, 24 * one.sizes["model"]),
            title=label, clabel=f"ATE [{units}]" if units else "ATE", clipping_colors={"NaN": "#d9d9d9"},
        )

    if "dataset" not in ate.dims:
        return heatmap(ate, title)
    maps = [heatmap(ate.sel(dataset=name), f"{title}: {name}") for name in ate["dataset"].values]
    return maps[0] if len(maps) == 1 else hv.Layout(maps).cols(1).opts(shared_axes=False)


def deletion_curves(curves: xr.Dataset) -> Any:
    """Deletion / insertion curves: an ``hv.Layout`` (one panel per curve and policy) of
    ``hv.NdOverlay`` with one ``hv.Curve`` per method (kdims ``fraction``, vdims ``outcome``).

    The panels share one outcome axis (the same y range), so a difference between panels is a
    difference of the curves, not of the scales; the legend (each method with its AUC) is drawn
    once per row, beside its last panel.

    Parameters
    ----------
    curves : xarray.Dataset
        Output of :func:`pdcr_lab.faithfulness.deletion_insertion`; the labels carry each AUC.
    """
    hv = holoviews_backend()
    panels = []
    units = curves["outcome"].attrs.get("units", "DSC points")
    fraction = curves["fraction"].values
    policies = curves["policy"].values
    values = curves["outcome"].values
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    pad = 0.05 * (high - low or 1.0)
    for kind in curves["curve"].values:
        for k, policy in enumerate(policies):
            lines = {}
            for method in curves["method"].values:
                outcome = curves["outcome"].sel({"method": method, "curve": kind, "policy": policy}).values
                auc = float(curves["auc"].sel({"method": method, "curve": kind, "policy": policy}))
                lines[f"{method} ({auc:.2f})"] = hv.Curve((fraction, outcome), kdims=["fraction"], vdims=["outcome"]).opts(
                    line_dash="dashed" if str(method) == "random" else "solid", tools=["hover"],
                )
            last = k == len(policies) - 1
            panels.append(hv.NdOverlay(lines, kdims=["method"]).opts(
                title=f"{kind}, {policy}", xlabel="fraction of blocks", ylabel=f"RoI outcome [{units}]",
                frame_width=150, frame_height=170, xticks=[0, 0.5, 1], ylim=(low - pad, high + pad),
                show_legend=last, legend_position="right",
            ))
    return hv.Layout(panels).cols(len(policies)).opts(shared_axes=True)


def method_maps(results: Mapping[Any, xr.Dataset], *, cols: int = 4, width: int | None = None) -> Any:
    """Maps of different explainers (own units and sign) side by side, in the package's colours.

    Each map is turned into support scores (``support_sign * ate``, the baselines' convention:
    larger = supports the RoI) and scaled by its own largest magnitude, for colour only: red =
    supports, blue = hurts, on [-1, 1]. Returns an ``hv.Layout`` of ``hv.Image`` overlays whose vdim
    is ``relative_support``.

    Parameters
    ----------
    results : mapping label -> Dataset
        One map per explainer (each with its ``support_sign``).
    cols : int
        Maps per row.
    width : int, optional
        Frame width of each map in pixels (default: a row of `cols` maps fits :data:`VIEW_WIDTH`).
    """
    hv = holoviews_backend()
    panels = []
    cols = max(1, min(cols, len(results)))
    width = width or _fitting_width(cols)
    for k, (label, ds) in enumerate(results.items()):
        _one_map(ds, "method_maps")
        sign = int(ds.attrs.get("support_sign", -1))
        scores = sign * ds["ate"].astype(float)
        limit = float(np.nanmax(np.abs(scores.values))) or 1.0
        # Shown as -score so that the diverging map puts support in red, as for PdCR maps.
        shown = to_pixels((-scores / limit).rename("relative_support").to_dataset().assign_attrs(block=ds.attrs["block"]))
        da = shown["relative_support"]
        bar = k % cols == cols - 1 or k == len(results) - 1
        image = hv.Image(da, kdims=["x", "y"], vdims=["relative_support"]).opts(
            cmap=EFFECT_CMAP, clim=(-1, 1), colorbar=bar, tools=["hover"], clabel="support (red) / harm, scaled per map",
        )
        h, w = da.shape
        panels.append(_frame(image * roi_outline(ds), h, w, str(label)).opts(frame_width=width))
    return hv.Layout(panels).cols(cols)
