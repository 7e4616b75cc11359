"""Figures of effect maps. The only place where effects are normalised (for colour only).

Colour convention (METHOD.md section 4): red = the block supports the RoI (ATE < 0), blue = it hurts
it (ATE > 0), white = irrelevant, green outline = the RoI. Scales are symmetric around 0.
"""

from ._static import EFFECT_CMAP, overlay_figure, symmetric_limit

__all__ = ["EFFECT_CMAP", "overlay_figure", "symmetric_limit"]
