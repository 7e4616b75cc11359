"""Paper figures: journal widths, one matplotlib style, shared colour scales, files as PDF, SVG and 300-dpi PNG.

Every paper figure (:func:`maps_figure`, :func:`curves_figure`, :func:`components_figure`,
:func:`~pdcr_lab.viz.strategies_figure`, :func:`~pdcr_lab.viz.overlay_figure`) is drawn at the width
it is printed at, so its fonts (:data:`PAPER_RC`, 7 pt and more) are the printed sizes:

* ``layout="single"``: one column, 3.5 in wide (:data:`PAPER_WIDTHS`);
* ``layout="double"``: the full text width of a two-column page, 7.2 in wide.

Panels that do not fit side by side wrap into more rows, so a figure grows in height, never in
width; one taller than a page (:data:`PAGE_HEIGHT`) is refused with a ValueError saying how to
split it. Figures are drawn with constrained layout, so every label stays inside the figure, and
:func:`save_figure` writes the canvas as it is (no tight cropping that would change the width).
Colours follow the package convention: red = support (ATE < 0), blue = harm, white = 0, green = RoI,
symmetric scales. Nothing here selects a matplotlib backend: figures show wherever the caller shows
them (``IPython.display.display(fig)`` in a notebook).
"""

from __future__ import annotations

import contextlib
import os
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from ..locations import figures_dir
from ..schema import GRID_DIMS, to_pixels
from ._maps import split_maps

if TYPE_CHECKING:
    from matplotlib.figure import Figure
from ._static import (
    EFFECT_CMAP,
    _draw_image,
    _draw_roi,
    as_display_image,
    effect_rgba,
    symmetric_limit,
)

__all__ = [
    "PAGE_HEIGHT",
    "PAPER_RC",
    "PAPER_WIDTHS",
    "components_figure",
    "curves_figure",
    "maps_figure",
    "paper_style",
    "save_figure",
]

#: The two layouts of a paper figure.
Layout = Literal["single", "double"]

#: Figure width in inches of each layout: one journal column, or the text width of a two-column page.
PAPER_WIDTHS: dict[str, float] = {"single": 3.5, "double": 7.2}

#: Tallest figure in inches: a page of text minus room for the caption.
PAGE_HEIGHT = 9.5

#: Matplotlib settings of every paper figure: one font, 7-9 pt at print size, text kept as text in PDF/SVG.
PAPER_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "figure.labelsize": 8,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "pdcr_lab",  # fixed ids in SVG files: re-running rewrites identical files
    "savefig.dpi": 300,
    # The whole canvas: a tight crop would change the printed width (and with it every font size).
    "savefig.bbox": "standard",
    "figure.dpi": 100,
}

#: Settings that only take effect when a figure is written (applied by :func:`save_figure` in any style).
_SAVE_RC = ("pdf.fonttype", "ps.fonttype", "svg.fonttype", "svg.hashsalt", "savefig.bbox")

_SMALL = PAPER_RC["legend.fontsize"]  # captions and in-panel notes: the smallest size in use
_LINE = 1.25  # line height / font size (matplotlib's 1.2 line spacing, plus the descent)


# -- sizing, shared by every paper figure ---------------------------------------------------------------------
def _width(layout: str) -> float:
    """The width of `layout` in inches, or a ValueError naming the layouts."""
    if layout not in PAPER_WIDTHS:
        choices = ", ".join(f"{name!r} ({inches} in)" for name, inches in PAPER_WIDTHS.items())
        raise ValueError(f"layout={layout!r} is not a paper layout; expected one of {choices}")
    return PAPER_WIDTHS[layout]


