"""pdcr_lab.engine: :func:`explain` against the naive reference loop and known answers, its contract
(seeds, several RoIs, the model restored), its fast paths (precision, compile, channels-last) and the
errors it raises itself. The estimator's own behaviour (batching, out-of-memory, adaptive mode) is in
test_estimator.py. No wall-clock limits here: speed is measured by ``benchmarks/``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from pdcr_lab import PatchBank, explain
from pdcr_lab.engine import PRECISION_TOLERANCE, PrecisionWarning
from pdcr_lab.interventions import draw_table
from pdcr_lab.testing import (
    CenterSurroundModel,
    FailingModel,
    PlantedCauseModel,
    assert_effects_equal,
    reference_effects,
)

ROI = (12, 12, 8, 8)
#: Everything the reference loop computes, with the engine's meaning.
REFERENCE_VARS = ["ate", "ate_raw", "stderr", "n_draws", "screened", "roi_block", "m0", "forwards"]


# -- the batched engine equals the naive loop ---------------------------------------------------


def test_one_block_bank_equals_naive_loop(tiny_net, image):
    bank = PatchBank(torch.rand(1, 3, 4, 4))
    ds = explain(tiny_net, image, roi=ROI, bank=bank, block=4, coarse=3, fine=50, batch_size=37)
    table = np.zeros((64, 53), dtype=int)
    expected = reference_effects(tiny_net, image, ROI, bank_blocks=bank.blocks, table=table, block=4)
    assert np.abs(expected.ate.values).max() > 0.5, "the test model must have real effects"
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)
    assert not ds.ate.values[ds.roi_block.values].any()


def test_zero_intervention_equals_naive_loop(tiny_net, image):
    ds = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    expected = reference_effects(tiny_net, image, ROI, block=4)
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)
    assert int(ds.forwards) == int(expected.forwards) == 1 + 64 - 4
    assert set(np.unique(ds.n_draws.values)) <= {0, 1}


def test_many_block_bank_equals_naive_loop_with_same_draws(tiny_net, image, small_bank):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, coarse=3, fine=20, seed=5)
    table = draw_table(5, 64, 23, len(small_bank))
    expected = reference_effects(
        tiny_net, image, ROI, bank_blocks=small_bank.blocks, table=table, block=4, coarse=3, fine=20
    )
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)


def test_tau_screening_with_ground_truth_target(tiny_net, image, small_bank):
    target = torch.zeros(32, 32, dtype=torch.bool)
    target[10:22, 10:22] = True
    ds = explain(tiny_net, image, roi=ROI, target=target, bank=small_bank, block=4, tau=0.5, seed=1)
    table = draw_table(1, 64, 53, len(small_bank))
    expected = reference_effects(
        tiny_net, image, ROI, target=target, bank_blocks=small_bank.blocks, table=table, block=4, tau=0.5
    )
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)
    nonzero = ds.ate.values[ds.ate.values != 0]
    assert np.all(np.abs(nonzero) >= 0.5)
    assert ds.attrs["target_source"] == "ground_truth"


def test_coarse_zero_and_tau_zero_is_full_estimation(tiny_net, image, small_bank):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, coarse=0, fine=10, tau=0.0)
    assert not ds.screened.any()
    assert np.all(ds.n_draws.values[~ds.roi_block.values] == 10)
    np.testing.assert_allclose(ds.ate.values, ds.ate_raw.values)
    assert int(ds.forwards) == 1 + 60 * 10
    table = draw_table(0, 64, 10, len(small_bank))
    expected = reference_effects(
        tiny_net, image, ROI, bank_blocks=small_bank.blocks, table=table, block=4, coarse=0, fine=10, tau=0.0
    )
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)


# -- known answers: the sign convention ------------------------------------------------------------


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


# -- the call's contract ---------------------------------------------------------------------------


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
    per_roi = [v for v in REFERENCE_VARS if v != "forwards"] + ["roi_mask", "roi_row", "roi_col"]
    for i, single in enumerate(singles):
        assert_effects_equal(multi.isel(roi=i), single, variables=per_roi, rtol=0, atol=1e-5)
    assert int(multi.forwards) < sum(int(s.forwards) for s in singles)


def test_multi_roi_forwards_follow_the_union_of_survivors(tiny_net, image, small_bank):
    rois = [(0, 0, 4, 4), (0, 28, 4, 4), (28, 0, 4, 4), (28, 28, 4, 4), (12, 12, 8, 8), (4, 16, 4, 8)]
    kw = dict(bank=small_bank, block=4, fine=10, seed=3)
    multi = explain(tiny_net, image, roi=rois, **kw)
    singles = [explain(tiny_net, image, roi=r, **kw) for r in rois]
    cand = np.stack([~s.roi_block.values.reshape(-1) for s in singles])
    surv = np.stack([(~s.roi_block.values & ~s.screened.values).reshape(-1) for s in singles])
    expected = 1 + 3 * int(cand.any(0).sum()) + 10 * int(surv.any(0).sum())
    assert int(multi.forwards) == expected
    for i, s in enumerate(singles):
        assert_effects_equal(multi.isel(roi=i), s, variables=["ate"], rtol=0, atol=1e-5)


def test_eight_rois_with_shared_survivors_cost_under_1_3_times_one():
    image = torch.zeros(1, 32, 32)
    image[:, 8:24, 4:28] = 1.0  # the object the RoIs sit on
    image[:, 0:4, 28:32] = 1.0  # the marker that gates every RoI's segmentation
    model = PlantedCauseModel(marker=(0, 28, 4))
    g = torch.Generator().manual_seed(0)
    bank = PatchBank(torch.rand(8, 1, 4, 4, generator=g))
    rois = [(8 + 8 * (i // 4), 4 + 6 * (i % 4), 4, 4) for i in range(8)]
    one = explain(model, image, roi=rois[0], bank=bank, block=4)
    eight = explain(model, image, roi=rois, bank=bank, block=4)
    assert int(eight.forwards) < 1.3 * int(one.forwards)
    assert (eight.ate.isel(block_y=0, block_x=7) < 0).all()  # the marker supports every RoI


def test_multichannel_softmax_output_and_training_mode_restored(image):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Dropout(0.5))
    model.train()
    ds = explain(model, image, roi=ROI, intervention="zero", block=4)
    assert model.training, "the model's training mode must be restored"
    assert ds.attrs["class_index"] == 1
    again = explain(model, image, roi=ROI, intervention="zero", block=4)
    xr.testing.assert_identical(ds, again)  # eval mode during the call: dropout off


def test_ground_truth_free_mode_uses_factual_prediction(tiny_net, image):
    ds = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    assert float(ds.m0) == pytest.approx(100.0) or float(ds.m0) == 0.0
    assert ds.attrs["target_source"] == "prediction"


def test_progress_callback_reaches_total(tiny_net, image, small_bank):
    seen = []
    explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=5, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]


@pytest.mark.parametrize("mode", ["paper", "adaptive"])
def test_keyboard_interrupt_returns_nothing_and_restores_the_model(tiny_net, image, small_bank, mode):
    tiny_net.train()
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    runtime: dict = {}
    result = None
    with pytest.raises(KeyboardInterrupt):
        result = explain(
            tiny_net, image, roi=ROI, bank=small_bank, block=4, batch_size=8, mode=mode,
            channels_last=True, progress=interrupt, runtime=runtime,
        )
    assert result is None and runtime == {}
    assert tiny_net.training, "training mode restored"
    assert all(p.is_contiguous() for p in tiny_net.parameters()), "memory layout restored"
    tiny_net.eval()
    after = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, batch_size=8, mode=mode)
    fresh = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, batch_size=8, mode=mode)
    xr.testing.assert_identical(after, fresh)


# -- fast paths: precision, layout, compile --------------------------------------------------------


def test_bfloat16_stays_within_the_documented_tolerance(tiny_net, image, small_bank):
    kw = dict(roi=ROI, bank=small_bank, block=4, fine=20, outcome="soft_dice", seed=1)
    ref = explain(tiny_net, image, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        low = explain(tiny_net, image, precision="bfloat16", check_precision=True, **kw)
    assert low.attrs["precision"] == "bfloat16" and low.attrs["precision_ok"] == 1
    assert 0 <= low.attrs["precision_error"] <= PRECISION_TOLERANCE
    assert low.attrs["precision_checked"] > 0
    assert_effects_equal(low, ref, variables=["ate_raw"], rtol=0, atol=PRECISION_TOLERANCE)
    assert int(low.forwards) > int(ref.forwards)  # the check's forwards are counted


def test_precision_beyond_tolerance_is_reported_not_hidden(image):
    # Decides on the channel mean with a very sharp threshold: bfloat16 rounding flips pixels.
    knife = CenterSurroundModel(k=1, channels=3, sharpness=4000.0)
    g = torch.Generator().manual_seed(5)
    near = 0.5 + 0.0015 * (torch.rand(3, 32, 32, generator=g) - 0.5)  # every pixel a hair from the threshold
    with pytest.warns(PrecisionWarning, match="float32"):
        ds = explain(knife, near, roi=ROI, block=4, intervention="zero", precision="bfloat16", check_precision=True)
    assert ds.attrs["precision_ok"] == 0
    assert ds.attrs["precision_error"] > PRECISION_TOLERANCE or ds.attrs["precision_m0_error"] > 0


def test_channels_last_gives_the_same_map_and_restores_the_model(tiny_net, image, small_bank):
    kw = dict(roi=ROI, bank=small_bank, block=4, fine=10)
    ref = explain(tiny_net, image, **kw)
    ds = explain(tiny_net, image, channels_last=True, check_precision=True, **kw)
    assert_effects_equal(ds, ref, variables=["ate"], rtol=0, atol=1e-4)
    assert ds.attrs["channels_last"] == 1 and ds.attrs["precision_ok"] == 1
    assert all(p.is_contiguous() for p in tiny_net.parameters())


@pytest.mark.slow
def test_compile_gives_the_same_map(tiny_net, image):
    ref = explain(tiny_net, image, roi=ROI, block=4, intervention="zero")
    try:
        ds = explain(tiny_net, image, roi=ROI, block=4, intervention="zero", compile=True, batch_size=16)
    except Exception as exc:  # pragma: no cover - depends on the machine's compiler
        pytest.skip(f"torch.compile unavailable here: {exc}")
    if ds.attrs["compile"] == 0:
        pytest.skip("torch.compile fell back to eager on this machine")
    assert_effects_equal(ds, ref, variables=["ate"], rtol=0, atol=1e-4)


# -- errors explain raises itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block": 5}, r"block=5 does not tile the 32x32 image; use a block size in \[1, 2, 4, 8, 16, 32\]"),
        ({"roi": (0, 0, 32, 32)}, r"the RoI covers every block"),
    ],
)
def test_bad_arguments(tiny_net, image, quick_explain, kwargs, match):
    with pytest.raises(ValueError, match=match):
        quick_explain(tiny_net, image, **kwargs)


def test_wrong_channel_count(tiny_net, image, quick_explain):
    with pytest.raises(ValueError, match=r"image has 1 channels but the model's first layer expects 3"):
        quick_explain(tiny_net, image[:1])


def test_model_failure_is_reported_with_the_image_shape(image, quick_explain):
    with pytest.raises(ValueError, match=r"the model failed on the image of shape \(3, 32, 32\)"):
        quick_explain(FailingModel("view size is not compatible"), image)
