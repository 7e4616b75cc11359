"""The batched engine against the naive reference loop, the exact expectation and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import pdcr_lab
from pdcr_lab import PatchBank, explain
from pdcr_lab.interventions import compose, draw_table
from pdcr_lab.testing import CenterSurroundModel, OutOfMemoryAbove, PlantedCauseModel, reference_explain

ROI = (12, 12, 8, 8)


def test_compose_replaces_exactly_one_block(image):
    blocks = torch.full((2, 3, 4, 4), 7.0)
    out = compose(image, torch.tensor([0, 9]), blocks, 4)
    assert out.shape == (2, 3, 32, 32)
    assert torch.all(out[0, :, :4, :4] == 7) and torch.all(out[1, :, 4:8, 4:8] == 7)
    changed = (out != image).any(dim=1)
    assert int(changed[0].sum()) == 16 and int(changed[1].sum()) == 16


def test_one_block_bank_equals_naive_loop(tiny_net, image):
    bank = PatchBank(torch.rand(1, 3, 4, 4))
    ds = explain(tiny_net, image, roi=ROI, bank=bank, block=4, coarse=3, fine=50, batch_size=37)
    table = np.zeros((64, 53), dtype=int)
    expected, forwards = reference_explain(tiny_net, image, ROI, bank_blocks=bank.blocks, table=table, block=4)
    assert np.abs(expected).max() > 0.5, "the test model must have real effects"
    np.testing.assert_allclose(ds.ate.values, expected, atol=1e-4)
    assert int(ds.forwards) == forwards
    assert not ds.ate.values[ds.roi_block.values].any()


def test_zero_intervention_equals_naive_loop(tiny_net, image):
    ds = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    expected, forwards = reference_explain(tiny_net, image, ROI, block=4)
    np.testing.assert_allclose(ds.ate.values, expected, atol=1e-4)
    assert int(ds.forwards) == forwards == 1 + 64 - 4
    assert set(np.unique(ds.n_draws.values)) <= {0, 1}


def test_many_block_bank_equals_naive_loop_with_same_draws(tiny_net, image, small_bank):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, coarse=3, fine=20, seed=5)
    table = draw_table(5, 64, 23, len(small_bank))
    expected, forwards = reference_explain(
        tiny_net, image, ROI, bank_blocks=small_bank.blocks, table=table, block=4, coarse=3, fine=20
    )
    np.testing.assert_allclose(ds.ate.values, expected, atol=1e-4)
    assert int(ds.forwards) == forwards


def test_tau_screening_with_ground_truth_target(tiny_net, image, small_bank):
    target = torch.zeros(32, 32, dtype=torch.bool)
    target[10:22, 10:22] = True
    ds = explain(tiny_net, image, roi=ROI, target=target, bank=small_bank, block=4, tau=0.5, seed=1)
    table = draw_table(1, 64, 53, len(small_bank))
    expected, _ = reference_explain(
        tiny_net, image, ROI, target=target, bank_blocks=small_bank.blocks, table=table, block=4, tau=0.5
    )
    np.testing.assert_allclose(ds.ate.values, expected, atol=1e-4)
    nonzero = ds.ate.values[ds.ate.values != 0]
    assert np.all(np.abs(nonzero) >= 0.5)
    assert ds.attrs["target_source"] == "ground_truth"


def test_estimate_converges_to_exact_expectation_over_bank(tiny_net, image, small_bank):
    ds = explain(
        tiny_net, image, roi=ROI, bank=small_bank, block=4, coarse=0, fine=3000, tau=0.0, outcome="soft_dice", seed=3
    )
    # Exact expectation: the average over the 6 bank blocks, enumerated.
    exact = np.zeros((8, 8))
    for cell in range(64):
        by, bx = divmod(cell, 8)
        if ds.roi_block.values[by, bx]:
            continue
        one = [PatchBank(small_bank.blocks[j : j + 1]) for j in range(len(small_bank))]
        values = []
        for bank in one:
            single = explain(tiny_net, image, roi=ROI, bank=bank, block=4, coarse=0, fine=1, tau=0.0, outcome="soft_dice")
            values.append(single.ate_raw.values[by, bx])
        exact[by, bx] = np.mean(values)
        break_after = cell
        if cell > 20:  # enough blocks for a tight check; the enumeration is slow-ish
            break
    checked = np.zeros((8, 8), dtype=bool)
    checked.reshape(-1)[: break_after + 1] = True
    checked &= ~ds.roi_block.values
    err = np.abs(ds.ate.values - exact)[checked]
    se = ds.stderr.values[checked]
    assert np.all(err <= 4 * se + 1e-6)
    assert np.all(ds.n_draws.values[~ds.roi_block.values] == 3000)


def test_coarse_zero_and_tau_zero_is_full_estimation(tiny_net, image, small_bank):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, coarse=0, fine=10, tau=0.0)
    assert not ds.screened.any()
    assert np.all(ds.n_draws.values[~ds.roi_block.values] == 10)
    np.testing.assert_allclose(ds.ate.values, ds.ate_raw.values)
    assert int(ds.forwards) == 1 + 60 * 10


def test_sign_convention_support_is_negative():
    image = torch.zeros(1, 32, 32)
    image[:, 12:20, 12:20] = 1.0  # the object in the RoI
    image[:, 0:4, 28:32] = 1.0  # the marker that gates the segmentation
    model = PlantedCauseModel(marker=(0, 28, 4))
    ds = explain(model, image, roi=(12, 12, 8, 8), intervention="zero", block=4)
    ate = ds.ate.values
    assert ate[0, 7] == pytest.approx(-100.0, abs=1e-3)  # removing the marker kills the RoI's segment
    others = np.ones_like(ate, dtype=bool)
    others[0, 7] = False
    assert np.all(ate[others] == 0)


def test_sign_convention_harm_is_positive():
    image = torch.zeros(1, 32, 32)
    image[:, 12:18, 12:20] = 1.0  # the object, exactly the target
    image[:, 20:24, 12:20] = 1.0  # bright clutter below it: the 5x5 filter spills it into the RoI
    target = torch.zeros(32, 32)
    target[12:18, 12:20] = 1
    model = CenterSurroundModel(k=5)
    ds = explain(model, image, roi=(12, 12, 8, 8), target=target, intervention="zero", block=4)
    assert ds.ate.sel(block_y=5).values[3:5].min() > 0  # removing clutter improves Dice: it hurt
    far = ds.ate.values.copy()
    far[2:7, 2:7] = 0
    assert np.all(far == 0)  # outside the 5x5 receptive field nothing matters


def test_batch_size_does_not_change_the_map(tiny_net, image, small_bank):
    maps = [
        explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=b).ate.values
        for b in (1, 7, 200)
    ]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-5)


def test_same_seed_identical_other_seed_differs(tiny_net, image, small_bank):
    a = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, seed=4)
    b = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, seed=4)
    c = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, seed=5)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.ate_raw.values, c.ate_raw.values)
    assert a.attrs["seed"] == 4


def test_several_rois_share_forwards_and_match_single_calls(tiny_net, image, small_bank):
    rois = [(12, 12, 8, 8), (0, 0, 8, 8), (20, 4, 8, 8)]
    multi = explain(tiny_net, image, roi=rois, bank=small_bank, block=4, fine=10, seed=2)
    assert multi.ate.dims == ("roi", "block_y", "block_x")
    singles = [explain(tiny_net, image, roi=r, bank=small_bank, block=4, fine=10, seed=2) for r in rois]
    for i, single in enumerate(singles):
        np.testing.assert_allclose(multi.ate.isel(roi=i).values, single.ate.values, atol=1e-5)
        assert float(multi.m0.isel(roi=i)) == pytest.approx(float(single.m0))
    assert int(multi.forwards) < sum(int(s.forwards) for s in singles)


def test_multichannel_softmax_output_and_training_mode_restored(image):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Dropout(0.5))
    model.train()
    ds = explain(model, image, roi=ROI, intervention="zero", block=4)
    assert model.training, "the model's training mode must be restored"
    assert ds.attrs["class_index"] == 1
    again = explain(model, image, roi=ROI, intervention="zero", block=4)
    xr.testing.assert_identical(ds, again)  # eval mode during the call: dropout off


def test_dict_and_tuple_outputs_and_normalisation(tiny_net, image):
    base = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)

    class DictModel(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"aux": x.mean(), "out": self.net(x)}

    class TupleModel(DictModel):
        def forward(self, x):
            return (self.net(x), x)

    class NormalisedModel(DictModel):
        def forward(self, x):  # expects (x - 0.5) / 0.25
            return self.net(x * 0.25 + 0.5)

    for model, kwargs in [
        (DictModel(tiny_net), {}),
        (TupleModel(tiny_net), {}),
        (NormalisedModel(tiny_net), {"normalize": ([0.5] * 3, [0.25] * 3)}),
    ]:
        ds = explain(model, image, roi=ROI, intervention="zero", block=4, **kwargs)
        np.testing.assert_allclose(ds.ate.values, base.ate.values, atol=1e-4)


def test_logit_model_with_sigmoid_activation(tiny_net, image):
    class Logits(torch.nn.Module):
        def forward(self, x):
            return torch.logit(tiny_net(x), eps=1e-6)

    base = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    ds = explain(Logits(), image, roi=ROI, intervention="zero", block=4, activation="sigmoid")
    np.testing.assert_allclose(ds.ate.values, base.ate.values, atol=1e-3)


@pytest.mark.parametrize("name", ["mean", "blur"])
def test_deterministic_interventions_use_one_forward_per_block(tiny_net, image, small_bank, name):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, intervention=name, block=4)
    assert int(ds.forwards) == 61
    assert ds.attrs["intervention"] == name


def test_ground_truth_free_mode_uses_factual_prediction(tiny_net, image):
    ds = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    assert float(ds.m0) == pytest.approx(100.0) or float(ds.m0) == 0.0
    assert ds.attrs["target_source"] == "prediction"


def test_progress_callback_reaches_total(tiny_net, image, small_bank):
    seen = []
    explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=5, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]


def test_out_of_memory_halves_the_batch(tiny_net, image, small_bank):
    fussy = OutOfMemoryAbove(tiny_net, 8, "out of memory (simulated)")
    ds = explain(fussy, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=64)
    ref = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=64)
    np.testing.assert_allclose(ds.ate.values, ref.ate.values, atol=1e-5)
    assert fussy.largest == 8


def test_reference_bank_loads_and_drives_a_256_map(reference_dir):
    bank = PatchBank.from_folder(reference_dir / "intervention_patches")
    assert len(bank) == 1000 and bank.block == 8 and bank.channels == 3
    assert bank.provenance["n_images"] == 773
    from PIL import Image

    img = Image.open(reference_dir / "demo" / "ISIC_0033556.jpg").convert("RGB").resize((256, 256), Image.BILINEAR)
    image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    model = CenterSurroundModel(k=9, channels=3)
    ds = explain(model, 1 - image, roi=(72, 88, 32, 32), bank=bank, coarse=3, fine=4)
    assert ds.ate.shape == (32, 32)
    assert int(ds.roi_block.sum()) == 16
    # The 9x9 receptive field only reaches the blocks next to the RoI.
    far = ds.ate.values.copy()
    far[8:14, 10:16] = 0
    assert np.all(far == 0)
