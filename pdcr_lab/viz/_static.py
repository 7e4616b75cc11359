"""Static matplotlib figures (files for papers and the command line)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..schema import BOX_VARS, block_shape, to_pixels, validate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._paper import Layout

#: Diverging colour map: negative (support) red, positive (harm) blue, zero white.
EFFECT_CMAP = "bwr_r"
ROI_COLOUR = "#00a651"


def symmetric_limit(ate: xr.DataArray | np.ndarray, quantile: float = 1.0) -> float:
    """Half-width of a symmetric colour scale: the `quantile` of |ATE| (at least a tiny epsilon).

    Parameters
    ----------
    ate : DataArray or array
        Effects of one or more maps (NaN and Inf are ignored).
    quantile : float
        Quantile of |ATE| in [0, 1]; 1 gives the largest |ATE| (values above it saturate otherwise).

    Examples
    --------
    >>> symmetric_limit(np.array([-4.0, 1.0, 0.0, np.nan]))
    4.0
    >>> symmetric_limit(np.zeros(3))                    # an all-zero map still gets a valid scale
    1e-06
    """
    values = np.abs(np.asarray(ate, dtype=float))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1e-6
    return float(max(np.quantile(values, quantile), 1e-6))


#: Opacity of the strongest effect over the image; weaker effects fade linearly to transparent at 0.
OVERLAY_ALPHA = 0.85


def effect_rgba(values: np.ndarray, limit: float, max_alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Effects as RGBA for drawing over an image: colour from :data:`EFFECT_CMAP`, opacity growing with |ATE|.

    Opacity is ``max_alpha * min(1, |ATE| / limit)``: an irrelevant block (ATE = 0, or NaN) is fully
    transparent and the image shows through; the strongest effects are the most visible. Every
    overlay (files, notebooks, dashboard, paper figures) draws with this one rule.

    Parameters
    ----------
    values : array (H, W)
        Effects in outcome units.
    limit : float
        Half-width of the symmetric colour scale (|ATE| at which colour and opacity saturate).
    max_alpha : float
        Opacity at |ATE| >= limit, in [0, 1].

    Examples
    --------
    >>> rgba = effect_rgba(np.array([[0.0, -1.0, 2.0, np.nan]]), limit=2.0)
    >>> rgba[0, :, 3].round(3).tolist()                   # transparent at 0, growing with |ATE|
    [0.0, 0.425, 0.85, 0.0]
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    shown = np.where(finite, values, 0.0)
    rgba = colormaps[EFFECT_CMAP](Normalize(-limit, limit)(shown))
    rgba[..., 3] = float(max_alpha) * np.clip(np.abs(shown) / limit, 0.0, 1.0) * finite
    return rgba


def settings_caption(ds: xr.Dataset) -> str:
    """The settings a map was computed with, in one line for captions (what is recorded, nothing guessed).

    Method, intervention, block, S, N, tau, mode, outcome and seed, then the model, dataset, image and
    RoI when the result records them.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map.

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=8, coarse=3, fine=50, tau=0.02, intervention="natural",
    ...                                    model="unet")
    >>> settings_caption(ds)
    'pdcr, natural blocks of 8 px, S = 3, N = 50, tau = 0.02, outcome dice, seed 0; model unet; RoI (0, 0, 0, 0)'
    >>> settings_caption(pdcr_lab.schema.empty_effects(grid=(2, 2, 2), block=4, intervention="zero"))
    'pdcr, zero blocks of 4 x 4 x 4 voxels, outcome dice, seed 0; RoI (z, y, x, d, h, w) (0, 0, 0, 0, 0, 0)'
    """
    a = ds.attrs
    parts = [str(a.get("method", "pdcr"))]
    volume = "block_z" in ds.dims
    if "intervention" in a:
        size = " x ".join(map(str, block_shape(ds))) + " voxels" if volume else f"{a.get('block')} px"
        parts[0] += f", {a['intervention']} blocks of {size}"
    if "coarse" in a and "fine" in a:
        parts.append(f"S = {a['coarse']}, N = {a['fine']}" + (f" ({a['mode']})" if a.get("mode") not in (None, "paper") else ""))
    if "tau" in a:
        parts.append(f"tau = {float(a['tau']):g}")
    parts.append(f"outcome {a.get('outcome', 'dice')}, seed {a.get('seed', 0)}")
    where = [f"{key} {a[key]}" for key in ("model", "dataset") if key in a]
    if "image_id" in a:
        where.append(f"image {a['image_id']}")
    names = BOX_VARS[3 if volume else 2]
    box = tuple(int(ds[k]) for k in names if k in ds and ds[k].ndim == 0)
    if len(box) == len(names):
        where.append(f"RoI (z, y, x, d, h, w) {box}" if volume else f"RoI {box}")
    return ", ".join(parts) + "; " + "; ".join(where) if where else ", ".join(parts)


def as_display_image(image: Any) -> np.ndarray:
    """An image as a (H, W) or (H, W, 3) float array in [0, 1] for drawing (channels moved last, clipped).

    Parameters
    ----------
    image : Tensor or array
        (C, H, W) with C in {1, 3}, (H, W, C) or (H, W).

    Examples
    --------
    >>> import numpy as np
    >>> from pdcr_lab.viz import as_display_image
    >>> as_display_image(np.full((1, 4, 6), 2.0)).shape, float(as_display_image(np.full((1, 4, 6), 2.0)).max())
    ((4, 6), 1.0)
    """
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=float)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return np.clip(array, 0, 1)


def _draw_image(ax: Any, rgb: np.ndarray) -> None:
    """Draw a display image (:func:`as_display_image`): grey levels for one channel."""
    ax.imshow(rgb, cmap="gray" if rgb.ndim == 2 else None)


def _draw_roi(ax: Any, ds: xr.Dataset) -> None:
    """Outline the RoI of `ds` in green on pixel edges and drop the ticks (a map or image panel)."""
    from matplotlib.patches import Rectangle

    row, col, height, width = (int(ds[k]) for k in ("roi_row", "roi_col", "roi_height", "roi_width"))
    ax.add_patch(Rectangle((col - 0.5, row - 0.5), width, height, fill=False, ec=ROI_COLOUR, lw=1.2))
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_figure(ds: xr.Dataset, image: Any | None = None, *, title: str | None = None, vmax: float | None = None,
                   caption: bool = True, layout: Layout | None = None) -> Figure:
    """Three panels: the image with the RoI, the effect map over the image, the map alone.

    Drawn in the paper style (:data:`~pdcr_lab.viz.PAPER_RC`) at a journal width; titles and the
    caption wrap to it, and the colour bar sits under the panels.

    Parameters
    ----------
    ds : xarray.Dataset
        Effects of one map (no stack dims).
    image : (C, H, W) or (H, W, C) array in [0, 1], optional
        The explained image; without it only the map is drawn.
    title : str, optional
        Figure title.
    vmax : float, optional
        Half-width of the colour scale; default max |ATE| (pass one value to share scales).
    caption : bool
        Write the settings (:func:`settings_caption`) under the panels.
    layout : {"single", "double"}, optional
        Width: one column (3.5 in) or two (7.2 in); default double with the image (three panels),
        single for the map alone.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> fig = overlay_figure(ds, np.zeros((1, 8, 8)), title="demo")
    >>> len(fig.axes), float(fig.get_figwidth())        # three panels and the colour bar, two columns wide
    (4, 7.2)
    >>> float(overlay_figure(ds, layout="single").get_figwidth())
    3.5
    >>> import matplotlib.pyplot as plt; plt.close("all")
    """
    # _paper builds on this module: imported here, when a figure is drawn.
    from ._paper import _ate_label, _colourbar, _map_grid, paper_style

    validate(ds)
    extra = [d for d in ds.ate.dims if d not in ("block_y", "block_x")]
    if extra:
        raise ValueError(f"overlay_figure draws one map; select along {extra} first (e.g. ds.isel({extra[0]}=0))")
    pixels = to_pixels(ds)["ate"].values
    limit = vmax if vmax is not None else symmetric_limit(ds.ate)
    titles = ["image and RoI", "PdCR map over image"] if image is not None else []
    titles.append("ATE (red supports, blue hurts)")
    bar_label = _ate_label(ds.ate.attrs.get("units", ""))
    with paper_style():
        fig, axes = _map_grid(layout or ("double" if image is not None else "single"), titles,
                              pixels.shape[0] / pixels.shape[1], cols=len(titles), title=title,
                              caption=settings_caption(ds) if caption else None, bar_label=bar_label, what="panels")
        if image is not None:
            rgb = as_display_image(image)
            _draw_image(axes[0], rgb)
            _draw_image(axes[1], rgb)
            axes[1].imshow(effect_rgba(pixels, limit))
        mappable = axes[-1].imshow(pixels, cmap=EFFECT_CMAP, vmin=-limit, vmax=limit)
        for ax in axes:
            _draw_roi(ax, ds)
        _colourbar(fig, mappable, axes, bar_label)
    return fig
