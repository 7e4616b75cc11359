"""The effects data model: validation, stacking, pixel view, statistics and storage round trips."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import pdcr_lab
from pdcr_lab import SchemaError, explain, load, save, schema, stack, statistics, to_pixels
from pdcr_lab.statistics import histogram_labels


@pytest.fixture
def result(tiny_net, image, small_bank):
    return explain(tiny_net, image, roi=(12, 12, 8, 8), bank=small_bank, block=4, fine=8, seed=1)


def test_result_follows_schema(result):
    assert schema.validate(result) is result
    assert result.ate.dims == ("block_y", "block_x")
    assert list(result.y_start.values) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert result.ate.attrs["units"] == "DSC points"
    for key in ("block", "coarse", "fine", "tau", "seed", "outcome", "intervention", "pdcr_lab_version", "bank_id"):
        assert key in result.attrs
    assert result.roi_mask.sum() == 64 and int(result.roi_row) == 12


def test_validate_rejects_broken_datasets(result):
    with pytest.raises(SchemaError, match="no 'ate' variable"):
        schema.validate(result.drop_vars("ate"))
    with pytest.raises(SchemaError, match=r"missing attrs \['seed'\]"):
        bad = result.copy()
        del bad.attrs["seed"]
        schema.validate(bad)
    with pytest.raises(SchemaError, match="RoI blocks must have ate == 0"):
        schema.validate(result.assign(ate=result.ate + 1))
    with pytest.raises(SchemaError, match="out of the canonical order"):
        schema.validate(result.expand_dims(image=[0], model=["m"]).transpose("image", "model", ...))
    with pytest.raises(SchemaError, match="unknown dims"):
        schema.validate(result.expand_dims(patient=[0]))
    with pytest.raises(SchemaError, match="expected an xarray.Dataset"):
        schema.validate(result.ate)


def test_stack_keeps_differing_attrs_as_coordinates(tiny_net, image, small_bank):
    a = explain(tiny_net, image, roi=(12, 12, 8, 8), bank=small_bank, block=4, fine=8, seed=1)
    b = explain(tiny_net, image, roi=(12, 12, 8, 8), bank=small_bank, block=4, fine=8, seed=2)
    both = stack({"img0": a, "img1": b}, dim="image")
    assert both.ate.dims == ("image", "block_y", "block_x")
    assert list(both.seed.values) == [1, 2]  # not silently dropped by concat
    assert both.attrs["block"] == 4
    schema.validate(both)
    models = stack([both, both], dim="model", labels=["u", "v"])
    assert models.ate.dims == ("model", "image", "block_y", "block_x")
    st = statistics(models)
    assert st.pos.dims == ("model", "image")
    with pytest.raises(ValueError, match="dim='patient' is not a stack dimension"):
        stack([a], dim="patient", labels=["x"])


def test_to_pixels_repeats_blocks(result):
    pix = to_pixels(result)
    assert pix.ate.dims == ("y", "x") and pix.ate.shape == (32, 32)
    np.testing.assert_array_equal(pix.ate.values[::4, ::4], result.ate.values)
    np.testing.assert_array_equal(pix.ate.values[1::4, 3::4], result.ate.values)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_load_round_trip_is_lossless(result, tmp_path, suffix):
    path = save(result, tmp_path / f"map{suffix}")
    back = load(path).load()
    xr.testing.assert_identical(back, result)
    save(result.assign(ate=result.ate * 0), path)  # overwrite in place
    assert float(np.abs(load(path).ate).sum()) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left behind"


def test_save_refuses_unknown_suffix_and_invalid_data(result, tmp_path):
    with pytest.raises(ValueError, match=r"unknown suffix '.csv'"):
        save(result, tmp_path / "map.csv")
    with pytest.raises(SchemaError):
        save(result.drop_vars("ate"), tmp_path / "map.nc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nothing.nc")


def test_statistics_counts_and_bins():
    ds = schema.empty_effects(grid=(2, 3), block=4, tau=0.02)
    ds["ate"].values[:] = [[-5.0, -0.5, 0.0], [0.01, 0.0, 2.0]]
    ds["ate"].values[1, 1] = 0.0
    ds["roi_block"].values[1, 1] = True
    st = statistics(ds)
    assert (int(st.pos), int(st.neg), int(st.zero)) == (2, 2, 1)
    assert float(st.pos_pct) == pytest.approx(40.0)
    assert list(st.histogram.values) == [1, 0, 1, 0, 3, 0, 0, 1, 0]
    assert histogram_labels()[0] == "to -3" and histogram_labels()[4] == "-0.02 to 0.02"


def test_statistics_match_the_reference_output(reference_dir):
    out = reference_dir / "reference_output"
    pixel_map = np.load(next(out.glob("*_ate.npy")))
    blocks = pixel_map[::8, ::8]
    np.testing.assert_array_equal(np.repeat(np.repeat(blocks, 8, 0), 8, 1), pixel_map)  # piecewise constant
    ds = schema.empty_effects(grid=(32, 32), block=8, tau=0.02)
    ds["ate"].values[:] = blocks
    ds["roi_block"].values[9:13, 11:15] = True  # RoI at row 72, col 88, size 32
    st = statistics(ds)
    text = (next(out.glob("*_statistics.txt"))).read_text()
    lines = text.splitlines()
    assert lines[1] == f"pos: {int(st.pos)}, neg: {int(st.neg)}, zero: {int(st.zero)}"
    expected = dict(line.split(": ", 1) for line in lines[3:])
    for label, count in zip(st.bin.values, st.histogram.values):
        assert int(expected[f"{label}_num"]) == int(count), label
    assert float(st.pos_pct) == pytest.approx(24.01, abs=0.005)


def test_package_exports_are_importable():
    for name in pdcr_lab.__all__:
        assert hasattr(pdcr_lab, name), name


def test_stack_twice_keeps_attrs_that_vary_in_one_group_only():
    """An attr that varies inside one group (a coordinate there) and is constant in another (an attr)
    must survive a second stack with one dtype, so the result still saves."""
    from pdcr_lab.schema import empty_effects

    def result(rounds):
        ds = empty_effects(grid=(2, 2), block=4)
        ds.attrs["rounds"] = rounds
        return ds

    lesions = stack({"a": result(2), "b": result(2)}, "model")
    vessels = stack({"a": result(1), "b": result(2)}, "model")
    both = stack({"lesions": lesions, "vessels": vessels}, "dataset")
    assert both.rounds.sel(dataset="vessels").values.tolist() == [1, 2]
    assert both.rounds.sel(dataset="lesions").values.tolist() == [2, 2]
    mixed = stack({"a": result(2), "b": empty_effects(grid=(2, 2), block=4)}, "model")
    assert np.isnan(mixed.rounds.values[1]) and mixed.rounds.values[0] == 2
