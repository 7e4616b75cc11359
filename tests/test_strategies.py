"""Strategies: descriptor formulas on hand-made maps, the classifier's rule and its bad inputs, the
labels of models whose strategy is known by construction, and the statistics and table of labelled
maps (the zoo study that produces them is tested in tests/test_studies.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import pdcr_lab
from pdcr_lab import schema
from pdcr_lab.strategies import (
    ConnectivityModel,
    GlobalContrastModel,
    StrategyThresholds,
    classify,
    descriptors,
    format_table,
    label_maps,
    path_task,
    structure_blocks,
    summarize,
)
from pdcr_lab.testing import CenterSurroundModel, PlantedCauseModel


pytestmark = pytest.mark.usefixtures("one_thread")


def effect_map(values: dict[tuple[int, int], float] | np.ndarray, roi=(5, 5, 2, 2), grid=(12, 12), block=4):
    """An effects dataset with the given ATE values and an RoI of (row, col, h, w) blocks."""
    ds = schema.empty_effects(grid=grid, block=block)
    r, c, h, w = roi
    roi_block = np.zeros(grid, bool)
    roi_block[r : r + h, c : c + w] = True
    ate = np.zeros(grid)
    if isinstance(values, dict):
        for (y, x), v in values.items():
            ate[y, x] = v
    else:
        ate = np.asarray(values, dtype=float).copy()
    ate[roi_block] = 0.0
    mask = np.zeros((grid[0] * block, grid[1] * block), bool)
    mask[r * block : (r + h) * block, c * block : (c + w) * block] = True
    return ds.assign(
        ate=(("block_y", "block_x"), ate),
        roi_block=(("block_y", "block_x"), roi_block),
        roi_mask=(("y", "x"), mask),
        roi_row=r * block, roi_col=c * block, roi_height=h * block, roi_width=w * block,
    )


# -- descriptors ---------------------------------------------------------------------------------
def test_single_block_descriptors():
    out = descriptors(effect_map({(5, 9): -4.0}))  # RoI columns 5-6: block (5, 9) is 3 blocks away
    assert float(out.mass) == 4.0 and float(out.support) == 4.0 and float(out.harm) == 0.0
    assert float(out.balance) == 1.0
    assert float(out.d50) == 3.0 and float(out.mean_distance) == 3.0
    assert out.radial_mass.sel(ring=3).item() == 4.0 and float(out.radial_mass.sum()) == 4.0
    assert float(out.n_eff) == pytest.approx(1.0)
    assert float(out.nonzero_fraction) == pytest.approx(1 / 140)
    assert float(out.near_share) == 0.0
    assert out.mass.attrs["units"] == "DSC points"


def test_balance_counts_support_against_harm():
    out = descriptors(effect_map({(5, 8): -3.0, (2, 2): 1.0}))
    assert float(out.balance) == pytest.approx((3 - 1) / (3 + 1))
    assert float(out.support) == 3.0 and float(out.harm) == 1.0


def test_flat_map_is_maximally_spread():
    out = descriptors(effect_map(np.full((12, 12), -0.5)))
    assert float(out.n_eff_fraction) == pytest.approx(1.0)
    assert float(out.nonzero_fraction) == 1.0
    assert float(out.d50_rel) == pytest.approx(1.0)
    assert float(out.anisotropy) < 0.1
    assert 0.15 < float(out.near_share) < 0.25  # the near disc holds about a fifth of the grid


def test_anisotropy_of_a_line_and_of_a_ring():
    line = descriptors(effect_map({(5, x): -1.0 for x in range(7, 12)}))
    around = [(3, 5), (3, 6), (8, 5), (8, 6), (5, 3), (6, 3), (5, 8), (6, 8)]  # two blocks out, on all sides
    ring = descriptors(effect_map(dict.fromkeys(around, -1.0)))
    assert float(line.anisotropy) > 0.95
    assert float(ring.anisotropy) < 0.05


def test_path_bridges_small_gaps_and_measures_a_chain():
    chain = {(5, x): -50.0 for x in (7, 8, 10, 11)}  # one-block gap at column 9
    out = descriptors(effect_map(chain))
    assert float(out.path_mass) == 1.0
    assert float(out.path_extent) == 5.0
    assert float(out.path_blocks) == 5.0  # the bridged gap counts as part of the chain
    assert float(out.path_linearity) == 1.0
    blob = descriptors(effect_map({(y, x): -1.0 for y in range(2, 10) for x in range(2, 10)}))
    assert float(blob.path_linearity) < 0.1


def test_structure_share_counts_only_structure_connected_to_the_roi():
    ds = effect_map({(5, 9): -1.0, (0, 0): -1.0})
    structure = np.zeros((12, 12), bool)
    structure[5, 7:12] = True  # connected to the RoI
    structure[0, 0] = True  # isolated: not part of the RoI's structure
    out = descriptors(ds, structure=structure)
    assert float(out.structure_share) == pytest.approx(0.5)
    assert float(out.structure_chance) == pytest.approx(5 / 140)
    assert np.isnan(float(descriptors(ds).structure_share))


def test_structure_from_pixels_marks_blocks_with_any_pixel():
    ds = effect_map({})
    pixels = np.zeros((48, 48), bool)
    pixels[21, 30] = True  # one pixel in block (5, 7)
    blocks = structure_blocks(pixels, ds)
    assert blocks.dims == ("block_y", "block_x") and int(blocks.sum()) == 1 and bool(blocks[5, 7])
    assert int(structure_blocks(pixels, ds, min_fraction=0.5).sum()) == 0


def test_descriptors_are_vectorised_over_stack_dims():
    rng = np.random.default_rng(0)
    maps = {m: [effect_map(np.where(rng.random((12, 12)) < 0.2, rng.normal(size=(12, 12)), 0), roi=(r, 3, 2, 2))
                for r in (1, 6, 9)] for m in ("a", "b")}
    structure = xr.DataArray(rng.random((3, 48, 48)) < 0.05, dims=("image", "y", "x"))
    stacked = schema.stack({m: schema.stack(v, dim="image", labels=[0, 1, 2]) for m, v in maps.items()}, dim="model")
    together = descriptors(stacked, structure=structure)
    assert together.d50.dims == ("model", "image")
    for m in maps:
        for i, single in enumerate(maps[m]):
            alone = descriptors(single, structure=structure.isel(image=i).values)
            for name in ("d50", "n_eff", "anisotropy", "structure_share", "path_mass", "balance"):
                np.testing.assert_allclose(together[name].sel(model=m, image=i), alone[name], equal_nan=True)


def test_descriptors_accept_a_list_on_one_grid():
    out = descriptors([effect_map({(5, 8): -1.0}), effect_map({(5, 9): -1.0})], dim="image")
    np.testing.assert_allclose(out.d50.values, [2.0, 3.0])


# -- classifier ----------------------------------------------------------------------------------
def test_labels_of_hand_made_maps():
    local = effect_map({(4, 4): -3.0, (5, 7): -2.0, (7, 6): 1.0})
    flat = effect_map(np.full((12, 12), -0.5))
    chain = effect_map({(5, x): -40.0 for x in range(7, 12)} | {(y, 11): -40.0 for y in range(0, 5)})
    mixed = effect_map({(5, 7): -1.0, (0, 0): -1.0})
    empty = effect_map({})
    out = classify([local, flat, chain, mixed, empty], dim="image")
    assert list(out.label.values) == ["local", "global", "sequential", "mixed", "no effect"]
    assert out.confidence.sel(image=4) == 1.0
    assert ((out.confidence >= 0) & (out.confidence <= 1)).all()
    assert np.isnan(out.share.sel(image=4)).all()
    np.testing.assert_allclose(out.share.isel(image=slice(0, 4)).sum("strategy"), 1.0)


def test_a_compact_cluster_at_the_roi_is_not_a_path():
    # Strong blocks around the RoI, one of them just past the near radius: chain-shaped after the
    # closing, but almost none of its mass leads away from the RoI.
    # A map of the zoo's segformer on a lesion, which a rule asking only that the path "reach past
    # the near radius" called sequential.
    values = {(4, 2): -0.1, (4, 4): 0.1, (4, 7): -0.8, (5, 3): -0.3, (5, 4): 0.1, (5, 7): 0.6, (5, 8): -1.7,
              (5, 9): -0.7, (7, 5): -0.3, (7, 7): -2.2, (8, 8): -0.5, (8, 9): -0.1}
    cluster = effect_map(values, roi=(6, 8, 2, 2))
    out = classify(cluster)
    assert float(out.path_linearity) >= 0.3 and float(out.path_blocks) > 5  # chain-shaped after the closing
    assert float(out.path_far_share) < 1 / 3 and not bool(out.is_path)
    assert str(out.label.values) == "local"


def test_sequential_needs_the_path_on_structure_when_structure_is_given():
    chain = effect_map({(5, x): -40.0 for x in range(7, 12)})
    on = np.zeros((12, 12), bool)
    on[5, :] = True
    off = np.zeros((12, 12), bool)
    off[0, :] = True
    assert str(classify(chain, structure=on).label.values) == "sequential"
    assert str(classify(chain, structure=off).label.values) == "global"


def test_confidence_is_the_margin_of_the_decision():
    t = StrategyThresholds()
    half = effect_map({(5, 7): -1.0, (0, 0): -1.0})  # local 0.5, global 0.5: mixed
    out = classify(half)
    assert str(out.label.values) == "mixed"
    assert float(out.confidence) == pytest.approx((t.dominance - 0.5) / (t.dominance - 1 / 3))
    mostly = effect_map({(5, 7): -4.0, (0, 0): -1.0})  # local 0.8
    assert float(classify(mostly).confidence) == pytest.approx((0.8 - t.dominance) / (1 - t.dominance))


def test_thresholds_are_frozen_and_checked():
    t = StrategyThresholds()
    with pytest.raises(Exception):
        t.near = 3.0
    with pytest.raises(ValueError, match="dominance"):
        StrategyThresholds(dominance=0.3)
    with pytest.raises(ValueError, match="min_linearity"):
        StrategyThresholds(min_linearity=2.0)
    with pytest.raises(TypeError, match="thresholds"):
        classify(effect_map({}), thresholds={"near": 2})
    loose = classify(effect_map({(5, 7): -1.0, (0, 0): -1.0}), thresholds=StrategyThresholds(dominance=0.5))
    assert str(loose.label.values) in ("local", "global")
    assert loose.attrs["threshold_dominance"] == 0.5


# -- bad input -----------------------------------------------------------------------------------
def test_map_without_recorded_roi_is_refused():
    ds = effect_map({(5, 8): -1.0})
    with pytest.raises(ValueError, match="no recorded RoI"):
        classify(ds.drop_vars(["roi_block", "roi_row", "roi_col", "roi_height", "roi_width"]))
    with pytest.raises(ValueError, match=r"no RoI is recorded for the maps"):
        classify(schema.empty_effects(grid=(4, 4), block=4))
    # Without roi_block the RoI is taken from the recorded box.
    from_box = descriptors(ds.drop_vars("roi_block"))
    assert float(from_box.d50) == 2.0


def test_maps_of_different_grids_are_refused():
    small = effect_map({(1, 1): -1.0}, roi=(2, 2, 1, 1), grid=(6, 6))
    with pytest.raises(ValueError, match="different grids"):
        classify([effect_map({(5, 8): -1.0}), small])
    other_block = effect_map({(5, 8): -1.0}, block=8)
    with pytest.raises(ValueError, match="different grids"):
        descriptors({"a": effect_map({(5, 8): -1.0}), "b": other_block})
    padded = xr.concat([effect_map({}).expand_dims(image=[0]), small.expand_dims(image=[1])], dim="image",
                       join="outer", coords="minimal", compat="override")
    with pytest.raises(ValueError, match="different grids"):
        descriptors(padded.transpose("image", ...))


def test_component_effects_are_refused():
    ds = xr.Dataset(
        {"ate": ("layer", [0.1, 0.2]), "stderr": ("layer", [0.0, 0.0]), "n_draws": ("layer", [1, 1]), "m0": 90.0},
        coords={"layer": ["a", "b"]},
        attrs={"schema_version": 1, "method": "pdcr", "block": 4, "outcome": "dice", "units": "DSC points", "seed": 0},
    )
    with pytest.raises(ValueError, match="block grid"):
        classify(ds)


def test_non_datasets_are_refused():
    with pytest.raises(TypeError, match="effects"):
        classify(np.zeros((12, 12)))


# -- validation: models whose strategy is known by construction ---------------------------------
@pytest.fixture(scope="module")
def task():
    return path_task(2, seed=0)


@pytest.mark.parametrize(
    ("expected", "make"),
    [
        ("local", lambda task: CenterSurroundModel(k=3)),
        ("global", lambda task: GlobalContrastModel()),
        ("sequential", lambda task: ConnectivityModel(task.source)),
        # A single remote cause (the source block gates everything) is global: far, and no chain.
        ("global", lambda task: PlantedCauseModel((task.source[0], task.source[1], task.source[2]))),
    ],
    ids=["box-filter", "global-pooling", "connectivity", "remote-cause"],
)
def test_known_strategies_are_labelled_correctly(task, expected, make):
    model = make(task)
    maps = [
        pdcr_lab.explain(model, task.images[i], roi=task.rois[i], bank=task.bank, block=task.block, fine=10, seed=0)
        for i in range(len(task.images))
    ]
    structure = xr.DataArray(task.vessels.numpy(), dims=("image", "y", "x"))
    out = classify(maps, structure=structure, dim="image")
    assert list(out.label.values) == [expected] * len(maps), out.share.values
    assert (out.confidence > 0.2).all()


def test_path_task_is_what_it_claims(task):
    model = ConnectivityModel(task.source)
    with torch.no_grad():
        predicted = model(task.images) > 0.5
    np.testing.assert_array_equal(predicted[:, 0].numpy(), task.masks.numpy())
    assert (task.vessels & ~task.masks).any()  # distractor vessels exist and are background
    for (r, c, h, w), mask in zip(task.rois, task.masks):
        assert mask[r : r + h, c : c + w].any()
        assert c >= task.images.shape[-1] // 2  # far from the source at the left edge


# -- statistics of labelled maps ------------------------------------------------------------------
def _fake_result(labels: dict[tuple[str, str], list[str]], d50: dict[tuple[str, str], list[float]]) -> xr.Dataset:
    models = sorted({m for m, _ in labels})
    sets = sorted({d for _, d in labels})
    n = len(next(iter(labels.values())))
    lab = np.array([[labels[m, d] for d in sets] for m in models], dtype=object).astype(str)
    val = np.array([[d50[m, d] for d in sets] for m in models], dtype=float)
    coords = {"model": models, "dataset": sets, "image": np.arange(n)}
    dims = ("model", "dataset", "image")
    data = {"label": (dims, lab), "d50": (dims, val)}
    for name in ("near_share", "n_eff_fraction", "anisotropy", "balance", "structure_share", "path_mass"):
        data[name] = (dims, np.zeros_like(val))
    return xr.Dataset(data, coords=coords)


def test_summarize_shares_intervals_and_shift():
    result = _fake_result(
        {("m", "a"): ["local"] * 4, ("m", "b"): ["global", "global", "local", "no effect"]},
        {("m", "a"): [1.0, 1.0, 1.0, 1.0], ("m", "b"): [4.0, 6.0, 2.0, np.nan]},
    )
    out = summarize(result, n_boot=500, seed=1)
    share = out.share.sel(stat="estimate")
    assert float(share.sel(model="m", dataset="a", label="local")) == 1.0
    assert float(share.sel(model="m", dataset="b", label="global")) == 0.5
    np.testing.assert_allclose(share.sum("label"), 1.0)
    assert float(out.d50.sel(model="m", dataset="b", stat="estimate")) == pytest.approx(4.0)  # NaN skipped
    assert float(out.tvd.sel(model="m", stat="estimate")) == pytest.approx(0.75)
    assert float(out.delta_d50.sel(model="m", stat="estimate")) == pytest.approx(3.0)
    lo, hi = (float(out.tvd.sel(model="m", stat=s)) for s in ("lower", "upper"))
    assert 0 <= lo <= 0.75 <= hi <= 1
    assert float(out.share.sel(model="m", dataset="a", label="local", stat="lower")) == 1.0
    again = summarize(result, n_boot=500, seed=1)
    xr.testing.assert_identical(out, again)  # seeded


def test_summary_of_degenerate_cells_has_no_spread_and_no_warning():
    """One image, or all images alike: the interval is the estimate itself (scipy would warn or give NaN)."""
    import warnings

    result = _fake_result({("m", "a"): ["local"], ("m", "b"): ["global"]}, {("m", "a"): [2.0], ("m", "b"): [2.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = summarize(result, n_boot=50)
    assert out.share.sel(model="m", dataset="a", label="local").values.tolist() == [1.0, 1.0, 1.0]
    assert out.tvd.sel(model="m").values.tolist() == [1.0, 1.0, 1.0]
    assert out.delta_d50.sel(model="m").values.tolist() == [0.0, 0.0, 0.0]


def test_table_of_labelled_maps_lists_not_explained_pairs():
    maps = pdcr_lab.stack([effect_map({(5, 8): -10.0}), effect_map({(5, 8): -10.0})], "image", labels=[0, 1])
    maps = pdcr_lab.stack({"m": maps}, "model")
    maps = pdcr_lab.stack({"a": maps, "b": maps}, "dataset")
    maps["explained"] = (("model", "dataset"), np.array([[True, False]]))
    result = label_maps(maps)
    assert str(result.label.sel(model="m", dataset="b", image=0).values) == "not explained"
    summary = summarize(result, n_boot=20)
    table = format_table(summary, result, skipped={("m", "b"): "no checkpoint"})
    assert "| m | b | 0 | not explained |" in table and "m (b)" in table
