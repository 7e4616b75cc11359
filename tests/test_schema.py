"""pdcr_lab.schema: the effects data model (validation, stacking, pixel view)."""

from __future__ import annotations

import numpy as np
import pytest

from pdcr_lab import SchemaError, explain, schema, stack, statistics, to_pixels
from pdcr_lab.schema import empty_effects


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


def test_validate_checks_variable_kinds_and_block_positions():
    ds = empty_effects(grid=(2, 3), block=4)
    with pytest.raises(SchemaError, match=r"variable 'n_draws' has dtype float64, expected kind 'i'"):
        schema.validate(ds.assign(n_draws=ds.n_draws.astype(float)))
    with pytest.raises(SchemaError, match=r"missing variable 'stderr'"):
        schema.validate(ds.drop_vars("stderr"))
    with pytest.raises(SchemaError, match=r"x_start does not match block=4"):
        schema.validate(ds.assign_coords(x_start=("block_x", [0, 5, 10])))


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


def test_stack_refuses_missing_labels_and_repeated_dims():
    ds = empty_effects(grid=(2, 2), block=4)
    with pytest.raises(ValueError, match=r"labels must give one label per result \(2\)"):
        stack([ds, ds], dim="model")
    with pytest.raises(ValueError, match=r"results is empty"):
        stack({}, dim="model")
    once = stack({"a": ds}, dim="model")
    with pytest.raises(ValueError, match=r"results\[0\] already has a 'model' dim"):
        stack({"b": once}, dim="model")


def test_to_pixels_repeats_blocks(result):
    pix = to_pixels(result)
    assert pix.ate.dims == ("y", "x") and pix.ate.shape == (32, 32)
    np.testing.assert_array_equal(pix.ate.values[::4, ::4], result.ate.values)
    np.testing.assert_array_equal(pix.ate.values[1::4, 3::4], result.ate.values)


def test_stack_twice_keeps_attrs_that_vary_in_one_group_only():
    """An attr that varies inside one group (a coordinate there) and is constant in another (an attr)
    must survive a second stack with one dtype, so the result still saves."""

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


def test_empty_effects_variables_do_not_share_memory():
    """Writing stderr once wrote ate too (one zeros array behind several variables)."""
    from pdcr_lab.schema import empty_effects

    ds = empty_effects(grid=(2, 2), block=4)
    ds["stderr"][0, 0] = 1.0
    ds["screened"][0, 0] = True
    assert float(ds.ate[0, 0]) == 0.0 and float(ds.ate_raw[0, 0]) == 0.0 and not bool(ds.roi_block[0, 0])