def _text_width(text: str, size: float) -> float:
    """Width in inches of one line of `text` at `size` points in the paper font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    width, _, _ = text_to_path.get_text_width_height_descent(
        text, FontProperties(family=PAPER_RC["font.family"], size=size), ismath=False)
    return width / 72


def _text_height(text: str | None, size: float) -> float:
    """Height in inches of `text` (all its lines) at `size` points; 0 for no text."""
    return 0.0 if not text else (text.count("\n") + 1) * size * _LINE / 72


def _wrap(text: str, width: float, size: float) -> str:
    """`text` broken into lines at most `width` inches wide at `size` points.

    Lines break at double spaces and after ``", "`` and ``"; "`` (outside parentheses) first, so
    that settings such as ``S = 3`` or a RoI ``(48, 64, 16, 16)`` stay on one line; a part too long
    on its own breaks at spaces.
    """
    if _text_width(text, size) <= width:
        return text
    chars = max(8, int(len(text) * width / _text_width(text, size)))  # characters per line, on average
    lines: list[str] = []
    line = ""
    for part in re.split(r"(?<=[,;]) (?![^(]*\))|  ", text):  # not inside parentheses
        pieces = [part] if _text_width(part, size) <= width else textwrap.wrap(part, chars, break_on_hyphens=False)
        for piece in pieces:
            joined = f"{line} {piece}" if line else piece
            if line and _text_width(joined, size) > width:
                lines.append(line)
                line = piece
            else:
                line = joined
    return "\n".join([*lines, line])


def _grid(panels: int, width: float, min_panel: float, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) for `panels` panels at least `min_panel` inches wide, rows as even as possible."""
    if cols is None:
        most = max(1, min(panels, int(width // min_panel)))
        rows = -(-panels // most)
        cols = -(-panels // rows)  # 4 panels in 3 columns -> 2 x 2 rather than 3 + 1
    return -(-panels // cols), cols


def _legend_columns(labels: Sequence[str], width: float) -> int:
    """Legend columns that fit in `width` inches (entries as wide as the longest label and its line)."""
    entry = max(_text_width(str(label), _SMALL) for label in labels) + 0.45  # handle, padding, gap
    return max(1, min(len(labels), int(width // entry)))


def _paper_figure(layout: str, height: float, *, advice: str) -> Figure:
    """A constrained-layout figure of the width of `layout` and `height` inches (call inside :func:`paper_style`).

    `advice` completes the error raised when `height` exceeds :data:`PAGE_HEIGHT`.
    """
    import matplotlib.pyplot as plt

    width = _width(layout)
    if height > PAGE_HEIGHT:
        raise ValueError(f"the figure would be {height:.1f} in tall at layout={layout!r} ({width} in wide), more than "
                         f"a page ({PAGE_HEIGHT} in); {advice}")
    return plt.figure(figsize=(width, height), layout="constrained")


#: The end of a too-tall figure's advice: a wider layout holds more panels per row.
_WIDER = {"single": ", or use layout='double' (more panels per row)", "double": ""}


def _titles_height(title: str | None, caption: str | None) -> float:
    """Room in inches for a figure title and a caption (already wrapped), with their padding."""
    return (_text_height(title, PAPER_RC["figure.titlesize"]) + _text_height(caption, _SMALL)
            + 0.06 * (bool(title) + bool(caption)))


#: Colour bars under a grid of maps: their length as a share of the grid's width.
_BAR_SHRINK = 0.6


def _bar_label(label: str, width: float) -> str:
    """A colour bar's `label` wrapped to the length of the bar under a figure `width` inches wide."""
    return _wrap(label, _BAR_SHRINK * width - 0.1, PAPER_RC["axes.labelsize"])


def _colourbar_height(label: str, width: float) -> float:
    """Room in inches for a horizontal colour bar (bar, tick labels) and its `label` in a figure `width` inches wide."""
    return 0.3 + _text_height(_bar_label(label, width), PAPER_RC["axes.labelsize"]) + 0.08


def _colourbar(fig: Figure, mappable: Any, axes: Sequence[Any], label: str) -> Any:
    """One horizontal colour bar under `axes`, its label wrapped to the bar's length (inside the figure)."""
    bar = fig.colorbar(mappable, ax=list(axes), location="bottom", shrink=_BAR_SHRINK, aspect=35, pad=0.02)
    bar.set_label(_bar_label(label, fig.get_figwidth()))
    return bar


def _ate_label(units: str, suffix: str = "") -> str:
    return (f"ATE [{units}]" if units else "ATE") + suffix


def _map_grid(layout: str, titles: Sequence[str], aspect: float, *, cols: int | None, title: str | None,
              caption: str | None, bar_label: str, what: str) -> tuple[Figure, list[Any]]:
    """Figure and axes of image panels (height / width = `aspect`), titled, with room for one colour bar under them.

    Shared by :func:`maps_figure` and :func:`~pdcr_lab.viz.overlay_figure`: panels fill the width,
    wrap into rows, and the height follows; `bar_label` is the label of the colour bar the caller
    adds with :func:`_colourbar`. Returns the figure and its panels (row-major, unused cells removed).
    """
    width = _width(layout)
    rows, cols = _grid(len(titles), width, 1.1, cols)
    # A lone map two columns wide would fill a page: panels stop growing at 3 in (centred, white around).
    side = min((width - 0.1 * (cols + 1)) / cols, 3.0)
    titles = [_wrap(str(t), side, PAPER_RC["axes.titlesize"]) for t in titles]
    title_room = max(_text_height(t, PAPER_RC["axes.titlesize"]) for t in titles) + 0.08
    title = _wrap(title, width - 0.1, PAPER_RC["figure.titlesize"]) if title else None
    caption = _wrap(caption, width - 0.1, _SMALL) if caption else None
    height = (rows * (side * aspect + title_room) + _colourbar_height(bar_label, width)
              + _titles_height(title, caption) + 0.1)
    fig = _paper_figure(layout, height, advice=f"draw fewer {what} per figure{_WIDER[layout]}")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[len(titles):]:
        ax.remove()
    axes = axes[:len(titles)]
    for ax, text in zip(axes, titles):
        ax.set_title(text)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    if caption:
        fig.supxlabel(caption, fontsize=_SMALL)
    return fig, axes


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Context in which figures are made with :data:`PAPER_RC` (restored afterwards; the backend is left alone).

    The paper figure functions draw inside it themselves; use it for figures of your own.

    Examples
    --------
    >>> import matplotlib
    >>> with paper_style():
    ...     matplotlib.rcParams["font.size"]
    8.0
    """
    import matplotlib

    with matplotlib.rc_context(PAPER_RC):
        yield


def save_figure(fig: Figure, stem: str, folder: str | os.PathLike | None = None,
                formats: Sequence[str] = ("pdf", "svg", "png"), dpi: int = 300) -> list[Path]:
    """Write `fig` as ``<folder>/<stem>.<format>`` for every format (PNG at `dpi`); returns the paths.

    The whole canvas is written (no tight crop), so the files are as wide as the figure: 3.5 or
    7.2 in for the paper figures. Text stays text in PDF and SVG.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    stem : str
        File name without the extension.
    folder : str or os.PathLike, optional
        Destination folder, created when missing; default :func:`pdcr_lab.locations.figures_dir`
        (``$PDCR_LAB_FIGURES``, else ``figures`` in the user folder, never the source checkout).
    formats : sequence of str
        Matplotlib output formats; the files carry no date, so re-running rewrites identical files.
    dpi : int
        Resolution of raster formats.

    Examples
    --------
    >>> import tempfile
    >>> import matplotlib.pyplot as plt
    >>> fig = plt.figure(figsize=(3.5, 2.0))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     [path.name for path in save_figure(fig, "demo", folder, formats=("svg", "png"))]
    ['demo.svg', 'demo.png']
    >>> plt.close(fig)
    """
    import matplotlib

    folder = Path(folder) if folder is not None else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context({key: PAPER_RC[key] for key in _SAVE_RC}):
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            # Fixed metadata: re-running the notebook rewrites identical files (no date in them).
            metadata = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None},
                        "png": {"Software": None}}.get(fmt)
            fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
            paths.append(path)
    return paths


def maps_figure(
    results: xr.Dataset | Mapping[Any, xr.Dataset],
    image: Any | None = None,
    *,
    vmax: float | None = None,
    cols: int | None = None,
    title: str | None = None,
    over_image: bool = False,
    layout: Layout | None = None,
    panel_size: float | None = None,
) -> Figure:
    """Effect maps in a grid on ONE symmetric colour scale, with one colour bar under the grid.

    Parameters
    ----------
    results : Dataset or mapping label -> Dataset
        A map, a stack along one dim, or a mapping label -> map (see :func:`split_maps`).
    image : (C, H, W) or (H, W, C) array, optional
        Drawn first, with the RoI of the first map.
    vmax : float, optional
        Half-width of the shared scale (default: max |ATE| over all maps).
    cols : int, optional
        Panels per row (default: as many as fit at least 1.1 in wide, rows as even as possible).
    title : str, optional
        Figure title.
    over_image : bool
        Draw the maps over the image (irrelevant blocks transparent) instead of alone.
    layout : {"single", "double"}, optional
        Width: one column (3.5 in) or two (7.2 in); default single for one panel, double otherwise.
        Panels wrap into rows; more rows than a page holds raise a ValueError.
    panel_size : float, optional
        Deprecated and ignored: the width comes from `layout`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> a = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> fig = maps_figure({"pdcr": a, "occlusion": a}, np.zeros((1, 8, 8)))
    >>> [ax.get_title() for ax in fig.axes[:3]], float(fig.get_figwidth())
    (['image and RoI', 'pdcr', 'occlusion'], 7.2)
    >>> plt.close(fig)
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if panel_size is not None:
        import warnings

        warnings.warn("maps_figure(panel_size=...) is ignored: the width comes from layout='single' (3.5 in) or "
                      "'double' (7.2 in)", DeprecationWarning, stacklevel=2)
    maps = split_maps(results)
    if not maps:
        raise ValueError("results is empty: nothing to draw")
    for label, ds in maps.items():
        extra = [d for d in ds.ate.dims if d not in GRID_DIMS]
        if extra:
            raise ValueError(f"map {label!r} has extra dims {extra}; select one map per panel")
    limit = vmax if vmax is not None else symmetric_limit(np.concatenate([m.ate.values.ravel() for m in maps.values()]))
    pixels = {label: to_pixels(ds)["ate"].values for label, ds in maps.items()}
    first = next(iter(maps.values()))
    rgb = as_display_image(image) if image is not None else None
    titles = (["image and RoI"] if rgb is not None else []) + list(maps)
    shape = next(iter(pixels.values())).shape
    bar_label = _ate_label(first.attrs.get("units", ""), "  (red supports, blue hurts)")
    with paper_style():
        fig, axes = _map_grid(layout or ("single" if len(titles) == 1 else "double"), titles, shape[0] / shape[1],
                              cols=cols, title=title, caption=None, bar_label=bar_label, what="maps")
        panels = iter(axes)
        if rgb is not None:
            ax = next(panels)
            _draw_image(ax, rgb)
            _draw_roi(ax, first)
        mappable = None
        for ax, (label, ds) in zip(panels, maps.items()):
            if rgb is not None and over_image:
                _draw_image(ax, rgb)
                ax.imshow(effect_rgba(pixels[label], limit))
                mappable = ScalarMappable(Normalize(-limit, limit), EFFECT_CMAP)  # the colour bar: full colours
            else:
                mappable = ax.imshow(pixels[label], cmap=EFFECT_CMAP, vmin=-limit, vmax=limit)
            _draw_roi(ax, ds)
        _colourbar(fig, mappable, axes, bar_label)
    return fig


def curves_figure(curves: xr.Dataset, *, title: str | None = None, layout: Layout = "double") -> Figure:
    """Deletion / insertion curves, one panel per curve and policy, one line per method, one y range.

    All panels share the outcome axis, so differences between panels are differences of the
    outcome, not of the axis; one legend for all panels sits under them, outside the axes. The
    areas under the curves are in ``curves["auc"]`` (tabulate them next to the figure).

    Parameters
    ----------
    curves : xarray.Dataset
        Output of :func:`pdcr_lab.faithfulness.deletion_insertion` (``outcome`` over method, policy,
        curve, step, with the ``fraction`` coordinate).
    title : str, optional
        Figure title.
    layout : {"single", "double"}
        Width: one column (3.5 in) or two (7.2 in). Rows are curves and columns policies when the
        policies fit side by side (panels at least 1.4 in wide) and are not fewer than the curves,
        else rows are policies (deletion and insertion side by side).

    Returns
    -------
    matplotlib.figure.Figure
    """
    kinds, policies = [str(v) for v in curves["curve"].values], [str(v) for v in curves["policy"].values]
    methods = [str(v) for v in curves["method"].values]
    width = _width(layout)
    most = max(1, int((width - 0.5) // 1.4))  # 0.5 in: the shared y label and tick labels
    # Rows are curves and columns policies, or the other way round: whichever fits, the wider one when both do.
    if len(kinds) <= most and (len(policies) > most or len(kinds) > len(policies)):
        pairs, cols = [(k, p) for p in policies for k in kinds], len(kinds)
    else:
        pairs, cols = [(k, p) for k in kinds for p in policies], min(len(policies), most)
    rows = -(-len(pairs) // cols)
    panel_width = (width - 0.5) / cols
    titles = [_wrap(f"{k} ({p})", panel_width, PAPER_RC["axes.titlesize"]) for k, p in pairs]
    title = _wrap(title, width - 0.1, PAPER_RC["figure.titlesize"]) if title else None
    ncol = _legend_columns(methods, width - 0.2)
    legend_room = -(-len(methods) // ncol) * _SMALL * 1.6 / 72 + 0.1
    title_room = max(_text_height(t, PAPER_RC["axes.titlesize"]) for t in titles)
    height = rows * (1.25 + title_room) + 0.35 + legend_room + _titles_height(title, None)
    units = curves["outcome"].attrs.get("units", "DSC points")
    with paper_style():
        fig = _paper_figure(layout, height, advice="draw fewer policies or curves per figure")
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        flat = list(axes.ravel())
        for ax, (kind, policy), text in zip(flat, pairs, titles):
            for method in methods:
                values = curves["outcome"].sel({"method": method, "curve": kind, "policy": policy}).values
                style = {"color": "0.55", "ls": "--"} if method == "random" else {}
                ax.plot(curves["fraction"].values, values, label=method, **style)
            ax.set_title(text)
            ax.grid(alpha=0.3, lw=0.5)
        for index, ax in enumerate(flat[len(pairs):], start=len(pairs)):
            ax.remove()
            flat[index - cols].xaxis.set_tick_params(labelbottom=True)  # the panel above is now the lowest
        # Three short ticks: their labels never touch, whatever the panel width.
        flat[0].set_xticks([0.0, 0.5, 1.0], ["0", "0.5", "1"])
        flat[0].set_xlim(0, 1)
        for index, ax in enumerate(flat[:len(pairs)]):
            if index + cols >= len(pairs):  # the lowest panel of its column (a figure x label would meet the legend)
                ax.set_xlabel("fraction of blocks")
        fig.supylabel(f"RoI outcome [{units}]")
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
        if title:
            fig.suptitle(title)
    return fig


def components_figure(report: xr.Dataset, *, title: str | None = None, layout: Layout | None = None) -> Figure:
    """Stage-by-stage effects: a heat map of ATE (rows: models, columns: stages) per dataset, one colour scale.

    Parameters
    ----------
    report : xarray.Dataset
        ``ate`` with dims (model, [dataset], [image], layer), e.g. from
        :func:`pdcr_lab.studies.components_study`; images are averaged, missing stages are grey.
    title : str, optional
        Figure title.
    layout : {"single", "double"}, optional
        Width: one column (3.5 in) or two (7.2 in); default single for one dataset of at most 12
        stages, double otherwise. Datasets stand side by side while their stages keep 0.2 in per
        column, else one above the other.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ate = report["ate"]
    if "image" in ate.dims:
        ate = ate.mean("image")
    sets = list(ate["dataset"].values) if "dataset" in ate.dims else [None]
    models, stages = [str(v) for v in ate["model"].values], [str(v) for v in ate["layer"].values]
    finite = np.isfinite(ate.values)
    limit = symmetric_limit(ate.values[finite]) if finite.any() else 1.0
    names = max(_text_width(m, PAPER_RC["ytick.labelsize"]) for m in models) + 0.15  # model names left of the map
    cell = 0.2  # inches per stage column, so that the stage names can stand rotated
    fits_one_column = len(sets) == 1 and len(stages) * cell <= PAPER_WIDTHS["single"] - names
    layout = layout or ("single" if fits_one_column else "double")
    width = _width(layout)
    rows, cols = _grid(len(sets), width - names, len(stages) * cell)
    column = (width - names - 0.1) / (cols * len(stages))
    narrowest = 1.3 * PAPER_RC["xtick.labelsize"] / 72  # upright stage names: a line of text each, and a gap
    if column < narrowest:
        raise ValueError(f"layout={layout!r} leaves {column:.2f} in per stage for {len(stages)} stages, too narrow for "
                         f"their names (at least {narrowest:.2f} in); use layout='double' or select fewer stages")
    rotation = 60 if column >= cell else 90  # narrow columns: upright names
    longest = max(_text_width(s, PAPER_RC["xtick.labelsize"]) for s in stages)
    stage_room = longest * np.sin(np.radians(rotation)) + 0.12
    units = report["ate"].attrs.get("units", report.attrs.get("units", "DSC points"))
    bar_label = _ate_label(units, "  (red supports, blue hurts)")
    title = _wrap(title, width - 0.1, PAPER_RC["figure.titlesize"]) if title else None
    panel = max(0.16 * len(models), 0.8) + _text_height("x", PAPER_RC["axes.titlesize"]) + 0.08
    height = rows * panel + stage_room + _colourbar_height(bar_label, width) + _titles_height(title, None) + 0.1
    with paper_style():
        fig = _paper_figure(layout, height, advice=f"draw fewer datasets or models per figure{_WIDER[layout]}")
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        flat = list(axes.ravel())
        mappable = None
        for ax, d in zip(flat, sets):
            values = (ate.sel(dataset=d) if d is not None else ate).transpose("model", "layer")
            mappable = ax.imshow(np.ma.masked_invalid(values.values), cmap=EFFECT_CMAP, vmin=-limit, vmax=limit,
                                 aspect="auto", interpolation="nearest")
            ax.set_facecolor("0.85")
            ax.set_title(str(d) if d is not None else "stage effects")
        for index, ax in enumerate(flat[len(sets):], start=len(sets)):
            ax.remove()
            flat[index - cols].xaxis.set_tick_params(labelbottom=True)
        for ax in flat[:len(sets)]:  # tick labels of shared axes share their text, not their rotation
            ax.set_xticks(range(len(stages)), stages, rotation=rotation, ha="right" if rotation < 90 else "center",
                          rotation_mode="anchor" if rotation < 90 else "default")
        flat[0].set_yticks(range(len(models)), models)
        _colourbar(fig, mappable, flat[:len(sets)], bar_label)
        if title:
            fig.suptitle(title)
    return fig
