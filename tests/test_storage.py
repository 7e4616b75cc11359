"""pdcr_lab.storage: lossless, atomic save/load of effects datasets as netCDF (.nc) or Zarr (.zarr)."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pdcr_lab import SchemaError, explain, load, save, stack, storage
from pdcr_lab.schema import empty_effects
from pdcr_lab.storage import CorruptResultError, UnverifiedResultWarning


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


# -- integrity: checksums, validation, damaged files -----------------------------------------------
# Writers run in forked processes (quick to start: no second import of torch); POSIX only.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
needs_fork = pytest.mark.skipif(_FORK is None, reason="needs the fork start method (POSIX)")


def version(value: float, seed: int) -> xr.Dataset:
    """A small result whose every variable says which version it is (`value`) and whose attrs agree."""
    ds = empty_effects(grid=(4, 4), block=4, seed=seed, method=f"version-{seed}")
    return ds.assign(ate=ds.ate + value, ate_raw=ds.ate_raw + value, stderr=ds.stderr + value / 10,
                     n_draws=ds.n_draws + seed, m0=ds.m0 + value, forwards=ds.forwards + seed)


def data_folder(path: Path) -> Path:
    """The Zarr group holding the current version (the path itself for a plain store)."""
    pointer = path / "CURRENT"
    return path / pointer.read_text().strip() if pointer.is_file() else path


def hidden_anywhere(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def test_save_records_a_checksum_of_every_variable_and_load_strips_it(tmp_path):
    ds = version(1.5, 1)
    path = save(ds, tmp_path / "map.nc")
    with xr.open_dataset(path, engine="h5netcdf") as raw:
        record = json.loads(raw.attrs[storage.CHECKSUM_ATTR])
    assert set(record["variables"]) == set(ds.variables)  # data and coordinates
    assert all(len(digest) == 64 for digest in record["variables"].values())  # SHA-256
    back = load(path)
    assert storage.CHECKSUM_ATTR not in back.attrs
    xr.testing.assert_identical(back, ds)


@pytest.mark.parametrize("name", ["ate_raw", "y_start"])
def test_a_zarr_result_with_a_deleted_variable_is_refused(tmp_path, name):
    path = save(version(1.0, 1), tmp_path / "map.zarr")
    shutil.rmtree(data_folder(path) / name)
    for verify in (True, False):  # the list of variables is checked even without checksums
        with pytest.raises(CorruptResultError, match=rf"map\.zarr.*missing variable.*'{name}'"):
            load(path, verify=verify)


def test_a_zarr_result_with_a_deleted_chunk_is_refused(tmp_path):
    path = save(version(1.0, 1), tmp_path / "map.zarr")
    chunk = data_folder(path) / "stderr" / "c" / "0" / "0"
    assert chunk.is_file()
    chunk.unlink()
    with pytest.raises(CorruptResultError, match=r"map\.zarr.*'stderr'"):
        load(path)
    lazy = load(path, verify=False)  # opens (lazily), but reading the lost chunk fails loudly, never NaN
    with pytest.raises(CorruptResultError, match=r"stderr/c/0/0"):
        lazy.stderr.load()


def test_a_netcdf_result_with_flipped_bytes_is_refused_unless_verify_is_off(tmp_path):
    ds = version(1.0, 1)
    ds["ate"] = ds.ate * 0 + 1234.5678  # a value no other variable holds
    path = save(ds, tmp_path / "map.nc")
    raw = bytearray(path.read_bytes())
    at = raw.find(np.float64(1234.5678).tobytes())
    assert at > 0, "the values are stored uncompressed"
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptResultError, match=r"map\.nc.*checksum of 'ate'"):
        load(path)
    changed = load(path, verify=False)  # documented: no checksums, only the schema
    assert float(np.abs(changed.ate - ds.ate).max()) > 0


def test_zarr_results_are_lazy_only_without_verification(tmp_path):
    ds = version(1.0, 1)
    path = save(ds, tmp_path / "map.zarr")
    eager, lazy = load(path), load(path, verify=False)
    assert eager.ate.chunks is None and lazy.ate.chunks is not None
    xr.testing.assert_identical(eager, ds)
    xr.testing.assert_identical(pickle.loads(pickle.dumps(lazy)).load(), ds)  # e.g. for dask workers
    xr.testing.assert_identical(lazy.load(), ds)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_results_saved_without_checksums_load_with_a_warning(tmp_path, suffix):
    ds = version(2.0, 2)
    path = tmp_path / f"old{suffix}"
    if suffix == ".nc":
        ds.to_netcdf(path, engine="h5netcdf")
    else:
        ds.to_zarr(path, consolidated=False)
    with pytest.warns(UnverifiedResultWarning, match=rf"old\{suffix}.*cannot be verified"):
        back = load(path)
    xr.testing.assert_identical(back.load(), ds)


def test_a_live_sweep_store_loads_lazily_without_a_warning(tmp_path):
    path = tmp_path / "sweep.zarr"
    version(1.0, 1).assign_attrs(sweep_fingerprint="abc").to_zarr(path, consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load(path)
    assert ds.ate.chunks is not None


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_load_validates_the_schema(tmp_path, suffix):
    path = save(version(1.0, 1), tmp_path / f"map{suffix}")
    broken = version(1.0, 1).drop_vars("stderr")  # written by something else than save
    target = tmp_path / f"broken{suffix}"
    if suffix == ".nc":
        broken.to_netcdf(target, engine="h5netcdf")
    else:
        broken.to_zarr(target, consolidated=False)
    with pytest.warns(UnverifiedResultWarning), pytest.raises(SchemaError, match=rf"broken\{suffix}.*'stderr'"):
        load(target)
    load(path)


def _garbage(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A damaged result of one `kind` and a regex of what the error must say."""
    if kind == "empty.nc":
        path = tmp_path / "empty.nc"
        path.write_bytes(b"")
        return path, "empty"
    if kind == "garbage.nc":
        path = tmp_path / "garbage.nc"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return path, "cannot be read"
    if kind == "truncated.nc":
        path = save(version(1.0, 1), tmp_path / "truncated.nc")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "cannot be read"
    path = save(version(1.0, 1), tmp_path / "meta.zarr")
    if kind == "zarr metadata":
        (data_folder(path) / "zarr.json").write_text("{not json")
    elif kind == "array metadata":
        (data_folder(path) / "ate" / "zarr.json").write_bytes(b"\x00\xff garbage")
    elif kind == "pointer":
        (path / "CURRENT").write_text("../../etc")
    return path, "cannot be read|names no version|missing variable"


