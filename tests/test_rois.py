"""pdcr_lab.rois: automatic RoI placement and the parsing of the ``roi`` argument (boxes, masks,
lists of them), with the errors it raises."""

import numpy as np
import pytest
import torch

from pdcr_lab.rois import boundary_roi, parse_rois


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


def test_parse_rois_boxes_masks_and_lists():
    masks, boxes, multi = parse_rois((2, 3, 4, 5), (10, 12))
    assert not multi and masks.shape == (1, 10, 12) and boxes.tolist() == [[2, 3, 4, 5]]
    assert int(masks.sum()) == 20 and bool(masks[0, 2:6, 3:8].all())

    shape = np.zeros((10, 12), bool)
    shape[1, 1] = shape[4, 6] = True  # two pixels: the box spans both
    masks, boxes, multi = parse_rois(shape, (10, 12))
    assert not multi and boxes.tolist() == [[1, 1, 4, 6]] and int(masks.sum()) == 2

    masks, boxes, multi = parse_rois([(0, 0, 2, 2), shape], (10, 12))
    assert multi and masks.shape == (2, 10, 12) and boxes.tolist() == [[0, 0, 2, 2], [1, 1, 4, 6]]
    stacked, _, multi = parse_rois(torch.from_numpy(np.stack([shape, shape])), (10, 12))
    assert multi and stacked.shape == (2, 10, 12)


def test_parse_rois_names_the_bad_item_of_a_list():
    with pytest.raises(ValueError, match=r"roi\[1\]=\(9, 9, 4, 4\) \(row, col, height, width\) is out of bounds"):
        parse_rois([(0, 0, 2, 2), (9, 9, 4, 4)], (10, 12))
    with pytest.raises(ValueError, match=r"roi must be a \(row, col, height, width\) box"):
        parse_rois([], (10, 12))


@pytest.mark.parametrize(
    "roi, match",
    [
        ((30, 30, 8, 8), r"roi=\(30, 30, 8, 8\).*out of bounds for an image of 32x32"),
        ((-1, 0, 4, 4), r"out of bounds"),
        ((4, 4, 0, 4), r"roi=\(4, 4, 0, 4\) is empty"),
        (np.zeros((32, 32), bool), r"roi is an empty mask: it covers no pixel"),
        (np.ones((16, 16), bool), r"roi must have shape \(32, 32\)"),
        ("centre", r"roi must be a \(row, col, height, width\) box"),
    ],
)
def test_bad_roi_of_explain(tiny_net, image, quick_explain, roi, match):
    with pytest.raises(ValueError, match=match):
        quick_explain(tiny_net, image, roi=roi)
