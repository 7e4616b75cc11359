"""pdcr_lab.outcomes: the RoI state M (Dice, soft Dice, IoU) on hand-computed cases, several RoIs at
once, and registering a new outcome."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdcr_lab import explain, outcomes
from pdcr_lab.outcomes import OUTCOMES, Dice, IoU, Outcome, SoftDice, get_outcome, register_outcome
from pdcr_lab.testing import dice_points

ROI = (12, 12, 8, 8)


@pytest.fixture
def case():
    """4 x 4: prediction = the top two rows (8 px), target = the top-left 2 x 3 block (6 px), overlap 6."""
    pred = torch.zeros(1, 4, 4)
    pred[0, :2] = 1
    target = torch.zeros(4, 4)
    target[:2, :3] = 1
    return pred, target


def test_dice_and_iou_by_hand(case):
    pred, target = case
    everything = torch.ones(1, 4, 4)
    assert float(Dice()(pred, target, everything)) == pytest.approx(100 * 2 * 6 / (8 + 6))
    assert float(IoU()(pred, target, everything)) == pytest.approx(100 * 6 / 8)
    torch.testing.assert_close(Dice()(pred, target, everything)[:, 0], dice_points(pred, target, everything[0]))


def test_several_rois_in_one_reduction(case):
    pred, target = case
    rois = torch.zeros(3, 4, 4)
    rois[0, :2, :2] = 1  # predicted and target: perfect
    rois[1, :2, 3] = 1  # predicted, not target: 0
    rois[2, 2:, :] = 1  # neither: 0 (the 1e-10 smoothing keeps it finite)
    out = Dice()(pred.repeat(2, 1, 1), target, rois)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.numpy(), [[100.0, 0.0, 0.0]] * 2, atol=1e-4)


def test_soft_dice_is_the_dice_formula_on_probabilities(case):
    _, target = case
    prob = torch.full((1, 4, 4), 0.5)
    everything = torch.ones(1, 4, 4)
    # 2 * sum(p g) / (sum(p) + sum(g)) = 2 * 3 / (8 + 6)
    assert float(SoftDice()(prob, target, everything)) == pytest.approx(100 * 6 / 14)
    assert SoftDice.needs == "probability" and Dice.needs == "binary" and SoftDice.units == "DSC points"


def test_get_outcome_resolves_names_and_passes_instances():
    assert isinstance(get_outcome("iou"), IoU)
    mine = Dice()
    assert get_outcome(mine) is mine
    with pytest.raises(ValueError, match=r"outcome='hd95' is not supported; expected one of \['dice', 'soft_dice', 'iou'"):
        get_outcome("hd95")


def test_registered_outcome_drives_explain(tiny_net, image, monkeypatch):
    monkeypatch.setattr(outcomes, "OUTCOMES", dict(OUTCOMES))  # leave the real registry untouched

    class Recall(Outcome):
        name, units, needs = "recall", "recall points", "binary"

        def reduce(self, inter, pred_sum, target_sum):
            return 100.0 * inter / (target_sum + 1e-10)

    register_outcome(Recall())
    target = torch.zeros(32, 32, dtype=torch.bool)
    target[12:20, 12:20] = True
    ds = explain(tiny_net, image, roi=ROI, target=target, outcome="recall", intervention="zero", block=4)
    assert ds.attrs["outcome"] == "recall" and ds.attrs["units"] == "recall points"
    with torch.no_grad():
        pred = (tiny_net(image[None])[0, 0] > 0.5)[12:20, 12:20]
    assert float(ds.m0) == pytest.approx(100 * float(pred.float().mean()), abs=1e-4)
    with pytest.raises(TypeError, match=r"outcome must be an Outcome instance"):
        register_outcome("recall")
