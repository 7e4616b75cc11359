"""PdCR on volumes: the engine on (C, D, H, W) images with 3-D models and cuboid blocks, against a naive
3-D loop and known answers; the 3-D schema, statistics and storage; the errors volumes get."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdcr_lab
from pdcr_lab import PatchBank, explain
from pdcr_lab.interventions import draw_table
from pdcr_lab.schema import block_shape, grid_dims, stack, to_pixels, validate
from pdcr_lab.testing import PlantedCauseModel, RandomConvNet, assert_effects_equal, reference_effects

ROI = (4, 4, 4, 4, 4, 4)  # (z, row, col, depth, height, width)
REFERENCE_VARS = ["ate", "ate_raw", "stderr", "n_draws", "screened", "roi_block", "m0", "forwards"]


@pytest.fixture
def net3d() -> RandomConvNet:
    return RandomConvNet(channels=1, hidden=3, seed=1, spatial_dims=3).eval()


@pytest.fixture
def volume() -> torch.Tensor:
    return torch.rand(1, 16, 16, 16, generator=torch.Generator().manual_seed(4))


@pytest.fixture
def cube_bank() -> PatchBank:
    return PatchBank(torch.rand(5, 1, 4, 4, 4, generator=torch.Generator().manual_seed(5)), {"recipe": "test"})


# -- the batched engine equals the naive 3-D loop ----------------------------------------------------


def test_one_block_bank_equals_naive_3d_loop(net3d, volume):
    bank = PatchBank(torch.rand(1, 1, 4, 4, 4, generator=torch.Generator().manual_seed(6)))
    ds = explain(net3d, volume, roi=ROI, bank=bank, block=4, coarse=3, fine=10, batch_size=13)
    expected = reference_effects(net3d, volume, ROI, bank_blocks=bank.blocks, table=np.zeros((64, 13), dtype=int),
                                 block=4, coarse=3, fine=10)
    assert np.abs(expected.ate.values).max() > 0.5, "the test model must have real effects"
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)
    assert ds.ate.dims == ("block_z", "block_y", "block_x")


def test_zero_occlusion_equals_naive_3d_loop(net3d, volume):
    ds = explain(net3d, volume, roi=ROI, intervention="zero", block=4)
    expected = reference_effects(net3d, volume, ROI, block=4)
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)
    assert int(ds.forwards) == 1 + 64 - 1


def test_many_block_bank_equals_naive_3d_loop_with_same_draws(net3d, volume, cube_bank):
    ds = explain(net3d, volume, roi=ROI, bank=cube_bank, block=4, coarse=2, fine=6, seed=3)
    table = draw_table(3, 64, 8, len(cube_bank))
    expected = reference_effects(net3d, volume, ROI, bank_blocks=cube_bank.blocks, table=table, block=4,
                                 coarse=2, fine=6)
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)


@pytest.mark.parametrize("side", [1, 4], ids=["one voxel", "a cube"])
def test_a_planted_far_voxel_is_found(side):
    volume = torch.zeros(1, 16, 16, 16)
    volume[:, 8:, 8:, 8:] = 1.0          # the object around the RoI
    volume[:, :side, :side, :side] = 1.0  # the marker in the far corner gates every segmentation
    model = PlantedCauseModel(marker=(0, 0, 0, side))
    ds = explain(model, volume, roi=(8, 8, 8, 4, 4, 4), intervention="zero", block=4)
    ate = ds.ate.values
    assert ate[0, 0, 0] == pytest.approx(-100.0)
    others = np.delete(ate.reshape(-1), 0)
    assert np.all(others == 0), "only the marker cube matters"
    stats = pdcr_lab.statistics(ds)
    assert int(stats.neg) == 1 and int(stats.pos) == 0


def test_anisotropic_blocks_and_mask_rois(net3d):
    volume = torch.rand(1, 8, 16, 16, generator=torch.Generator().manual_seed(2))
    roi = torch.zeros(8, 16, 16, dtype=torch.bool)
    roi[2:4, 6:9, 6:9] = True
    ds = explain(net3d, volume, roi=roi, intervention="zero", block=(2, 4, 4), outcome="soft_dice")
    assert dict(ds.ate.sizes) == {"block_z": 4, "block_y": 4, "block_x": 4}
    assert block_shape(ds) == (2, 4, 4)
    assert ds.z_start.values.tolist() == [0, 2, 4, 6]
    assert ds.roi_mask.dims == ("z", "y", "x") and int(ds.roi_mask.sum()) == 18
    expected_roi_blocks = {(1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2)}
    assert {tuple(int(v) for v in at) for at in np.argwhere(ds.roi_block.values)} == expected_roi_blocks
    assert int(ds.roi_z) == 2 and int(ds.roi_depth) == 2 and int(ds.roi_height) == 3


@pytest.mark.parametrize("intervention", ["mean", "blur"])
def test_deterministic_interventions_run_on_volumes(net3d, volume, intervention):
    ds = explain(net3d, volume, roi=ROI, intervention=intervention, block=4)
    assert set(np.unique(ds.n_draws.values)) <= {0, 1}
    assert np.abs(ds.ate_raw.values).max() > 0


def test_several_rois_share_forwards_and_equal_single_calls(net3d, volume, cube_bank):
    rois = [ROI, (8, 8, 8, 4, 4, 4)]
    both = explain(net3d, volume, roi=rois, bank=cube_bank, block=4, coarse=2, fine=4)
    assert both.ate.dims == ("roi", "block_z", "block_y", "block_x")
    for r, roi in enumerate(rois):
        one = explain(net3d, volume, roi=roi, bank=cube_bank, block=4, coarse=2, fine=4)
        np.testing.assert_allclose(both.ate.isel(roi=r).values, one.ate.values, atol=1e-4)
    assert int(both.forwards) < 2 * int(one.forwards)


def test_adaptive_mode_on_a_volume(net3d, volume, cube_bank):
    ds = explain(net3d, volume, roi=ROI, bank=cube_bank, block=4, mode="adaptive", max_draws=12)
    assert ds.attrs["mode"] == "adaptive"
    assert ds.n_draws.values.max() <= 12 and ds.ate.dims == ("block_z", "block_y", "block_x")


def test_memory_budget_caps_the_batch_of_volumes(net3d, volume, cube_bank):
    runtime: dict = {}
    ds = explain(net3d, volume, roi=ROI, bank=cube_bank, block=4, coarse=1, fine=2, memory_budget=1,
                 runtime=runtime)
    assert runtime["batch_size"] == 1
    assert ds.attrs["forward_path"] == "full"


# -- schema, statistics, storage ---------------------------------------------------------------------


def test_3d_results_validate_stack_save_and_expand_to_voxels(net3d, volume, tmp_path):
    ds = explain(net3d, volume, roi=ROI, intervention="zero", block=4)
    assert grid_dims(ds) == ("block_z", "block_y", "block_x")
    assert ds.attrs["image_depth"] == 16 and ds.attrs["block_shape"] == "[4, 4, 4]"
    both = stack([ds, ds], dim="image", labels=["a", "b"])
    assert both.ate.dims == ("image", "block_z", "block_y", "block_x")
    stats = pdcr_lab.statistics(both)
    assert stats.neg.dims == ("image",)
    assert int(stats.neg[0] + stats.pos[0] + stats.zero[0]) == 63
    pixels = to_pixels(ds)["ate"]
    assert pixels.dims == ("z", "y", "x") and pixels.shape == (16, 16, 16)
    assert float(pixels[13, 2, 9]) == float(ds.ate[3, 0, 2])
    path = pdcr_lab.save(ds, tmp_path / "volume.nc")
    again = validate(pdcr_lab.load(path))
    np.testing.assert_array_equal(again.ate.values, ds.ate.values)
    assert again.attrs["block_shape"] == "[4, 4, 4]"


def test_schema_refuses_z_starts_that_do_not_match_the_block():
    ds = pdcr_lab.schema.empty_effects(grid=(2, 2, 2), block=4)
    broken = ds.assign_coords(z_start=("block_z", [0, 3]))
    with pytest.raises(pdcr_lab.schema.SchemaError, match="z_start does not match block=4"):
        validate(broken)


# -- errors ------------------------------------------------------------------------------------------


def test_wrong_rank_is_refused(net3d):
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\) or a volume \(C, D, H, W\)"):
        explain(net3d, torch.rand(1, 1, 8, 8, 8), roi=(0, 0, 0, 4, 4, 4), intervention="zero", block=4)


def test_a_batch_of_one_2d_image_is_not_taken_for_a_volume(tiny_net, net3d):
    with pytest.raises(ValueError, match=r"read as a volume.*the model's convolutions are 2-D.*pass one 2-D image"):
        explain(tiny_net, torch.rand(1, 3, 32, 32), roi=(0, 0, 0, 1, 4, 4), intervention="zero", block=(1, 4, 4))
    with pytest.raises(ValueError, match=r"read as a volume.*roi is a 2-D \(row, col, height, width\) box"):
        explain(net3d, torch.rand(1, 1, 32, 32), roi=(0, 0, 4, 4), intervention="zero", block=4)


def test_a_model_that_fails_on_a_volume_says_how_a_4d_image_is_read():
    class Flat(torch.nn.Module):  # no convolution to tell its rank: it fails on the volume itself
        def forward(self, x):
            return x.reshape(x.shape[0], 1, 16, 16)

    with pytest.raises(ValueError, match=r"explained as a volume with a 3-D model.*pass it as \(C, H, W\)"):
        explain(Flat(), torch.rand(1, 8, 16, 16), roi=(0, 0, 0, 1, 4, 4), intervention="zero", block=(1, 4, 4))


def test_block_must_tile_each_axis(net3d):
    volume = torch.rand(1, 12, 16, 16)
    with pytest.raises(ValueError, match=r"block=8 does not tile the 12x16x16 volume.*8 does not divide D=12"):
        explain(net3d, volume, roi=(0, 0, 0, 4, 4, 4), intervention="zero", block=8)
    with pytest.raises(ValueError, match=r"block=\(4, 4\) must give 3 integer sides"):
        explain(net3d, volume, roi=(0, 0, 0, 4, 4, 4), intervention="zero", block=(4, 4))


def test_a_2d_bank_for_a_volume_is_refused(net3d, volume):
    flat = PatchBank(torch.rand(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"bank holds 2-D blocks \(cut from images\) of 4x4 but the 3-D grid needs 4 cubes"):
        explain(net3d, volume, roi=ROI, bank=flat, block=4)
    with pytest.raises(ValueError, match=r"bank holds 4x4x4 blocks but block=2"):
        explain(net3d, volume, roi=ROI, bank=PatchBank(torch.rand(3, 1, 4, 4, 4)), block=2)


def test_a_2d_box_on_a_volume_is_refused(net3d, volume):
    with pytest.raises(ValueError, match=r"roi must be a \(z, row, col, depth, height, width\) box"):
        explain(net3d, volume, roi=(4, 4, 4, 4, 4), intervention="zero", block=4)
    with pytest.raises(ValueError, match=r"out of bounds for an volume of 16x16x16"):
        explain(net3d, volume, roi=(14, 4, 4, 4, 4, 4), intervention="zero", block=4)


def test_incremental_on_is_refused_for_volumes(net3d, volume):
    with pytest.raises(ValueError, match="incremental inference is for 2-D images"):
        explain(net3d, volume, roi=ROI, intervention="zero", block=4, incremental="on")


# -- components of 3-D models --------------------------------------------------------------------------


def test_components_of_a_3d_model(net3d, volume):
    from pdcr_lab.components import explain_components, list_components
    from pdcr_lab.testing import dice_points

    assert list_components(net3d) == ["a", "b"]
    donors = torch.rand(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(9))
    natural = explain_components(net3d, volume, roi=ROI, donors=donors, coarse=1, fine=3)
    assert natural.layer.values.tolist() == ["a", "b"] and np.abs(natural.ate_raw.values).max() > 0
    channels = explain_components(net3d, volume, roi=ROI, layers=["a"], unit="channels", donors=donors, groups=3,
                                  coarse=1, fine=3)
    assert channels.ate.dims == ("layer", "unit") and channels.sizes["unit"] == 3
    # zeroing layer a's whole output leaves b(tanh(0)) = b's bias everywhere: a constant prediction
    zero = explain_components(net3d, volume, roi=ROI, layers=["a"], intervention="zero", tau=0.0)
    with torch.no_grad():
        factual = (net3d(volume[None])[0, 0] > 0.5).float()
        constant = (torch.sigmoid(net3d.b(torch.zeros(1, 3, 16, 16, 16)))[0, 0] > 0.5).float()
    roi = torch.zeros(16, 16, 16)
    roi[4:8, 4:8, 4:8] = 1
    expected = float(dice_points(constant, factual, roi) - dice_points(factual, factual, roi))
    assert float(zero.ate.sel(layer="a")) == pytest.approx(expected, abs=1e-4)


def test_cells_of_a_3d_model_are_refused_clearly(net3d, volume):
    from pdcr_lab.components import explain_components

    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\)"):
        explain_components(net3d, volume, roi=ROI, unit="cells", intervention="zero", block=4)


def test_fast_paths_on_a_volume(net3d, volume):
    plain = explain(net3d, volume, roi=ROI, intervention="zero", block=4, outcome="soft_dice")
    weights = {name: p.clone() for name, p in net3d.named_parameters()}
    layout = explain(net3d, volume, roi=ROI, intervention="zero", block=4, outcome="soft_dice", channels_last=True)
    np.testing.assert_allclose(layout.ate_raw.values, plain.ate_raw.values, atol=1e-3)
    assert all(p.is_contiguous() and torch.equal(p, weights[n]) for n, p in net3d.named_parameters())
    low = explain(net3d, volume, roi=ROI, intervention="zero", block=4, outcome="soft_dice", precision="bfloat16",
                  check_precision=True, precision_tolerance=100.0)
    assert low.attrs["precision_ok"] == 1


def test_uint8_and_value_range_volumes_read_like_unit_floats(net3d, volume):
    plain = explain(net3d, volume, roi=ROI, intervention="zero", block=4, outcome="soft_dice")
    scaled = explain(net3d, volume * 1000, roi=ROI, intervention="zero", block=4, outcome="soft_dice",
                     value_range=(0, 1000))
    np.testing.assert_allclose(scaled.ate_raw.values, plain.ate_raw.values, atol=1e-3)
    as_bytes = explain(net3d, (volume * 255).round().to(torch.uint8), roi=ROI, intervention="zero", block=4,
                       outcome="soft_dice")
    assert as_bytes.attrs["value_conversion"] == "uint8 / 255"
