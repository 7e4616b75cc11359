"""Strategies of volumes: descriptors and labels of 3-D maps (grid block_z, block_y, block_x).

Distances in blocks in 3-D, 26-neighbour paths, the 3 x 3 moment, maps stacked over images, a
one-slice volume against the same 2-D map, a planted far cube found by the engine, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import pdcr_lab
from pdcr_lab import schema
from pdcr_lab.strategies import (
    DESCRIPTORS,
    StrategyThresholds,
    classify,
    descriptors,
    format_table,
    label_maps,
    structure_blocks,
    summarize,
)
from pdcr_lab.testing import PlantedCauseModel

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = ("block_z", "block_y", "block_x")


def volume_map(values: dict[tuple[int, int, int], float] | np.ndarray, roi=((5, 7), (5, 7), (5, 7)),
               grid=(12, 12, 12), block: int | tuple[int, int, int] = 4) -> xr.Dataset:
    """A volume's effects with the given ATE and an RoI of ((z0, z1), (y0, y1), (x0, x1)) blocks."""
    ds = schema.empty_effects(grid=grid, block=block)
    sides = schema.block_shape(ds)
    roi_block = np.zeros(grid, bool)
    roi_block[tuple(slice(a, b) for a, b in roi)] = True
    if isinstance(values, dict):
        ate = np.zeros(grid)
        for p, v in values.items():
            ate[p] = v
    else:
        ate = np.asarray(values, dtype=float).copy()
    ate[roi_block] = 0.0
    mask = np.zeros(tuple(g * s for g, s in zip(grid, sides)), bool)
    mask[tuple(slice(a * s, b * s) for (a, b), s in zip(roi, sides))] = True
    (z0, z1), (y0, y1), (x0, x1) = roi
    bz, by, bx = sides
    return ds.assign(
        ate=(GRID, ate), roi_block=(GRID, roi_block), roi_mask=(("z", "y", "x"), mask),
        roi_z=z0 * bz, roi_row=y0 * by, roi_col=x0 * bx,
        roi_depth=(z1 - z0) * bz, roi_height=(y1 - y0) * by, roi_width=(x1 - x0) * bx,
    )


def one_slice(ds2: xr.Dataset) -> xr.Dataset:
    """A 2-D map as a volume of one slice of blocks (block_z = 1, blocks of 1 x b x b voxels)."""
    gy, gx = ds2.sizes["block_y"], ds2.sizes["block_x"]
    b = int(ds2.attrs["block"])
    vol = schema.empty_effects(grid=(1, gy, gx), block=(1, b, b))
    return vol.assign(
        ate=(GRID, ds2["ate"].values[None]), roi_block=(GRID, ds2["roi_block"].values[None]),
        roi_mask=(("z", "y", "x"), ds2["roi_mask"].values[None]),
    )


def image_map(values: dict[tuple[int, int], float] | np.ndarray, roi=(5, 5, 2, 2), grid=(12, 12)) -> xr.Dataset:
    ds = schema.empty_effects(grid=grid, block=4)
    r, c, h, w = roi
    roi_block = np.zeros(grid, bool)
    roi_block[r : r + h, c : c + w] = True
    ate = np.zeros(grid)
    if isinstance(values, dict):
        for p, v in values.items():
            ate[p] = v
    else:
        ate = np.asarray(values, dtype=float).copy()
    ate[roi_block] = 0.0
    mask = np.zeros((grid[0] * 4, grid[1] * 4), bool)
    mask[r * 4 : (r + h) * 4, c * 4 : (c + w) * 4] = True
    return ds.assign(ate=(("block_y", "block_x"), ate), roi_block=(("block_y", "block_x"), roi_block),
                     roi_mask=(("y", "x"), mask))


