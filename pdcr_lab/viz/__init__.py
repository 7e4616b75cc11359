"""Figures of effect maps. The only place where effects are normalised (for colour only).

Colour convention (docs/method.md section 4): red = the block supports the RoI (ATE < 0), blue = it hurts
it (ATE > 0), white = irrelevant, green outline = the RoI. Scales are symmetric around 0.

* static matplotlib figures: :func:`overlay_figure`;
* paper figures (vector, one font >= 7 pt at print size, shared symmetric scales; each takes
  ``layout="single"`` (3.5 in, one journal column) or ``"double"`` (7.2 in), :data:`PAPER_WIDTHS`,
  at most :data:`PAGE_HEIGHT` tall): :func:`paper_style`, :func:`maps_figure`, :func:`curves_figure`,
  :func:`components_figure`, :func:`strategies_figure`, :func:`save_figure` (to
  :func:`pdcr_lab.locations.figures_dir` unless told otherwise);
* interactive holoviews elements for notebooks and the dashboard (call :func:`extension` first; it
  loads the JavaScript inline, no CDN): :func:`map_image`, :func:`overlay`, :func:`side_by_side`,
  :func:`radial_profile`, :func:`composition`, :func:`histogram`, :func:`component_heatmap`,
  :func:`deletion_curves`, :func:`method_maps`. holoviews is imported only when one is drawn;
* a page that opens without internet (every script and stylesheet inline): :func:`standalone_html`.
"""

from ._holoviews import (
    SIGN_COLOURS,
    VIEW_WIDTH,
    component_heatmap,
    composition,
    deletion_curves,
    extension,
    histogram,
    holoviews_backend,
    image_plot,
    map_image,
    method_maps,
    overlay,
    radial_profile,
    roi_outline,
    side_by_side,
)
from ._maps import split_maps
from ._offline import standalone_html
from ._paper import PAGE_HEIGHT, PAPER_RC, PAPER_WIDTHS, components_figure, curves_figure, maps_figure, paper_style, save_figure
from ._static import (
    EFFECT_CMAP,
    OVERLAY_ALPHA,
    as_display_image,
    effect_rgba,
    overlay_figure,
    settings_caption,
    symmetric_limit,
)
from ._strategies import STRATEGY_COLOURS, strategies_figure

__all__ = [
    "EFFECT_CMAP",
    "OVERLAY_ALPHA",
    "PAGE_HEIGHT",
    "PAPER_RC",
    "PAPER_WIDTHS",
    "SIGN_COLOURS",
    "VIEW_WIDTH",
    "STRATEGY_COLOURS",
    "as_display_image",
    "effect_rgba",
    "settings_caption",
    "component_heatmap",
    "components_figure",
    "composition",
    "curves_figure",
    "deletion_curves",
    "extension",
    "histogram",
    "holoviews_backend",
    "image_plot",
    "map_image",
    "maps_figure",
    "method_maps",
    "overlay",
    "overlay_figure",
    "paper_style",
    "radial_profile",
    "roi_outline",
    "save_figure",
    "side_by_side",
    "split_maps",
    "standalone_html",
    "strategies_figure",
    "symmetric_limit",
]
