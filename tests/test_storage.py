"""pdcr_lab.storage: lossless, atomic save/load of effects datasets as netCDF (.nc) or Zarr (.zarr)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pdcr_lab import SchemaError, explain, load, save, stack
from pdcr_lab.schema import empty_effects


@pytest.fixture
def result(tiny_net, image, small_bank):
    return explain(tiny_net, image, roi=(12, 12, 8, 8), bank=small_bank, block=4, fine=8, seed=1)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_load_round_trip_is_lossless(result, tmp_path, suffix):
    path = save(result, tmp_path / f"map{suffix}")
    back = load(path).load()
    xr.testing.assert_identical(back, result)
    save(result.assign(ate=result.ate * 0), path)  # overwrite in place
    assert float(np.abs(load(path).ate).sum()) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left behind"


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_stacked_results_round_trip(tmp_path, suffix):
    a, b = empty_effects(grid=(2, 3), block=4, seed=1), empty_effects(grid=(2, 3), block=4, seed=2)
    a["ate"] = a.ate + [[1.5, 0, -2], [0, 0, 0.25]]
    both = stack({"unet": a, "segnet": b}, dim="model")
    back = load(save(both, tmp_path / f"both{suffix}")).load()
    xr.testing.assert_identical(back, both)
    assert back.seed.values.tolist() == [1, 2] and back.model.values.tolist() == ["unet", "segnet"]


def test_save_refuses_unknown_suffix_and_invalid_data(result, tmp_path):
    with pytest.raises(ValueError, match=r"unknown suffix '.csv'"):
        save(result, tmp_path / "map.csv")
    with pytest.raises(SchemaError):
        save(result.drop_vars("ate"), tmp_path / "map.nc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nothing.nc")
    assert list(tmp_path.iterdir()) == [], "a refused save writes nothing"


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_failed_write_keeps_the_old_result(result, tmp_path, monkeypatch, suffix):
    path = save(result, tmp_path / f"map{suffix}")
    method = "to_netcdf" if suffix == ".nc" else "to_zarr"
    original = getattr(xr.Dataset, method)

    def half_then_fail(self, target, *args, **kwargs):
        original(self, target, *args, **kwargs)  # the new content is written to the temporary ...
        raise OSError("disk full (simulated)")  # ... and then the writer fails

    monkeypatch.setattr(xr.Dataset, method, half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(result.assign(ate=result.ate * 0), path)
    monkeypatch.undo()
    xr.testing.assert_identical(load(path).load(), result)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary left behind"