# -- distances, paths and the moment in 3-D --------------------------------------------------------
def test_a_single_far_block_is_at_its_euclidean_distance_in_blocks():
    ds = volume_map({(4, 5, 1): -2.0}, roi=((1, 2), (1, 2), (1, 2)), grid=(6, 6, 6))  # offset (3, 4, 0)
    out = descriptors(ds)
    assert float(out.d50) == 5.0 and float(out.mean_distance) == 5.0 and float(out.path_extent) == 0.0
    assert out.radial_mass.sel(ring=5).item() == 2.0 and float(out.radial_mass.sum()) == 2.0
    assert out.sizes["ring"] == 9  # ceil of the grid's diagonal sqrt(3 * 5**2) = 8.66
    assert float(out.near_share) == 0.0 and float(out.path_mass) == 0.0
    assert float(out.nonzero_fraction) == pytest.approx(1 / 215)
    assert out.attrs["grid"] == "6x6x6" and out.attrs["block_shape"] == "[4, 4, 4]"
    assert "26-neighbour" in out.path_steps.attrs["long_name"]
    # The RoI from the recorded box (roi_z, roi_row, ...) when roi_block is missing.
    assert float(descriptors(ds.drop_vars("roi_block")).d50) == 5.0
    # Distances count blocks along each axis, whatever the block's sides in voxels.
    flat_blocks = volume_map({(4, 5, 1): -2.0}, roi=((1, 2), (1, 2), (1, 2)), grid=(6, 6, 6), block=(2, 4, 8))
    assert float(descriptors(flat_blocks).d50) == 5.0
    assert float(descriptors(flat_blocks.drop_vars("roi_block")).d50) == 5.0


def test_d50_uniform_is_taken_over_the_3d_candidates():
    ds = volume_map({(0, 0, 0): -1.0}, roi=((1, 2), (1, 2), (1, 2)), grid=(3, 3, 3))
    out = descriptors(ds)
    # 26 candidates at distance 1 (6), sqrt 2 (12), sqrt 3 (8): half of them lie within sqrt 2.
    assert float(out.d50_uniform) == pytest.approx(np.sqrt(2), rel=1e-6)
    assert float(out.d50) == pytest.approx(np.sqrt(3), rel=1e-6)


def test_26_connectivity_joins_a_chain_stepping_diagonally_in_z_y_and_x():
    chain = {(2 + k, 2 + k, 2 + k): -30.0 for k in range(1, 7)}  # away from the grid's border (closing)
    out = classify(volume_map(chain, roi=((2, 3), (2, 3), (2, 3))))
    assert float(out.path_mass) == 1.0
    assert float(out.path_blocks) == 6.0 and float(out.path_steps) == 6.0 and float(out.path_linearity) == 1.0
    assert float(out.path_extent) == pytest.approx(6 * np.sqrt(3), rel=1e-6)
    assert str(out.label.values) == "sequential"


def test_the_closing_bridges_a_gap_in_a_3d_chain():
    chain = {(5, 5, x): -50.0 for x in (7, 8, 10, 11)}  # one-block gap at x = 9
    out = descriptors(volume_map(chain))
    assert float(out.path_mass) == 1.0 and float(out.path_blocks) == 5.0 and float(out.path_linearity) == 1.0


def test_anisotropy_of_a_line_along_z_and_of_a_shell():
    roi = ((5, 6), (5, 6), (5, 6))
    line = volume_map({(z, 5, 5): -1.0 for z in range(7, 12)}, roi=roi)
    offsets = np.stack(np.meshgrid(*[np.arange(12) - 5] * 3, indexing="ij"), -1)
    radius = np.sqrt((offsets**2).sum(-1))
    shell = volume_map(np.where((radius > 2.5) & (radius <= 3.5), -1.0, 0.0), roi=roi)
    out = descriptors([line, shell], dim="image")
    assert float(out.anisotropy.sel(image=0)) > 0.99
    assert float(out.anisotropy.sel(image=1)) < 0.01


def test_descriptors_of_stacked_volumes_carry_the_stack_dim():
    rng = np.random.default_rng(0)
    maps = [volume_map(np.where(rng.random((6, 6, 6)) < 0.2, rng.normal(size=(6, 6, 6)), 0.0),
                       roi=((r, r + 1), (2, 4), (1, 3)), grid=(6, 6, 6)) for r in (0, 2, 4)]
    voxels = xr.DataArray(rng.random((3, 24, 24, 24)) < 0.01, dims=("image", "z", "y", "x"))
    stacked = schema.stack(maps, dim="image", labels=[0, 1, 2])
    together = descriptors(stacked, structure=voxels)
    assert together.d50.dims == ("image",) and together.radial_mass.dims == ("image", "ring")
    assert not set(GRID) & set(together.coords)
    for i, single in enumerate(maps):
        alone = descriptors(single, structure=voxels.isel(image=i).values)
        for name in DESCRIPTORS:
            np.testing.assert_allclose(together[name].sel(image=i), alone[name], equal_nan=True, err_msg=name)
    labels = classify(stacked, structure=voxels)
    assert labels.label.dims == ("image",) and labels.share.dims == ("image", "strategy")


