"""pdcr_lab.outcomes: the RoI state M (Dice, soft Dice, IoU, probability) on hand-computed cases,
several RoIs at once, registering a new outcome, and the outcomes that can show harm without ground
truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pdcr_lab import explain, outcomes
from pdcr_lab.outcomes import OUTCOMES, Dice, IoU, Outcome, Probability, SoftDice, get_outcome, register_outcome
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


# -- outcomes that move both ways without ground truth ------------------------------------------
def test_probability_is_the_mean_class_score_over_each_roi(case):
    _, target = case
    prob = torch.tensor([[0.8, 0.4, 0.2, 0.0]] * 4)[None].repeat(2, 1, 1)
    prob[1] = 1.0 - prob[1]
    rois = torch.zeros(3, 4, 4)
    rois[0] = 1  # every pixel: mean 0.35
    rois[1, :, 0] = 1  # first column: 0.8
    rois[2, 1:3, 1:3] = 1  # centre 2 x 2: (0.4 + 0.2) / 2
    out = Probability()(prob, target, rois)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.numpy(), [[35.0, 80.0, 30.0], [65.0, 20.0, 70.0]], rtol=1e-6)
    # the reference mask plays no part
    torch.testing.assert_close(Probability()(prob, torch.zeros(4, 4), rois), out)
    torch.testing.assert_close(Probability()(prob, torch.ones(4, 4), rois), out)
    assert Probability.needs == "probability" and Probability.units == "probability points"
    assert get_outcome("probability").uses_reference is False and Dice.uses_reference is True


def test_every_builtin_outcome_states_the_question_it_answers():
    for name, outcome in OUTCOMES.items():
        assert outcome.question.endswith("?") and "\n" not in outcome.question, name
    assert "more or less confident that the RoI is foreground" in Probability.question
    assert "model's own factual prediction" in Dice.question


class TwoCauses(nn.Module):
    """Scores every pixel sigmoid(4 (mean of block (0, 0) - mean of block (3, 3)) + 1) on a 32 x 32
    image with 8 x 8 blocks: block (0, 0) raises the model's confidence, block (3, 3) lowers it, and
    no other block matters. On a grey image (0.5) the score is sigmoid(1) = 0.73, all foreground."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        down = x[:, :, 24:, 24:].mean(dim=(1, 2, 3))
        score = torch.sigmoid(4.0 * (up - down) + 1.0)
        return x.new_ones(x.shape[0], 1, *x.shape[-2:]) * score[:, None, None, None]


def _two_causes(outcome: str):
    grey = torch.full((1, 32, 32), 0.5)
    return explain(TwoCauses(), grey, roi=(8, 8, 16, 16), outcome=outcome, intervention="zero", block=8)


def test_gt_free_probability_and_soft_dice_show_harm_as_well_as_support():
    def sig(z: float) -> float:
        return 1.0 / (1.0 + np.exp(-z))

    # zeroing block (0, 0) gives sigmoid(-1): the block supports; zeroing (3, 3) gives sigmoid(3): it hurts
    prob = _two_causes("probability")
    assert float(prob.m0) == pytest.approx(100 * sig(1.0), abs=1e-3)
    assert float(prob.ate[0, 0]) == pytest.approx(100 * (sig(-1.0) - sig(1.0)), abs=1e-3)
    assert float(prob.ate[3, 3]) == pytest.approx(100 * (sig(3.0) - sig(1.0)), abs=1e-3)
    assert prob.attrs["outcome"] == "probability" and prob.attrs["target_source"] == "prediction"

    soft = _two_causes("soft_dice")  # against the all-foreground factual prediction: 200 p / (p + 1)

    def soft_dice(p: float) -> float:
        return 200 * p / (p + 1)

    assert float(soft.m0) == pytest.approx(soft_dice(sig(1.0)), abs=1e-3)
    assert float(soft.ate[0, 0]) < 0 < float(soft.ate[3, 3])
    assert float(soft.ate[3, 3]) == pytest.approx(soft_dice(sig(3.0)) - soft_dice(sig(1.0)), abs=1e-3)
    for ds in (prob, soft):
        others = np.delete(ds.ate.values.ravel(), [0, 15])
        np.testing.assert_array_equal(others, 0.0)


def test_gt_free_dice_starts_at_100_and_can_only_show_support():
    dice = _two_causes("dice")
    assert float(dice.m0) == pytest.approx(100.0)
    assert float(dice.ate[0, 0]) == pytest.approx(-100.0)  # sigmoid(-1) < 0.5: the RoI empties
    assert float(dice.ate[3, 3]) == 0.0  # more confident, same prediction: Dice cannot exceed 100
    assert (dice.ate.values <= 0).all()


def test_probability_outcome_in_explain_matches_the_model_output(tiny_net, image):
    ds = explain(tiny_net, image, roi=ROI, outcome="probability", intervention="zero", block=4)
    with torch.no_grad():
        prob = tiny_net(image[None])[0, 0, 12:20, 12:20]
    assert float(ds.m0) == pytest.approx(100 * float(prob.mean()), abs=1e-3)
    assert ds.attrs["units"] == "probability points"
