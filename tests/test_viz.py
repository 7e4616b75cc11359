"""Static figures: colours follow the sign convention, one map per figure."""

import numpy as np
import pytest
import torch

from pdcr_lab import explain
from pdcr_lab.viz import EFFECT_CMAP, overlay_figure, symmetric_limit


def test_overlay_figure_draws_three_panels(tiny_net, image, small_bank, tmp_path):
    ds = explain(tiny_net, image, roi=(12, 12, 8, 8), bank=small_bank, block=4, fine=5)
    fig = overlay_figure(ds, image, title="t")
    assert len(fig.axes) == 4  # three panels and a colour bar
    shown = fig.axes[2].images[0]
    assert shown.get_cmap().name == EFFECT_CMAP
    lo, hi = shown.get_clim()
    assert lo == -hi == -symmetric_limit(ds.ate)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_colour_map_puts_support_in_red():
    import matplotlib

    cmap = matplotlib.colormaps[EFFECT_CMAP]
    red, _, blue, _ = cmap(0.0)
    assert red > 0.9 and blue < 0.1  # the most negative ATE (support) is red
    red, _, blue, _ = cmap(1.0)
    assert blue > 0.9 and red < 0.1


def test_overlay_refuses_stacked_maps(tiny_net, image):
    ds = explain(tiny_net, image, roi=[(12, 12, 8, 8), (0, 0, 8, 8)], intervention="zero", block=4)
    with pytest.raises(ValueError, match=r"select along \['roi'\] first"):
        overlay_figure(ds)
