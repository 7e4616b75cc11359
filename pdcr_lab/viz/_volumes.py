"""Views of 3-D (volumetric) effect maps: orthogonal slices, signed maximum-intensity projections, a paper
figure and a 3-D viewer.

A 3-D effects dataset is a 2-D one (:mod:`pdcr_lab.schema`) whose grid dims are
``("block_z", "block_y", "block_x")``, with coordinates ``z_start, y_start, x_start``, the RoI mask over
``("z", "y", "x")``, the RoI box ``roi_z, roi_row, roi_col, roi_depth, roi_height, roi_width`` and the
block sides in ``attrs["block_shape"]`` (JSON ``"[bz, by, bx]"``). Everything is drawn in voxel
coordinates with index 0 at the top of each plane, like the 2-D views:

=========  ===============  ======================  ================
plane      normal           horizontal axis         vertical axis
=========  ===============  ======================  ================
axial      z                x (column)              y (row)
coronal    y                x (column)              z (slice)
sagittal   x                y (row)                 z (slice)
=========  ===============  ======================  ================

Colours follow the 2-D views: red = the block supports the RoI (ATE < 0), blue = it hurts it, white or
transparent = irrelevant, green = the RoI, on one symmetric scale (:func:`~pdcr_lab.viz.symmetric_limit`);
effects are normalised for colour only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from ..schema import GRID_DIMS_3D, STACK_DIMS, block_shape, validate
from ._holoviews import _AXIS, _COLORBAR, _MAP_SIZE, VIEW_WIDTH, holoviews_backend
from ._static import (
    EFFECT_CMAP,
    OVERLAY_ALPHA,
    ROI_COLOUR,
    effect_rgba,
    settings_caption,
    symmetric_limit,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._paper import Layout

__all__ = [
    "max_projection",
    "niivue_view",
    "orthoslices",
    "signed_max_projection",
    "volume_figure",
]

_AXES = ("z", "y", "x")
#: plane name and the (horizontal, vertical) voxel axes of the plane normal to each axis.
_PLANES: dict[str, tuple[str, tuple[str, str]]] = {
    "z": ("axial", ("x", "y")),
    "y": ("coronal", ("x", "z")),
    "x": ("sagittal", ("y", "z")),
}
_VARIABLES = ("ate", "ate_raw", "stderr")
#: Axis labels of the interactive planes.
_LABELS = {"x": "x (column)", "y": "y (row)", "z": "z (slice)"}
#: The ipyniivue release the 3-D view was written and checked against.
_NIIVUE_VERSION = "2.4.4"
#: NiiVue's colour maps for (support, harm): light at weak effects (yellow, cyan), red and blue at the strongest.
#: (Its plain "red"/"blue" start from black, which darkens the image under weak effects.)
_NIIVUE_COLOURS = ("afni_reds_inv", "afni_blues_inv")

Axis = Literal["z", "y", "x"]


# -- checks at the boundary ---------------------------------------------------------------------------------
def _volume_map(ds: Any, what: str, *, var: str = "ate", argument: str = "ds") -> xr.Dataset:
    """`ds` if it is ONE 3-D effects map holding `var`, else a ValueError naming `argument` and its dims."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{what}: {argument} must be an xarray.Dataset of 3-D effects, got {type(ds).__name__}")
    if var not in _VARIABLES:
        raise ValueError(f"{what}: var={var!r} is not drawable; expected one of {list(_VARIABLES)}")
    if var not in ds:
        raise ValueError(f"{what}: {argument} has no variable {var!r} (variables: {list(ds.data_vars)})")
    dims = tuple(ds[var].dims)
    if dims[-3:] != GRID_DIMS_3D:
        hint = " (a 2-D map: draw it with map_image, overlay or overlay_figure)" if "block_z" not in dims and \
            dims[-2:] == ("block_y", "block_x") else ""
        raise ValueError(f"{what}: {argument}[{var!r}] has dims {dims}; expected a 3-D effects map whose dims end "
                         f"with {GRID_DIMS_3D}{hint}")
    extra = [d for d in dims if d not in GRID_DIMS_3D]
    if extra:
        kind = "stack dims" if all(d in STACK_DIMS for d in extra) else "extra dims"
        raise ValueError(f"{what} draws one map; {argument} has {kind} {extra}: select along them first "
                         f"(e.g. {argument}.isel({extra[0]}=0))")
    validate(ds)  # block sides, block starts, dtypes, RoI blocks
    return ds