@pytest.mark.parametrize("kind", ["empty.nc", "garbage.nc", "truncated.nc", "zarr metadata", "array metadata", "pointer"])
def test_damaged_files_raise_an_error_naming_the_path(tmp_path, kind):
    path, what = _garbage(tmp_path, kind)
    with pytest.raises(CorruptResultError, match=rf"{path.name}.*({what})"):
        load(path)


def test_an_empty_zarr_folder_is_not_a_result(tmp_path):
    (tmp_path / "none.zarr").mkdir()
    with pytest.raises(CorruptResultError, match=r"none\.zarr"):
        load(tmp_path / "none.zarr")


# -- readers see whole saves -------------------------------------------------------------------------
def _save_in_turn(path, first, second, both_saved, stop, saves, grace):
    """Child process: save two versions over `path` in turn until told to stop."""
    if grace is not None:
        storage.GRACE_SECONDS = grace
    done = 0
    while not stop.is_set():
        save(first if done % 2 == 0 else second, path)
        done += 1
        saves.value = done
        if done == 2:
            both_saved.set()


@needs_fork
@pytest.mark.parametrize(("suffix", "grace"), [(".zarr", None), (".zarr", 0.0), (".nc", None)])
def test_readers_see_each_save_whole_while_another_process_saves(tmp_path, suffix, grace):
    """Every load is one version entirely. With no grace period (versions removed as soon as two saves
    replaced them) a slow lazy reader may lose its version: then it must fail loudly, never mix."""
    first, second = version(1.0, 1), version(2.0, 2)
    path = tmp_path / f"live{suffix}"
    both_saved, stop, saves = _FORK.Event(), _FORK.Event(), _FORK.Value("i", 0)
    writer = _FORK.Process(target=_save_in_turn, args=(path, first, second, both_saved, stop, saves, grace),
                           daemon=True)
    writer.start()
    try:
        assert both_saved.wait(120), "the writer saved nothing"
        loads, mixes, seen, errors = 0, 0, {1: 0, 2: 0}, []
        end = time.monotonic() + 20  # bounds the run; nothing is asserted about time
        while loads < 200 and time.monotonic() < end:
            verify = loads % 2 == 0
            try:
                ds = load(path, verify=verify).load()
            except Exception as exc:  # noqa: BLE001 - counted and judged below
                errors.append(exc)
            else:
                which = [k for k, v in ((1, first), (2, second)) if ds.identical(v)]
                if which:
                    seen[which[0]] += 1
                else:
                    mixes += 1
            loads += 1
    finally:
        stop.set()
        writer.join(60)
    loud = [e for e in errors if isinstance(e, CorruptResultError) and "was removed while it was read" in str(e)]
    print(f"\n{suffix} (grace {grace}): {loads} loads while {saves.value} saves ran; versions seen {seen}; "
          f"mixes {mixes}; errors {len(errors)} ({len(loud)} loud 'version removed')")
    assert mixes == 0
    other = [repr(e) for e in errors if not any(e is x for x in loud)]
    assert other == [], other[:3]
    if grace is None:
        assert errors == [], "within the grace period no reader loses its version"


