"""Automatic RoI placement."""

import numpy as np
import pytest

from pdcr_lab.rois import boundary_roi


def test_boundary_roi_sits_on_the_border_and_on_the_grid():
    mask = np.zeros((48, 48), bool)
    mask[8:40, 8:24] = True  # left half foreground
    r, c, h, w = boundary_roi(mask, size=16, block=8)
    assert (h, w) == (16, 16) and r % 8 == 0 and c % 8 == 0
    assert mask[r : r + h, c : c + w].mean() == pytest.approx(0.5)


def test_boundary_roi_errors():
    with pytest.raises(ValueError, match="mask is empty"):
        boundary_roi(np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="size=32 does not fit in the 16x16 mask"):
        boundary_roi(np.ones((16, 16), bool), size=32)