def _voxel_shape(ds: xr.Dataset) -> tuple[int, int, int]:
    """(D, H, W) of the volume the blocks tile."""
    shape = block_shape(ds)
    return tuple(ds.sizes[d] * b for d, b in zip(GRID_DIMS_3D, shape))  # type: ignore[return-value]


def _roi_box(ds: xr.Dataset) -> tuple[int, int, int, int, int, int]:
    """(z, row, col, depth, height, width) of the RoI: the recorded box, else the mask's bounding box, else zeros."""
    names = ("roi_z", "roi_row", "roi_col", "roi_depth", "roi_height", "roi_width")
    if all(n in ds for n in names):
        return tuple(int(ds[n]) for n in names)  # type: ignore[return-value]
    if "roi_mask" in ds and ds["roi_mask"].ndim == 3 and bool(ds["roi_mask"].any()):
        where = np.nonzero(np.asarray(ds["roi_mask"]))
        low = [int(w.min()) for w in where]
        return (*low, *(int(w.max()) - lo + 1 for w, lo in zip(where, low)))  # type: ignore[return-value]
    return (0, 0, 0, 0, 0, 0)


def _centre(ds: xr.Dataset, at: Any, what: str) -> tuple[int, int, int]:
    """Voxel (z, y, x) the planes go through: `at`, else the RoI's centre, else the volume's centre."""
    shape = _voxel_shape(ds)
    if at is None:
        z, row, col, depth, height, width = _roi_box(ds)
        if depth and height and width:
            return (z + (depth - 1) // 2, row + (height - 1) // 2, col + (width - 1) // 2)
        return tuple(s // 2 for s in shape)  # type: ignore[return-value]
    point = tuple(int(v) for v in np.atleast_1d(np.asarray(at)))
    if len(point) != 3 or any(not 0 <= p < s for p, s in zip(point, shape)):
        raise ValueError(f"{what}: at={at!r} is not a voxel (z, y, x) of the volume of shape {shape} (D, H, W)")
    return point  # type: ignore[return-value]


def _volume_image(image: Any, ds: xr.Dataset, what: str, channel: int = 0) -> np.ndarray:
    """`image` as a (D, H, W) float array in [0, 1] on the grid of `ds` (one channel of a (C, D, H, W) image)."""
    raw = image.detach().cpu().numpy() if hasattr(image, "detach") else image
    array = np.asarray(raw, dtype=float)
    shape = _voxel_shape(ds)
    if array.ndim == 4:
        if not -array.shape[0] <= channel < array.shape[0]:
            raise ValueError(f"{what}: channel={channel} is out of range for an image with {array.shape[0]} channels")
        array = array[channel]
    if array.ndim != 3:
        raise ValueError(f"{what}: image has shape {np.shape(raw)} ({array.ndim}-D); expected a volume (C, D, H, W) or "
                         f"(D, H, W) of shape {shape} in [0, 1]")
    if array.shape != shape:
        raise ValueError(f"{what}: image has (D, H, W) = {array.shape}, but the map's blocks tile a volume of {shape}")
    return np.clip(np.nan_to_num(array), 0.0, 1.0)


def _limit(ds: xr.Dataset, var: str, vmax: float | None) -> float:
    if vmax is not None:
        if not np.isfinite(vmax) or vmax <= 0:
            raise ValueError(f"vmax={vmax!r} must be a positive number (half-width of the colour scale)")
        return float(vmax)
    return symmetric_limit(ds[var])


# -- planes and projections as arrays -----------------------------------------------------------------------
def _blocks(ds: xr.Dataset, var: str) -> np.ndarray:
    return np.asarray(ds[var].transpose(*GRID_DIMS_3D), dtype=float)


def _to_voxels(plane: np.ndarray, sides: tuple[int, int]) -> np.ndarray:
    """A plane of blocks repeated over its voxels (`sides`: voxels per block along rows, columns)."""
    return np.repeat(np.repeat(plane, sides[0], axis=0), sides[1], axis=1)


def _plane_index(axis: str) -> int:
    return _AXES.index(axis)


def _plane_sides(axis: str, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(vertical, horizontal) sizes of the plane normal to `axis` for a per-axis `shape` (z, y, x)."""
    horizontal, vertical = _PLANES[axis][1]
    return shape[_plane_index(vertical)], shape[_plane_index(horizontal)]


def _block_plane(blocks: np.ndarray, axis: str, index: int) -> np.ndarray:
    """The plane of `blocks` (z, y, x grid) with block `index` along `axis`, as (vertical, horizontal)."""
    return np.take(blocks, index, axis=_plane_index(axis))  # axial (y, x), coronal (z, x), sagittal (z, y)


def _voxel_plane(volume: np.ndarray, axis: str, voxel: int) -> np.ndarray:
    return np.take(volume, voxel, axis=_plane_index(axis))


def signed_max_projection(effects: xr.Dataset | xr.DataArray, axis: Axis = "z", *, var: str = "ate") -> xr.DataArray:
    """Signed maximum-intensity projection: along each ray the value of largest |ATE|, its sign kept.

    A ray whose strongest block supports the RoI projects to a negative value, one whose strongest
    block hurts it to a positive value; NaN values are skipped (an all-NaN ray gives NaN), and of two
    blocks of equal |ATE| the first along the axis wins.

    Parameters
    ----------
    effects : Dataset or DataArray
        A 3-D effects map (any leading stack dims are kept) or one of its block variables.
    axis : {"z", "y", "x"}
        The axis projected away (``"z"``: the axial view).
    var : str
        The variable projected when `effects` is a Dataset.

    Returns
    -------
    xarray.DataArray
        The projection over the two other block dims (coordinates kept).

    Examples
    --------
    >>> ate = xr.DataArray(np.array([[[1.0]], [[-3.0]], [[2.0]]]), dims=("block_z", "block_y", "block_x"))
    >>> float(signed_max_projection(ate, "z")[0, 0])
    -3.0
    """
    if axis not in _AXES:
        raise ValueError(f"axis={axis!r} is not an axis of a volume; expected one of {list(_AXES)}")
    da = effects[var] if isinstance(effects, xr.Dataset) else effects
    if not isinstance(da, xr.DataArray) or not set(GRID_DIMS_3D) <= set(da.dims):
        dims = tuple(getattr(da, "dims", ()))
        raise ValueError(f"signed_max_projection: effects has dims {dims}; expected a 3-D map with dims {GRID_DIMS_3D}")
    dim = f"block_{axis}"
    strongest = abs(da.astype(float)).fillna(-1.0).argmax(dim)
    out = da.astype(float).isel({dim: strongest}).drop_vars([dim, f"{axis}_start"], errors="ignore")
    return out.assign_attrs(da.attrs).rename(da.name)


def _projection_depth(da: xr.DataArray, axis: str) -> np.ndarray:
    """Block index along `axis` of the strongest block of each ray (what the projection shows)."""
    return np.asarray(abs(da.astype(float)).fillna(-1.0).argmax(f"block_{axis}"))


# -- interactive views (holoviews, bokeh) -------------------------------------------------------------------
def _plane_width(shape: tuple[int, int, int], axes: list[str], width: int | None) -> float:
    """Screen pixels per voxel so that the planes normal to `axes`, side by side with one colour bar, fit VIEW_WIDTH."""
    horizontal = [shape[_plane_index(_PLANES[a][1][0])] for a in axes]
    if width is not None:
        return width / max(horizontal)
    room = VIEW_WIDTH - len(axes) * _AXIS - _COLORBAR
    return min(room / sum(horizontal), _MAP_SIZE / max(horizontal))


def _style(var: str, limit: float) -> tuple[str, tuple[float, float]]:
    """Colour map and limits of `var`: diverging and symmetric for effects, sequential from 0 for stderr."""
    return ("viridis", (0.0, limit)) if var == "stderr" else (EFFECT_CMAP, (-limit, limit))


def _rgba(values: np.ndarray, var: str, limit: float) -> np.ndarray:
    """Colours over an image: :func:`~pdcr_lab.viz.effect_rgba` for effects, viridis fading with stderr."""
    if var != "stderr":
        return effect_rgba(values, limit)
    from matplotlib import colormaps

    finite = np.isfinite(values)
    shown = np.where(finite, values, 0.0)
    rgba = colormaps["viridis"](np.clip(shown / limit, 0.0, 1.0))
    rgba[..., 3] = OVERLAY_ALPHA * np.clip(shown / limit, 0.0, 1.0) * finite
    return rgba


def _plane_element(hv: Any, *, values: np.ndarray, blocks: dict[str, np.ndarray], underlay: np.ndarray | None,
                   dims: tuple[str, str], var: str, limit: float, units: str, colorbar: bool) -> Any:
    """One plane: grey underlay, map colours, and an (invisible over an image) layer carrying hover and colour bar."""
    rows, cols = values.shape
    xs, ys = np.arange(cols), np.arange(rows)
    cmap, clim = _style(var, limit)
    label = f"{var} [{units}]" if units else var
    vdims = [hv.Dimension(var, unit=units or None), *blocks]
    data = hv.Image((xs, ys, values, *blocks.values()), kdims=list(dims), vdims=vdims).opts(
        cmap=cmap, clim=clim, colorbar=colorbar, tools=["hover"], clabel=label, alpha=0.0 if underlay is not None else 1.0,
    )
    if underlay is None:
        return data
    grey = hv.Image((xs, ys, underlay), kdims=list(dims), vdims=["intensity"]).opts(cmap="gray", clim=(0, 1),
                                                                                  colorbar=False)
    colours = hv.RGB((xs, ys, *np.moveaxis(_rgba(values, var, limit), -1, 0)), kdims=list(dims),
                     vdims=["R", "G", "B", "A"])
    return grey * colours * data


def _roi_in_plane(hv: Any, box: tuple[int, ...], axis: str, voxel: int) -> Any:
    """The RoI box in the plane normal to `axis` as an ``hv.Path`` on voxel edges: solid where the plane cuts
    the RoI, dashed (the RoI's projection) elsewhere. (A path, not ``hv.Rectangles``: holoviews fails to
    update the ranges of rectangles inside a DynamicMap driven by panel widgets.)"""
    z, row, col, depth, height, width = box
    start = {"z": z, "y": row, "x": col}
    size = {"z": depth, "y": height, "x": width}
    horizontal, vertical = _PLANES[axis][1]
    h0, v0 = start[horizontal] - 0.5, start[vertical] - 0.5
    h1, v1 = h0 + size[horizontal], v0 + size[vertical]
    ring = [(h0, v0), (h1, v0), (h1, v1), (h0, v1), (h0, v0)] if size[horizontal] and size[vertical] else []
    cut = start[axis] <= voxel < start[axis] + size[axis]
    return hv.Path([ring] if ring else [], kdims=[horizontal, vertical]).opts(
        line_color=ROI_COLOUR, line_width=2, line_dash="solid" if cut else "dashed")


def _plane_frame(element: Any, axis: str, sides: tuple[int, int], scale: float, title: str) -> Any:
    horizontal, vertical = _PLANES[axis][1]
    rows, cols = sides
    return element.opts(invert_yaxis=True, xlim=(-0.5, cols - 0.5), ylim=(-0.5, rows - 0.5), data_aspect=1,
                        frame_width=max(60, int(scale * cols)), title=title, xlabel=_LABELS[horizontal],
                        ylabel=_LABELS[vertical])


def orthoslices(ds: xr.Dataset, *, image: Any | None = None, var: str = "ate", at: tuple[int, int, int] | None = None,
                vmax: float | None = None, channel: int = 0, crosshair: bool = True, width: int | None = None,
                widgets: bool = True) -> Any:
    """Three orthogonal planes through a 3-D map (axial z, coronal y, sagittal x), with a slider per axis.

    Each plane is drawn at voxel resolution, over the image's plane in grey when `image` is given
    (effects then fade to transparent at 0, :func:`~pdcr_lab.viz.effect_rgba`), with the RoI outlined
    in green (solid where the plane cuts the RoI, dashed where it shows the RoI's projection) and thin
    lines where the other two planes cut it. The planes share one symmetric colour scale, whose bar
    stands next to the last plane; hovering shows the block index and the value.

    Parameters
    ----------
    ds : xarray.Dataset
        One 3-D effects map (grid dims ``block_z, block_y, block_x``; select stack dims first).
    image : (C, D, H, W) or (D, H, W) array or tensor in [0, 1], optional
        The explained volume, drawn in grey under the map (its shape must be the grid times the blocks).
    var : {"ate", "ate_raw", "stderr"}
        The block variable drawn (``stderr`` on a sequential scale from 0).
    at : (z, y, x), optional
        Voxel the planes go through at first; default the RoI's centre.
    vmax : float, optional
        Half-width of the colour scale (default max |value|; pass one to compare maps).
    channel : int
        Channel of a multi-channel `image` drawn in grey.
    crosshair : bool
        Mark in each plane where the other two planes cut it.
    width : int, optional
        Frame width in screen pixels of the widest plane (default: the three planes and the colour bar
        fit :data:`~pdcr_lab.viz.VIEW_WIDTH`, voxels equally large in all planes).
    widgets : bool
        Return a panel ``Column`` with the three sliders in a row above the planes (fits
        :data:`~pdcr_lab.viz.VIEW_WIDTH`); ``False`` returns the bare ``hv.Layout``.

    Returns
    -------
    panel.Column or holoviews.Layout
        The ``hv.Layout`` (``column[1].object`` with widgets) holds three ``hv.DynamicMap`` with
        kdims ``z, y, x``: ``layout[i][z, y, x]`` is the overlay of plane i at that voxel.
    """
    hv = holoviews_backend()
    ds = _volume_map(ds, "orthoslices", var=var)
    shape = _voxel_shape(ds)
    sides = block_shape(ds)
    start = _centre(ds, at, "orthoslices")
    volume = _volume_image(image, ds, "orthoslices", channel) if image is not None else None
    limit = _limit(ds, var, vmax)
    units = str(ds[var].attrs.get("units", ds.attrs.get("units", "")))
    blocks = _blocks(ds, var)
    box = _roi_box(ds)
    scale = _plane_width(shape, list(_AXES), width)
    index = {d: np.indices(ds[var].transpose(*GRID_DIMS_3D).shape)[k].astype(float) for k, d in enumerate(GRID_DIMS_3D)}

    def plane(axis: str) -> Any:
        name, (horizontal, vertical) = _PLANES[axis]
        k = _plane_index(axis)
        plane_sides = _plane_sides(axis, sides)

        def draw(z: int, y: int, x: int) -> Any:
            voxel = {"z": int(z), "y": int(y), "x": int(x)}
            block = voxel[axis] // sides[k]
            values = _to_voxels(_block_plane(blocks, axis, block), plane_sides)
            where = {d: _to_voxels(_block_plane(v, axis, block), plane_sides) for d, v in index.items()}
            underlay = _voxel_plane(volume, axis, voxel[axis]) if volume is not None else None
            element = _plane_element(hv, values=values, blocks=where, underlay=underlay, dims=(horizontal, vertical),
                                     var=var, limit=limit, units=units, colorbar=axis == "x")
            element = element * _roi_in_plane(hv, box, axis, voxel[axis])
            if crosshair:
                # light over the (mostly dark) image, dark over the map's white
                line = {"line_color": "#f0f0f0" if volume is not None else "#404040", "line_width": 1,
                        "line_dash": "dashed", "alpha": 0.9}
                element = element * hv.VLine(voxel[horizontal]).opts(**line) * hv.HLine(voxel[vertical]).opts(**line)
            title = f"{name} {axis} = {voxel[axis]} (block {block})"
            return _plane_frame(element, axis, _plane_sides(axis, shape), scale, title)

        return hv.DynamicMap(draw, kdims=kdims)

    kdims = [hv.Dimension(a, label=f"{a} ({_PLANES[a][0]})", range=(0, n - 1), default=s, type=int)
             for a, n, s in zip(_AXES, shape, start)]
    layout = hv.Layout([plane(a) for a in _AXES]).cols(3).opts(shared_axes=False)
    if not widgets:
        return layout
    import panel as pn

    # One slider per axis, side by side: three fit the output width where panel's default column would not.
    sliders = {d.name: pn.widgets.IntSlider(label=d.label, start=0, end=n - 1, value=s,
                                            width=(VIEW_WIDTH - 60) // 3)
               for d, n, s in zip(kdims, shape, start)}
    return pn.panel(layout, widgets=sliders, widget_location="top_left", widget_layout=pn.Row)


def _projection_element(hv: Any, ds: xr.Dataset, axis: str, *, var: str, limit: float, units: str, scale: float,
                        underlay: np.ndarray | None, colorbar: bool, title: str | None) -> Any:
    sides = block_shape(ds)
    da = ds[var].transpose(*GRID_DIMS_3D)
    mip = signed_max_projection(da, axis)
    plane_sides = _plane_sides(axis, sides)
    values = _to_voxels(np.asarray(mip, dtype=float), plane_sides)
    depth = {f"block_{axis}": _to_voxels(_projection_depth(da, axis).astype(float), plane_sides)}
    dims = _PLANES[axis][1]
    element = _plane_element(hv, values=values, blocks=depth, underlay=underlay, dims=dims, var=var, limit=limit,
                             units=units, colorbar=colorbar)
    box = _roi_box(ds)
    start = {"z": box[0], "y": box[1], "x": box[2]}
    element = element * _roi_in_plane(hv, box, axis, start[axis])  # a projection always holds the RoI
    label = title if title is not None else f"MIP along {axis}"  # signed: the strongest block of each ray
    return _plane_frame(element, axis, _plane_sides(axis, _voxel_shape(ds)), scale, label)


def max_projection(ds: xr.Dataset, axis: Axis | Literal["all"] = "z", *, var: str = "ate", image: Any | None = None,
                   vmax: float | None = None, channel: int = 0, width: int | None = None,
                   title: str | None = None) -> Any:
    """Signed maximum-intensity projection of a 3-D map (:func:`signed_max_projection`) as holoviews.

    Each pixel shows the strongest block on its ray with its sign (red: the strongest block supports
    the RoI, blue: it hurts it); hovering shows the value and the index of that block along the axis.
    The RoI's projection is outlined in green.

    Parameters
    ----------
    ds : xarray.Dataset
        One 3-D effects map.
    axis : {"z", "y", "x", "all"}
        The axis projected away, or ``"all"`` for the three projections side by side.
    var : {"ate", "ate_raw", "stderr"}
        The block variable projected.
    image : (C, D, H, W) or (D, H, W) array or tensor in [0, 1], optional
        Drawn under the projection as its own maximum-intensity projection, in grey.
    vmax : float, optional
        Half-width of the colour scale (default max |value| of the map, shared by the projections).
    channel : int
        Channel of a multi-channel `image`.
    width : int, optional
        Frame width in screen pixels of the widest panel (default: fits :data:`~pdcr_lab.viz.VIEW_WIDTH`).
    title : str, optional
        Title of a single projection (default names the axis).

    Returns
    -------
    holoviews.Overlay or holoviews.Layout
        One projection (an overlay whose ``hv.Image`` has kdims the two in-plane axes and vdims
        `var` and ``block_<axis>``), or a layout of the three.
    """
    hv = holoviews_backend()
    if axis not in (*_AXES, "all"):
        raise ValueError(f"max_projection: axis={axis!r} is not supported; expected one of {[*_AXES, 'all']}")
    ds = _volume_map(ds, "max_projection", var=var)
    volume = _volume_image(image, ds, "max_projection", channel) if image is not None else None
    limit = _limit(ds, var, vmax)
    units = str(ds[var].attrs.get("units", ds.attrs.get("units", "")))
    axes = list(_AXES) if axis == "all" else [axis]
    scale = _plane_width(_voxel_shape(ds), axes, width)
    panels = []
    for a in axes:
        underlay = volume.max(axis=_plane_index(a)) if volume is not None else None
        panels.append(_projection_element(hv, ds, a, var=var, limit=limit, units=units, scale=scale, underlay=underlay,
                                          colorbar=a == axes[-1], title=title if axis != "all" else None))
    return panels[0] if len(panels) == 1 else hv.Layout(panels).cols(3).opts(shared_axes=False)


# -- the paper figure (matplotlib) --------------------------------------------------------------------------
def volume_figure(ds: xr.Dataset, image: Any | None = None, *, at: tuple[int, int, int] | None = None,
                  vmax: float | None = None, channel: int = 0, title: str | None = None, caption: bool = True,
                  layout: Layout = "double") -> Figure:
    """A paper figure of a 3-D map: the three planes through the RoI (top) and the three signed MIPs (bottom).

    Drawn in the paper style (:data:`~pdcr_lab.viz.PAPER_RC`, fonts of 7 pt and more at print size)
    at a journal width, on one symmetric colour scale whose bar (in the map's units, DSC points for
    Dice) sits under the panels; the RoI is outlined in green in every panel.

    Parameters
    ----------
    ds : xarray.Dataset
        One 3-D effects map.
    image : (C, D, H, W) or (D, H, W) array or tensor in [0, 1], optional
        The explained volume: the planes are drawn over it (irrelevant blocks transparent).
    at : (z, y, x), optional
        Voxel the planes go through; default the RoI's centre.
    vmax : float, optional
        Half-width of the colour scale (default max |ATE|; pass one value to share scales).
    channel : int
        Channel of a multi-channel `image`.
    title : str, optional
        Figure title.
    caption : bool
        Write the settings (:func:`~pdcr_lab.viz.settings_caption`, with the 3-D block and RoI) under the panels.
    layout : {"single", "double"}
        Width: one column (3.5 in) or two (7.2 in).

    Returns
    -------
    matplotlib.figure.Figure
        Six image panels (row-major: axial, coronal, sagittal planes, then their MIPs) and the colour bar.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from ._paper import (
        _SMALL,
        _WIDER,
        PAPER_RC,
        _ate_label,
        _colourbar,
        _colourbar_height,
        _paper_figure,
        _text_height,
        _titles_height,
        _width,
        _wrap,
        paper_style,
    )

    ds = _volume_map(ds, "volume_figure")
    shape, sides = _voxel_shape(ds), block_shape(ds)
    centre = _centre(ds, at, "volume_figure")
    volume = _volume_image(image, ds, "volume_figure", channel) if image is not None else None
    limit = _limit(ds, "ate", vmax)
    blocks = _blocks(ds, "ate")
    box = _roi_box(ds)
    width = _width(layout)
    horizontal = [_plane_sides(a, shape)[1] for a in _AXES]
    vertical = [_plane_sides(a, shape)[0] for a in _AXES]
    scale = min((width - 0.5) / sum(horizontal), 2.5 / max(horizontal))  # inches per voxel, equal in every panel
    titles = [f"{_PLANES[a][0]} {a} = {centre[k]}" for k, a in enumerate(_AXES)]
    titles += [f"MIP along {a}" for a in _AXES]  # signed: the strongest block of each ray, its sign kept
    titles = [_wrap(t, scale * horizontal[k % 3], PAPER_RC["axes.titlesize"]) for k, t in enumerate(titles)]
    title_room = max(_text_height(t, PAPER_RC["axes.titlesize"]) for t in titles) + 0.1
    bar_label = _ate_label(str(ds.ate.attrs.get("units", ds.attrs.get("units", ""))), "  (red supports, blue hurts)")
    title = _wrap(title, width - 0.1, PAPER_RC["figure.titlesize"]) if title else None
    text = _wrap(settings_caption(ds), width - 0.3, _SMALL) if caption else None
    height = (2 * (scale * max(vertical) + title_room) + _colourbar_height(bar_label, width)
              + _titles_height(title, text) + 0.35)  # room above the first row of titles
    start = {"z": box[0], "y": box[1], "x": box[2]}
    size = {"z": box[3], "y": box[4], "x": box[5]}
    with paper_style():
        fig = _paper_figure(layout, height, advice=f"draw the planes and the projections as two figures{_WIDER[layout]}")
        grid = fig.add_gridspec(2, 3, width_ratios=horizontal)
        axes = [fig.add_subplot(grid[r, c]) for r in range(2) for c in range(3)]
        for k, a in enumerate(_AXES):
            across, down = _PLANES[a][1]
            values = _to_voxels(_block_plane(blocks, a, centre[k] // sides[k]), _plane_sides(a, sides))
            mip = _to_voxels(np.asarray(signed_max_projection(ds, a), dtype=float), _plane_sides(a, sides))
            top, bottom = axes[k], axes[k + 3]
            if volume is not None:
                top.imshow(_voxel_plane(volume, a, centre[k]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                top.imshow(effect_rgba(values, limit), interpolation="nearest")
            else:
                top.imshow(values, cmap=EFFECT_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
            bottom.imshow(mip, cmap=EFFECT_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
            cut = start[a] <= centre[k] < start[a] + size[a]
            for ax, solid in ((top, cut), (bottom, True)):
                if size[across] and size[down]:
                    ax.add_patch(Rectangle((start[across] - 0.5, start[down] - 0.5), size[across], size[down],
                                           fill=False, ec=ROI_COLOUR, lw=1.0, ls="-" if solid else "--"))
        for ax, label in zip(axes, titles):
            ax.set_title(label)
            ax.set_xticks([])
            ax.set_yticks([])
        _colourbar(fig, ScalarMappable(Normalize(-limit, limit), EFFECT_CMAP), axes, bar_label)
        if title:
            fig.suptitle(title)
        if text:
            fig.supxlabel(text, fontsize=_SMALL)
    return fig


# -- a 3-D viewer (ipyniivue, optional) ---------------------------------------------------------------------
def _nifti_bytes(volume: np.ndarray) -> bytes:
    """A (D, H, W) array as the bytes of a NIfTI-1 file, 1-voxel spacing.

    NIfTI's i, j, k are the array's x, y, z; y and z point down (posterior, inferior), so that NiiVue shows
    row 0 and slice 0 at the top, like the other views.
    """
    import nibabel

    data = np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0))
    image = nibabel.Nifti1Image(data, affine=np.diag([1.0, -1.0, -1.0, 1.0]))
    image.header.set_xyzt_units("mm")
    return bytes(image.to_bytes())


def niivue_view(ds: xr.Dataset, image: Any | None = None, *, var: str = "ate", vmax: float | None = None,
                channel: int = 0, height: int = 420, threshold: float | None = None) -> Any:
    """The volume with the 3-D map as an overlay in NiiVue (``ipyniivue``): three planes and a 3-D rendering.

    Needs the optional ``ipyniivue`` package (an anywidget that bundles NiiVue's JavaScript: it works
    offline, no CDN). The map is drawn at voxel resolution over the image: negative effects (support)
    from yellow (weak) to red (|ATE| >= `vmax`), positive ones (harm) from cyan to blue, one
    symmetric scale with a colour bar per sign; effects whose size is at most `threshold` (and
    irrelevant blocks, ATE = 0) are transparent. NiiVue draws an overlay at one opacity, so a weak
    effect would show as strongly as a strong one's hue suggests; by default the weakest tenth of the
    scale is left out, as the 2-D views' fading leaves it nearly invisible. Without `image` the map is drawn over an empty
    volume. Row 0 and slice 0 are at the top, as in :func:`orthoslices`.

    Parameters
    ----------
    ds : xarray.Dataset
        One 3-D effects map.
    image : (C, D, H, W) or (D, H, W) array or tensor in [0, 1], optional
        The explained volume, drawn in grey.
    var : {"ate", "ate_raw"}
        The effect drawn.
    vmax : float, optional
        |effect| at which colours saturate (default max |effect|).
    channel : int
        Channel of a multi-channel `image`.
    height : int
        Height of the widget in screen pixels.
    threshold : float, optional
        Effects with |value| <= threshold are not drawn (in the map's units); default a tenth of the
        colour limit (0 draws every non-zero effect).

    Returns
    -------
    ipyniivue.NiiVue
        The widget; ``widget.volumes`` are the image, the map and the RoI mask in green (``name``
        ``"image"``, `var` and ``"roi"``; no RoI volume when the map records no RoI mask).
    """
    try:
        import ipyniivue
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"niivue_view needs the optional package ipyniivue (pip install 'ipyniivue>={_NIIVUE_VERSION}'); "
                          "the other volume views (orthoslices, max_projection, volume_figure) work without it") from exc
    if var == "stderr":
        raise ValueError("niivue_view: var='stderr' is not a signed effect; expected 'ate' or 'ate_raw'")
    ds = _volume_map(ds, "niivue_view", var=var)
    shape, sides = _voxel_shape(ds), block_shape(ds)
    volume = _volume_image(image, ds, "niivue_view", channel) if image is not None else np.zeros(shape)
    limit = _limit(ds, var, vmax)
    threshold = 0.1 * limit if threshold is None else threshold
    if not 0 <= threshold < limit:
        raise ValueError(f"niivue_view: threshold={threshold!r} must be in [0, {limit:g}) (the colour limit)")
    effects = np.nan_to_num(_blocks(ds, var))
    for axis, side in enumerate(sides):
        effects = np.repeat(effects, side, axis=axis)
    low = max(float(threshold), 1e-9 * limit)
    grey = (0.25, 0.25, 0.25, 1.0)  # the cursor: red and blue mean effects here
    widget = ipyniivue.NiiVue(height=int(height), is_colorbar=True, back_color=(1.0, 1.0, 1.0, 1.0),
                              crosshair_color=grey, multiplanar_show_render=ipyniivue.ShowRender.ALWAYS,
                              show_3d_crosshair=True, slice_type=ipyniivue.SliceType.MULTIPLANAR)
    volumes = [
        {"data": _nifti_bytes(volume), "name": "image", "colormap": "gray", "cal_min": 0.0, "cal_max": 1.0,
         "colorbar_visible": False},
        # one symmetric scale: the negative side mirrors cal_min and cal_max
        {"data": _nifti_bytes(effects), "name": var, "colormap": _NIIVUE_COLOURS[1],
         "colormap_negative": _NIIVUE_COLOURS[0], "cal_min": low, "cal_max": limit, "opacity": OVERLAY_ALPHA},
    ]
    if "roi_mask" in ds and ds["roi_mask"].shape == shape and bool(ds["roi_mask"].any()):
        volumes.append({"data": _nifti_bytes(np.asarray(ds["roi_mask"], dtype=float)), "name": "roi",
                        "colormap": "green", "cal_min": 0.5, "cal_max": 1.0, "opacity": 0.5, "colorbar_visible": False})
    widget.load_volumes(volumes)
    return widget