# -- writers killed during a save --------------------------------------------------------------------
def _save_and_hang(path, ds, when, reached):
    """Child process: save `ds`, stopping for good at `when` (then the parent kills it)."""
    if when == "writing":
        method = "to_netcdf" if path.suffix == ".nc" else "to_zarr"
        original = getattr(xr.Dataset, method)

        def write_then_hang(self, *args, **kwargs):
            original(self, *args, **kwargs)
            reached.set()
            time.sleep(600)

        setattr(xr.Dataset, method, write_then_hang)
    else:
        replace, calls = os.replace, [0]

        def rename_then_hang(src, dst, **kwargs):
            replace(src, dst, **kwargs)
            # only renames at the result's own level count (not those of Zarr's chunk writes)
            if {Path(src).parent, Path(dst).parent, Path(src), Path(dst)} & {path.parent, path}:
                calls[0] += 1
            if calls[0] == when:
                reached.set()
                time.sleep(600)

        os.replace = rename_then_hang
    save(ds, path)


@needs_fork
@pytest.mark.parametrize(("suffix", "when"), [(".nc", "writing"), (".zarr", "writing"), (".zarr", 1), (".zarr", 2)])
def test_a_save_killed_at_any_point_keeps_a_loadable_result_and_the_next_save_cleans_up(tmp_path, suffix, when):
    old, new, newest = version(1.0, 1), version(2.0, 2), version(3.0, 3)
    path = save(old, tmp_path / f"map{suffix}")
    reached = _FORK.Event()
    writer = _FORK.Process(target=_save_and_hang, args=(path, new, when, reached), daemon=True)
    writer.start()
    assert reached.wait(120), "the writer did not reach the point where it is killed"
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(60)
    back = load(path)
    assert back.identical(old) or back.identical(new)
    save(newest, path)
    xr.testing.assert_identical(load(path), newest)
    assert hidden_anywhere(tmp_path) == [], "the killed writer's temporaries are removed by the next save"


# -- the versioned Zarr layout -----------------------------------------------------------------------
def test_old_zarr_versions_are_removed_after_the_grace_period_keeping_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "map.zarr"
    for seed in range(1, 5):
        save(version(float(seed), seed), path)
    versions = sorted(p.name for p in path.iterdir() if p.is_dir())
    assert len(versions) == 4, "within the grace period every version is kept"
    lazy = load(path, verify=False)  # resolves version 4
    monkeypatch.setattr(storage, "GRACE_SECONDS", 0.0)
    save(version(5.0, 5), path)
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == [versions[-1], data_folder(path).name]
    xr.testing.assert_identical(lazy.load(), version(4.0, 4))  # the previous version is kept
    lazy = load(path, verify=False)  # resolves version 5
    save(version(6.0, 6), path)
    save(version(7.0, 7), path)  # version 5 is neither current nor previous: removed
    with pytest.raises(CorruptResultError, match="removed|missing"):
        lazy.ate.load()  # loudly, never a mix or NaN
    xr.testing.assert_identical(load(path), version(7.0, 7))


@pytest.mark.parametrize("verify", [True, False])
def test_a_load_whose_version_is_removed_before_it_is_opened_reads_the_new_one(tmp_path, monkeypatch, verify):
    path = save(version(1.0, 1), tmp_path / "map.zarr")
    original, opened = storage._open_zarr, []

    def two_saves_first(*args, **kwargs):
        if not opened:  # CURRENT was read (version 1); two saves now make version 1 go away
            monkeypatch.setattr(storage, "GRACE_SECONDS", 0.0)
            save(version(2.0, 2), path)
            save(version(3.0, 3), path)
        opened.append(args[1].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(storage, "_open_zarr", two_saves_first)
    xr.testing.assert_identical(load(path, verify=verify).load(), version(3.0, 3))
    assert len(opened) == 2 and not (path / opened[0]).exists()


def test_a_plain_zarr_store_of_an_older_version_is_replaced_by_a_versioned_one(tmp_path):
    path = tmp_path / "map.zarr"
    version(1.0, 1).to_zarr(path, consolidated=False)
    save(version(2.0, 2), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.testing.assert_identical(load(path), version(2.0, 2))
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", data_folder(path).name]


def test_study_results_outside_the_schema_round_trip_with_checksums(tmp_path):
    table = xr.Dataset({"accuracy": (("method", "stat"), np.arange(6.0).reshape(3, 2)),
                        "label": (("method",), np.array(["local", "global", "mixed"]))},
                       coords={"method": ["pdcr", "rise", "random"], "stat": ["estimate", "n"]})
    path = save(table, tmp_path / "study.nc", effects=False)
    assert load(path, effects=False).identical(table)
    with pytest.raises(SchemaError, match="no 'ate' variable"):
        load(path)
    with pytest.raises(SchemaError):
        save(table, tmp_path / "other.nc")


def test_netcdf_arrays_are_compressed_losslessly(tmp_path):
    ds = empty_effects(grid=(64, 64), block=4)  # a 256 x 256 RoI mask: the kind of array that dominates results
    path = save(ds, tmp_path / "map.nc")
    assert load(path).identical(ds)
    ds.to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    assert path.stat().st_size < (tmp_path / "plain.nc").stat().st_size / 2