def test_structure_blocks_of_a_volume():
    ds = volume_map({}, grid=(3, 3, 3), roi=((1, 2), (1, 2), (1, 2)), block=(2, 4, 4))
    voxels = np.zeros((6, 12, 12), bool)
    voxels[5, 1, 9] = True  # one voxel in block (2, 0, 2)
    blocks = structure_blocks(voxels, ds)
    assert blocks.dims == GRID and int(blocks.sum()) == 1 and bool(blocks[2, 0, 2])
    assert int(structure_blocks(voxels, ds, min_fraction=0.5).sum()) == 0
    on_grid = structure_blocks(blocks.values, ds)  # a (block_z, block_y, block_x) array is taken as blocks
    assert on_grid.equals(blocks)
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        structure_blocks(np.zeros((12, 12), bool), ds)
    with pytest.raises(ValueError, match="6x12x12 voxels"):
        structure_blocks(np.zeros((6, 12, 8), bool), ds)


def test_structure_share_follows_26_connected_structure():
    ds = volume_map({(7, 7, 7): -1.0, (0, 0, 0): -1.0})
    structure = np.zeros((12, 12, 12), bool)
    for k in range(7, 10):
        structure[k, k, k] = True  # diagonal from the RoI's corner (6, 6, 6)
    structure[0, 0, 0] = True  # isolated
    out = descriptors(ds, structure=structure)
    assert float(out.structure_share) == pytest.approx(0.5)
    assert float(out.structure_chance) == pytest.approx(3 / (12**3 - 8))


# -- a volume of one slice is the 2-D map ----------------------------------------------------------
def test_a_one_slice_volume_has_the_descriptors_and_labels_of_the_2d_map():
    rng = np.random.default_rng(1)
    images = [
        image_map({(4, 4): -3.0, (5, 7): -2.0, (7, 6): 1.0}),  # local
        image_map(np.full((12, 12), -0.5)),  # global
        image_map({(5, x): -40.0 for x in range(7, 12)} | {(y, 11): -40.0 for y in range(0, 5)}),  # sequential
        image_map({(y, x): -40.0 for y in (5, 6) for x in range(7, 12)}),  # a band two blocks wide
        image_map({(5, 7): -1.0, (0, 0): -1.0}),  # mixed
        image_map(np.where(rng.random((12, 12)) < 0.3, rng.normal(size=(12, 12)), 0.0), roi=(2, 8, 1, 2)),
    ]
    flat = classify(images, dim="image")
    thick = classify([one_slice(ds) for ds in images], dim="image")
    assert list(flat.label.values[:5]) == ["local", "global", "sequential", "sequential", "mixed"]
    np.testing.assert_array_equal(thick.label.values, flat.label.values)
    for name in DESCRIPTORS:
        if name == "anisotropy":  # the slice's mass does not spread along z: l_min = 0
            assert (thick[name] == 1.0).all()
            continue
        np.testing.assert_array_equal(thick[name].values, flat[name].values, err_msg=name)
    assert "threshold_min_linearity_grid" not in thick.attrs  # one slice: the 2-D rule


# -- labels of volumes -----------------------------------------------------------------------------
def test_thick_tubes_are_paths_and_balls_are_not():
    tube = volume_map({(z, y, x): -40.0 for z in (5, 6) for y in (5, 6) for x in range(7, 12)})  # 2 x 2 tube
    offsets = np.stack(np.meshgrid(*[np.arange(12) - 5.5] * 3, indexing="ij"), -1)
    ball = volume_map(np.where(np.sqrt((offsets**2).sum(-1)) <= 4.0, -1.0, 0.0))
    chain = volume_map({(5, 5, x): -40.0 for x in range(7, 12)})
    flat = volume_map(np.full((12, 12, 12), -0.5))
    out = classify([tube, ball, chain, flat], dim="image")
    assert float(out.path_linearity.sel(image=0)) == pytest.approx(0.25)
    assert float(out.path_linearity.sel(image=1)) < 0.09
    assert list(out.is_path.values) == [True, False, True, False]
    assert list(out.label.values) == ["sequential", "mixed", "sequential", "global"]
    assert out.attrs["threshold_min_linearity"] == pytest.approx(0.3)
    assert out.attrs["threshold_min_linearity_grid"] == pytest.approx(0.09)
    assert float(out.near_share.sel(image=3)) < 0.15  # the near ball is a small part of a volume
    strict = classify(tube, thresholds=StrategyThresholds(min_linearity=0.6))  # 0.36 > 1/4
    assert str(strict.label.values) != "sequential"


