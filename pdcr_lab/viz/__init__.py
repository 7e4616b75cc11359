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
* views of 3-D (volumetric) maps: :func:`orthoslices` (three planes with a slider per axis),
  :func:`max_projection` and :func:`signed_max_projection` (signed maximum-intensity projections),
  :func:`volume_figure` (paper figure) and :func:`niivue_view` (3-D viewer, optional ``ipyniivue``);
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
from ._paper import (
    PAGE_HEIGHT,
    PAPER_RC,
    PAPER_WIDTHS,
    components_figure,
    curves_figure,
    maps_figure,
    paper_style,
    save_figure,
)
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
from ._volumes import (
    max_projection,
    niivue_view,
    orthoslices,
    signed_max_projection,
    volume_figure,
)

__all__ = [
    "EFFECT_CMAP",
    "OVERLAY_ALPHA",
    "PAGE_HEIGHT",
    "PAPER_RC",
    "PAPER_WIDTHS",
    "SIGN_COLOURS",
    "STRATEGY_COLOURS",
    "VIEW_WIDTH",
    "as_display_image",
    "component_heatmap",
    "components_figure",
    "composition",
    "curves_figure",
    "deletion_curves",
    "effect_rgba",
    "extension",
    "histogram",
    "holoviews_backend",
    "image_plot",
    "map_image",
    "maps_figure",
    "max_projection",
    "method_maps",
    "niivue_view",
    "orthoslices",
    "overlay",
    "overlay_figure",
    "paper_style",
    "radial_profile",
    "roi_outline",
    "save_figure",
    "settings_caption",
    "side_by_side",
    "signed_max_projection",
    "split_maps",
    "standalone_html",
    "strategies_figure",
    "symmetric_limit",
    "volume_figure",
]