def test_a_planted_far_cube_is_found_and_labelled_global():
    volume = torch.zeros(1, 24, 24, 24)
    volume[:, 2:8, 2:8, 2:8] = 1.0  # the object under the RoI
    volume[:, 16:20, 16:20, 16:20] = 1.0  # the marker cube: block (4, 4, 4)
    model = PlantedCauseModel(marker=(16, 16, 16, 4))
    result = pdcr_lab.explain(model, volume, roi=(4, 4, 4, 4, 4, 4), intervention="zero", block=4)
    assert result.ate.dims == GRID
    np.testing.assert_array_equal(np.argwhere(result.ate.values != 0), [[4, 4, 4]])
    out = classify(result)
    assert float(out.d50) == pytest.approx(np.sqrt(27), rel=1e-6)  # from RoI block (1, 1, 1)
    assert float(out.near_share) == 0.0 and float(out.path_mass) == 0.0 and float(out.balance) == 1.0
    assert float(out.share.sel(strategy="global")) == 1.0
    assert str(out.label.values) == "global" and float(out.confidence) == 1.0


def test_labelled_volumes_are_summarised_and_reported():
    rng = np.random.default_rng(2)

    def cell() -> xr.Dataset:
        maps = [volume_map(np.where(rng.random((5, 5, 5)) < 0.3, -rng.random((5, 5, 5)), 0.0),
                           roi=((2, 3), (2, 3), (2, 3)), grid=(5, 5, 5)) for _ in range(3)]
        return schema.stack(maps, dim="image", labels=[0, 1, 2])

    maps = schema.stack({m: schema.stack({d: cell() for d in ("a", "b")}, dim="dataset") for m in ("u", "v")},
                        dim="model")
    maps["structure_mask"] = xr.DataArray(rng.random((2, 3, 20, 20, 20)) < 0.05,
                                          dims=("dataset", "image", "z", "y", "x"),
                                          coords={"dataset": ["a", "b"]})
    result = label_maps(maps)
    assert set(result.label.dims) == {"model", "dataset", "image"}
    assert {"roi_z", "roi_depth"} <= set(result.data_vars)
    assert result.attrs["threshold_min_linearity_grid"] == pytest.approx(0.09)
    summary = summarize(result, n_boot=50)
    assert summary["share"].dims == ("model", "dataset", "label", "stat") and "tvd" in summary
    table = format_table(summary, result.assign_attrs(report_roi_size=4))
    assert "blocks of 4 x 4 x 4 voxels" in table and "4 x 4 x 4 RoI" in table and "0.09 on the 3-D grid" in table


# -- bad input -------------------------------------------------------------------------------------
def test_images_and_volumes_are_not_mixed():
    image, volume = image_map({(5, 8): -1.0}), volume_map({(5, 5, 8): -1.0})
    with pytest.raises(ValueError, match="different rank"):
        descriptors([image, volume])
    with pytest.raises(ValueError, match="different rank"):
        classify({"image": image, "volume": volume})
    with pytest.raises(ValueError, match="volume's mask"):
        descriptors(image, structure=xr.DataArray(np.zeros((4, 48, 48), bool), dims=("z", "y", "x")))
    with pytest.raises(ValueError, match=r"\(\.\.\., z, y, x\)"):
        descriptors(volume, structure=xr.DataArray(np.zeros((48, 48), bool), dims=("y", "x")))


def test_volumes_of_different_grids_are_refused():
    small = volume_map({(1, 1, 1): -1.0}, roi=((2, 3), (2, 3), (2, 3)), grid=(6, 6, 6))
    with pytest.raises(ValueError, match="different grids"):
        descriptors([volume_map({(5, 5, 8): -1.0}), small])
    other_blocks = volume_map({(5, 5, 8): -1.0}, block=(2, 4, 4))
    with pytest.raises(ValueError, match=r"different grids.*voxels"):
        classify([volume_map({(5, 5, 8): -1.0}), other_blocks])
    with pytest.raises(ValueError, match="no RoI is recorded"):
        descriptors(schema.empty_effects(grid=(3, 3, 3), block=4))
