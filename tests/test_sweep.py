"""Sweeps on a real dask LocalCluster (two worker processes): values, resume after kills, bad configs.

Every interrupted run is compared with an uninterrupted one value by value, and the uninterrupted one
with direct in-process ``pdcr_lab.explain`` calls (the independent truth).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
yaml = pytest.importorskip("yaml")

import pdcr_lab  # noqa: E402
from pdcr_lab.sweep import (  # noqa: E402
    ConfigError,
    config_schema,
    derive_seed,
    load_config,
    parse_config,
    plan_sweep,
    provenance,
    run_sweep,
)
from pdcr_lab.sweep import _driver, _store  # noqa: E402
from pdcr_lab.sweep.toys import blobs, tiny_cnn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# 2 models x 1 dataset x 4 images x 2 methods = 16 tasks of 2 RoIs on 32 x 32 images, block 8.
CONFIG = {
    "seed": 7,
    "models": [
        {"name": "tiny_a", "factory": "pdcr_lab.sweep.toys:tiny_cnn", "options": {"seed": 1, "depth": 1}},
        {"name": "tiny_b", "factory": "pdcr_lab.sweep.toys:tiny_cnn", "options": {"seed": 2, "depth": 1}},
    ],
    "datasets": [{"name": "blobs", "factory": "pdcr_lab.sweep.toys:blobs", "options": {"n": 4, "size": 32}}],
    "rois": [[8, 8, 8, 8], [16, 8, 8, 16]],
    "methods": {"pdcr": {"coarse": 3, "fine": 12}, "zero": {}},
}
N_TASKS = 16
COMPARED = (*_store.RESULT_VARS, "done")


def config(**changes):
    cfg = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in CONFIG.items()}
    cfg.update(changes)
    return cfg


def assert_same_store(a: Path, b: Path) -> None:
    left, right = pdcr_lab.load(a), pdcr_lab.load(b)
    for name in COMPARED:
        np.testing.assert_array_equal(left[name].values, right[name].values, err_msg=name)
    for name in ("image_id", "seed", "roi_row", "roi_mask", "method_params", "bank_id"):
        np.testing.assert_array_equal(left[name].values, right[name].values, err_msg=name)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def reference(client, tmp_path_factory) -> Path:
    """The uninterrupted sweep."""
    store = tmp_path_factory.mktemp("reference") / "ref.zarr"
    summary = run_sweep(config(), store, client=client, progress=False, log=lambda m: None)
    assert summary.complete and summary.computed == N_TASKS and not summary.failed
    return store


# -- the uninterrupted sweep ------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Workers run torch on one thread (dask's nanny sets OMP_NUM_THREADS=1); so does the direct check."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sweep_store_is_the_schema_and_equals_direct_explain(reference, one_thread):
    ds = pdcr_lab.load(reference)
    assert ds.ate.dims == ("model", "dataset", "image", "roi", "method", "block_y", "block_x")
    assert ds.ate.chunks is not None  # lazy: dask-backed
    assert ds.ate.encoding["chunks"] == (1, 1, 1, 2, 1, 4, 4)  # one chunk per task
    pdcr_lab.validate(ds)
    assert bool(ds.done.all())
    data = blobs(n=4, size=32)
    model, _ = tiny_cnn(seed=1, depth=1)
    images, masks, ids = data.images("test"), data.masks("test"), data.ids("test")
    for i in range(4):
        seed = derive_seed(7, "blobs", ids[i])
        assert int(ds.seed.sel(dataset="blobs", image=i)) == seed
        for method, params in (("pdcr", {"coarse": 3, "fine": 12}), ("zero", {"intervention": "zero"})):
            direct = pdcr_lab.explain(model, images[i], roi=CONFIG["rois"], target=masks[i], bank=data.bank,
                                      block=8, seed=seed, **params)
            # `method` is also a keyword of .sel: the dict form selects the dim
            stored = ds.sel({"model": "tiny_a", "dataset": "blobs", "image": i, "method": method})
            for name in _store.RESULT_VARS:
                np.testing.assert_array_equal(stored[name].values, direct[name].values, err_msg=f"{method} {name}")


def test_provenance_and_model_loaded_once_per_worker(reference):
    ds = pdcr_lab.load(reference)
    assert ds.attrs["sweep_fingerprint"] and "tiny_a" in ds.attrs["sweep_config"]
    assert "distributed" in ds.attrs["versions"]
    tasks = provenance(reference)
    assert len(tasks) == N_TASKS
    one = tasks["m0-d0-i0-k0"]
    assert {"host", "worker", "device", "seed", "seconds_explain", "result_attrs", "versions"} <= set(one)
    assert one["seed"] == int(ds.seed.sel(dataset="blobs", image=0))
    bank = blobs(n=4, size=32).bank
    assert one["result_attrs"]["bank_id"] == str(ds.bank_id.sel(dataset="blobs").values) == bank.id
    assert "bank_provenance" not in one["result_attrs"]  # stored once, in the root attrs
    assert json.loads(ds.attrs["bank_provenance"])["blobs"]["id"] == bank.id
    loads = {(t["worker"], t["model"]) for t in tasks.values() if t["model_loaded"]}
    assert sum(t["model_loaded"] for t in tasks.values()) == len(loads) <= 4  # once per (worker, model)
    assert np.all(ds.seconds.values > 0)


def test_rerun_of_a_finished_sweep_computes_nothing(client, reference):
    summary = run_sweep(config(), reference, client=client, progress=False, log=lambda m: None)
    assert summary.complete and summary.computed == 0 and summary.skipped == N_TASKS


# -- interruptions ------------------------------------------------------------------------------------


def test_worker_killed_mid_sweep_loses_nothing(client, reference, tmp_path):
    store = tmp_path / "killed_worker.zarr"
    killed = []

    def kill_a_busy_worker(info):
        if killed:
            return
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        if not busy:
            return
        addr = next(iter(busy))
        pids = client.run(os.getpid)
        killed.append((addr, busy[addr]))
        os.kill(pids[addr], signal.SIGKILL)
        # The store can be browsed while the sweep runs: finished tasks already hold final values.
        partial, ref = pdcr_lab.load(store), pdcr_lab.load(reference)
        done = partial.done.compute()
        assert done.any() and not done.all()
        np.testing.assert_array_equal(partial.ate.where(done).values, ref.ate.where(done).values)

    summary = run_sweep(config(), store, client=client, progress=False, on_task=kill_a_busy_worker, log=lambda m: None)
    assert killed, "no worker was busy when the first task finished"
    assert summary.complete and not summary.failed, summary.failed
    assert_same_store(store, reference)
    client.wait_for_workers(2)


def test_half_written_region_is_not_done_and_is_redone(client, reference, tmp_path):
    store = tmp_path / "half.zarr"
    plan = plan_sweep(config(), store)
    _store.prepare(store, plan)
    # A task killed between its result write and its marker: garbage results, no `done`.
    index = (1, 0, 2, 0)
    garbage = {}
    for name in _store.RESULT_VARS:
        dims, dtype, _, _ = _store.VARIABLES[name]
        shape = tuple(1 if d in _store.TASK_DIMS else plan.sizes[d] for d in dims)
        garbage[name] = np.full(shape, 3, dtype=dtype)
    _store._subset(_store.RESULT_VARS, garbage).to_zarr(store, region=_store._region(index), mode="r+", consolidated=False)
    ds = pdcr_lab.load(store)
    assert not bool(ds.done.isel(model=1, dataset=0, image=2, method=0))
    assert not _store.done_mask(store).any()
    # Through the scheduler's address, as `--scheduler` does (waiting for its two workers).
    summary = run_sweep(config(), store, scheduler=client.scheduler.address, workers=2, progress=False, log=lambda m: None)
    assert summary.complete and summary.computed == N_TASKS and summary.workers == 2
    assert_same_store(store, reference)


def _done_count(store: Path) -> int:
    try:
        return int(_store.done_mask(store).sum())
    except Exception:  # not created yet
        return 0


def test_cli_killed_with_sigkill_resumes_to_the_same_store(reference, tmp_path):
    import psutil

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(config()))
    store = tmp_path / "cli.zarr"
    command = [sys.executable, "-m", "pdcr_lab.cli", "sweep", str(cfg), "--store", str(store), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while proc.poll() is None and _done_count(store) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read().decode()
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The local workers die with the driver: nothing keeps writing into the store.
    _, alive = psutil.wait_procs(children, timeout=60)
    assert not alive
    before = _done_count(store)
    assert 3 <= before < N_TASKS
    # Resume on a cluster of another size: the numbers do not depend on where a task ran.
    command[-2] = "1"
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{before} already done" in rerun.stdout
    assert f"{N_TASKS - before} now, {before} before" in rerun.stdout
    assert_same_store(store, reference)


# -- bad configs fail before any work, naming the entry ------------------------------------------------


@pytest.fixture
def no_cluster(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started for a bad config")

    monkeypatch.setattr(_driver, "_connect", refuse)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": [CONFIG["models"][0], {"zoo": "resnet"}]}, r"^models\[1\] \('resnet'\): "),
        ({"models": [{"name": "x", "factory": "pdcr_lab.sweep.toys:nope"}]}, r"^models\[0\] \('x'\): factory .*has no attribute 'nope'"),
        ({"datasets": [{"name": "nosuch"}]}, r"^datasets\[0\] \('nosuch'\): unknown dataset 'nosuch'"),
        ({"datasets": [{"name": "blobs", "factory": "pdcr_lab.sweep.toys:blobs", "options": {"n": 2}, "images": 3}]},
         r"^datasets\[0\] \('blobs'\): images=3 but split 'test' has 2 images"),
        ({"rois": [[8, 8, 8, 8], [28, 24, 8, 8]]}, r"^datasets\[0\] \('blobs'\): RoI \[28, 24, 8, 8\] .*outside the 32x32 image"),
        ({"methods": {"pdcr": {"corse": 3}}}, r"^methods\.pdcr: unknown parameter\(s\) \['corse'\]"),
        ({"methods": {"shap": {}}}, r"^methods\.shap: unknown (method|explainer) 'shap'; registered: \["),
        ({"methods": {"blur": {"method": "pdcr", "intervention": "blurr"}}},
         r"^methods\[0\]\.params\.intervention \('blur', method 'pdcr'\): intervention='blurr' is not supported"),
        ({"methods": {"pdcr": {"seed": 3}}}, r"^methods\.pdcr: parameter\(s\) \['seed'\] are set by the sweep"),
        ({"models": [{"name": "x", "factory": "pdcr_lab.sweep.toys:tiny_cnn", "options": {"channels": 1}}]},
         r"^models\[0\] \('x'\) on datasets\[0\] \('blobs'\): the images have 3 channels"),
        ({"modles": []}, r"^config: modles: unknown key \(value \[\]\); allowed keys: block, datasets, "),
    ],
)
def test_bad_config_fails_before_any_work(no_cluster, tmp_path, change, message):
    store = tmp_path / "bad.zarr"
    with pytest.raises(ConfigError, match=message):
        run_sweep(config(**change), store, progress=False, log=lambda m: None)
    assert not store.exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("file.txt/s.zarr", r"store '.*file.txt/s.zarr' cannot be created: .* is a file"),
        ("s.nc", r"store '.*s.nc' must end with .zarr"),
        ("plain.zarr", r"store '.*plain.zarr' exists and is not a sweep store"),
    ],
)
def test_unusable_store_fails_before_any_work(no_cluster, tmp_path, where, message):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(ConfigError, match=message):
        run_sweep(config(), tmp_path / where, progress=False, log=lambda m: None)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_is_refused(no_cluster, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"store '.*ro/s.zarr' is not writable"):
            run_sweep(config(), folder / "s.zarr", progress=False, log=lambda m: None)
    finally:
        folder.chmod(0o700)


def test_store_created_meanwhile_by_another_driver_is_kept(tmp_path, monkeypatch):
    import zarr

    store = tmp_path / "s.zarr"
    plan = plan_sweep(config(probe=False), store)
    template = _store._template
    raced = []

    def other_driver_first(p):
        if not raced:  # another driver finishes its store while this one stages its own
            raced.append(True)
            _store._create(store, p)
            zarr.open_group(store=str(store), mode="r+").attrs["made_by"] = "the other driver"
        return template(p)

    monkeypatch.setattr(_store, "_template", other_driver_first)
    _store.prepare(store, plan)
    assert zarr.open_group(store=str(store), mode="r").attrs["made_by"] == "the other driver"
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temporaries left


def test_store_of_another_config_is_refused(no_cluster, tmp_path):
    store = tmp_path / "s.zarr"
    _store.prepare(store, plan_sweep(config(), store))
    with pytest.raises(ConfigError, match=r"holds a different sweep .*differs in: seed"):
        run_sweep(config(seed=8), store, progress=False, log=lambda m: None)


# -- config structure: pydantic's errors as key paths, the JSON schema ---------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # an unknown key at depth: its path and the keys allowed there
        ({"datasets": [dict(CONFIG["datasets"][0], rois={"auto": 8, "sizee": 3})]},
         r"^config: datasets\[0\]\.rois\.sizee: unknown key \(value 3\); allowed keys: auto, boxes, file, size$"),
        ({"models": [CONFIG["models"][0], dict(CONFIG["models"][1], option={})]},
         r"^config: models\[1\]\.option: unknown key \(value \{\}\); allowed keys: factory, name, options, zoo$"),
        # negative or zero values
        ({"seed": -1}, r"^config: seed: got -1; expected a value >= 0 \(base seed"),
        ({"rois": [[8, 8, 8, 8], [16, 8, 0, 16]]}, r"^config: rois\[1\]\[2\]: got 0; expected a value >= 1 "),
        ({"resources": {"GPU": -1}}, r"^config: resources\.GPU: got -1; expected a value >= 0 "),
        # wrong types
        ({"probe": "yes"}, r"^config: probe: got 'yes'; expected true or false "),
        ({"retries": 1.5}, r"^config: retries: got 1\.5; expected an integer "),
        ({"methods": {"pdcr": {"coarse": 3}, "zero": 3}}, r"^config: methods\.zero: got 3; expected a mapping "),
        ({"methods": {"pdcr": {"method": 3}}}, r"^config: methods\.pdcr\.method: got 3; expected a string "),
        ({"datasets": [dict(CONFIG["datasets"][0], images=[0, 1.5])]},
         r"^config: datasets\[0\]\.images\[1\]: got 1\.5; expected a string or an integer "),
        ({"datasets": [dict(CONFIG["datasets"][0], factory="toys.blobs")]},
         r"^config: datasets\[0\]\.factory: got 'toys\.blobs'; expected an import path 'package\.module:function'"),
        ({"target": "truth"}, r"^config: target: got 'truth'; expected 'ground_truth' or 'prediction'"),
        # cross-field rules
        ({"rois": {"auto": 8, "size": 8}}, r"^config: rois: write the RoI side as auto: 8"),
        ({"models": [CONFIG["models"][0], dict(CONFIG["models"][1], name="tiny_a")]},
         r"^config: models: name 'tiny_a' is used by models\[0\] and models\[1\]"),
        ({"datasets": [{"split": "test"}]}, r"^config: datasets\[0\]\.name: required but missing"),
    ],
)
def test_structural_errors_name_the_key_value_and_expectation(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config(**change))


def test_every_structural_error_is_listed_with_the_config_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config(seed=-2, models=[{"zoo": "unet", "optionz": {}}], block="8")))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert all(line.startswith(f"config {str(path.resolve())!r}: ") for line in lines)
    assert len(lines) == 3
    for part in ("models[0].optionz: unknown key", "seed: got -2", "block: got '8'; expected an integer"):
        assert any(part in line for line in lines), (part, lines)


def test_relative_roi_file_is_relative_to_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = config(rois={"file": "coords.txt", "size": 8})
    (tmp_path / "sub" / "s.yaml").write_text(yaml.safe_dump(cfg))
    assert load_config(tmp_path / "sub" / "s.yaml").rois.file == str(tmp_path / "sub" / "coords.txt")
    assert parse_config(cfg, base_dir=tmp_path).rois.file == str(tmp_path / "coords.txt")


def test_json_schema_describes_the_config_and_accepts_the_examples(tmp_path, capsys):
    from pdcr_lab import cli

    schema = config_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert sorted(schema["required"]) == ["datasets", "methods", "models"]
    assert schema["additionalProperties"] is False and schema["$defs"]["RoiRule"]["additionalProperties"] is False
    assert schema["properties"]["seed"]["minimum"] == 0 and schema["properties"]["seed"]["description"]
    assert schema["properties"]["target"]["enum"] == ["ground_truth", "prediction"]
    assert cli.main(["sweep", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(yaml.safe_load((ROOT / "examples" / "sweep_small.yaml").read_text()))
    validator.validate(config())
    validator.validate(config(rois={"file": "coords.txt", "size": 8}, methods=["pdcr", "zero"]))
    assert not validator.is_valid(config(seed=-1))
    assert not validator.is_valid(config(rois={"auto": 8, "sizee": 3}))


# -- config format, seeds, CLI ------------------------------------------------------------------------


def test_toml_and_yaml_configs_are_the_same_plan(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(config()))
    (tmp_path / "a.toml").write_text(
        """
seed = 7
rois = [[8, 8, 8, 8], [16, 8, 8, 16]]
[[models]]
name = "tiny_a"
factory = "pdcr_lab.sweep.toys:tiny_cnn"
options = { seed = 1, depth = 1 }
[[models]]
name = "tiny_b"
factory = "pdcr_lab.sweep.toys:tiny_cnn"
options = { seed = 2, depth = 1 }
[[datasets]]
name = "blobs"
factory = "pdcr_lab.sweep.toys:blobs"
options = { n = 4, size = 32 }
[methods.pdcr]
coarse = 3
fine = 12
[methods.zero]
"""
    )
    a = plan_sweep(tmp_path / "a.yaml", tmp_path / "s.zarr")
    b = plan_sweep(tmp_path / "a.toml", tmp_path / "s.zarr")
    assert a.fingerprint == b.fingerprint
    assert len(a.tasks()) == N_TASKS


def test_seeds_depend_on_labels_not_positions(tmp_path):
    small = plan_sweep(config(probe=False), tmp_path / "s.zarr")
    more = config(probe=False, models=[{"name": "extra", "factory": "pdcr_lab.sweep.toys:tiny_cnn"}, *CONFIG["models"]])
    larger = plan_sweep(more, tmp_path / "s.zarr")
    np.testing.assert_array_equal(small.seeds, larger.seeds)
    assert len(set(small.seeds.ravel().tolist())) == 4


def test_auto_and_file_rois(tmp_path):
    ids = blobs(n=4, size=32).ids("test")
    (tmp_path / "coords.txt").write_text(f"{ids[2]} 0 0\n{ids[0]} 8 16\n{ids[2]} 16 16\n")
    cfg = config(probe=False)
    cfg["datasets"] = [dict(CONFIG["datasets"][0], rois={"file": str(tmp_path / "coords.txt"), "size": 8})]
    plan = plan_sweep(cfg, tmp_path / "s.zarr")
    assert plan.image_ids.tolist() == [[ids[2], ids[0]]]
    assert plan.n_rois.tolist() == [[2, 1]]
    assert plan.rois[0, 0, 1].tolist() == [16, 16, 8, 8]
    auto = plan_sweep(config(probe=False, rois={"auto": 8}), tmp_path / "s.zarr")
    assert auto.rois.shape == (1, 4, 1, 4) and np.all(auto.rois[..., 2:] == 8)


def test_cli_subcommand_and_dry_run(tmp_path, capsys):
    from pdcr_lab import cli

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(config()))
    args = cli.build_parser().parse_args(["sweep", str(cfg), "--store", "x.zarr", "--scheduler", "tcp://h:8786", "--workers", "3"])
    assert (args.scheduler, args.workers, args.store) == ("tcp://h:8786", 3, Path("x.zarr"))
    assert cli.main(["sweep", str(cfg), "--store", str(tmp_path / "s.zarr"), "--dry-run"]) == 0
    assert "config OK: 2 model(s) x 1 dataset(s) x 2 method(s); store " in capsys.readouterr().out
    assert not (tmp_path / "s.zarr").exists()
    assert cli.main(["sweep", str(cfg), "--store", str(tmp_path / "s.nc"), "--dry-run"]) == 2
    assert "must end with .zarr" in capsys.readouterr().err
    assert cli.main(["sweep", str(cfg)]) == 2  # a config needs a store (only --schema needs neither)
    assert "give CONFIG and --store PATH (or --schema)" in capsys.readouterr().err


def test_example_config_is_valid(tmp_path):
    plan = plan_sweep(ROOT / "examples" / "sweep_small.yaml", tmp_path / "s.zarr")
    assert len(plan.tasks()) > 0


# -- GPUs: devices and worker resources (logic only; the CPU machines of CI have no GPU) ------------


def test_gpu_device_choice_and_resources(monkeypatch):
    import torch

    from pdcr_lab.sweep import _tasks

    assert str(_tasks.choose_device("cpu")) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(_tasks, "_worker", lambda: ("tcp://127.0.0.1:1", 3))
    assert str(_tasks.choose_device("auto")) == "cuda:1"  # LocalCluster worker 3 of 2 GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert str(_tasks.choose_device("auto")) == "cuda"  # the worker was given its GPU

    class FakeClient:
        def __init__(self, resources):
            self.resources = resources

        def scheduler_info(self, n_workers=-1):
            return {"workers": {"tcp://w": {"resources": self.resources}}}

    auto = parse_config(config())
    assert _driver._resources(auto, FakeClient({"GPU": 1}), print) == {"GPU": 1}
    assert _driver._resources(auto, FakeClient({}), print) is None
    messages = []
    wanted = parse_config(config(resources={"GPU": 2}))
    assert _driver._resources(wanted, FakeClient({"GPU": 1}), messages.append) == {"GPU": 2}
    assert "no connected worker offers resources {'GPU': 2}" in messages[0]
    assert _driver._local_resources(auto) == {"GPU": 1}  # torch.cuda.is_available is patched


def test_baselines_run_as_sweep_methods_in_process(tmp_path):
    """The task path without dask: any registered explainer fills its region like PdCR does."""
    from pdcr_lab.baselines import gradcam, occlusion
    from pdcr_lab.sweep import _tasks

    store = tmp_path / "baselines.zarr"
    cfg = config(models=CONFIG["models"][:1], methods={"gradcam": {}, "blur": {"method": "occlusion", "occluder": "blur"}})
    plan = plan_sweep(cfg, store)
    _store.prepare(store, plan)
    for spec in _tasks.build_specs(plan, str(store), plan.tasks()[:2] + plan.tasks()[-1:]):
        _tasks.run_task(spec)
    ds = pdcr_lab.load(store)
    assert ds.support_sign.values.tolist() == [1, -1]
    assert int(ds.done.sum()) == 3
    data = blobs(n=4, size=32)
    model, _ = tiny_cnn(seed=1, depth=1)
    image, mask, image_id = data.images("test")[3], data.masks("test")[3], data.ids("test")[3]
    seed = derive_seed(7, "blobs", image_id)
    direct = occlusion(model, image, roi=CONFIG["rois"], target=mask, occluder="blur", bank=data.bank, block=8, seed=seed)
    stored = ds.sel({"model": "tiny_a", "image": 3, "method": "blur"}).isel(dataset=0)
    np.testing.assert_array_equal(stored.ate.values, direct.ate.values)
    np.testing.assert_array_equal(stored.ci_low.values, direct.ci_low.values)
    first = gradcam(model, data.images("test")[0], roi=CONFIG["rois"], target=data.masks("test")[0], block=8,
                    seed=derive_seed(7, "blobs", data.ids("test")[0]))
    np.testing.assert_array_equal(ds.sel({"model": "tiny_a", "image": 0, "method": "gradcam"}).isel(dataset=0).ate.values,
                                  first.ate.values)
    assert np.isnan(ds.ci_low.sel({"method": "gradcam"}).values).all()  # gradcam has no intervals


# -- issue 15: nothing exposed, no silent wrong answers -------------------------------------------------


def _listening() -> set[tuple[str, int]]:
    """TCP sockets this process and its children listen on."""
    import psutil

    me = psutil.Process()
    found = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


def test_local_cluster_listens_on_localhost_only():
    before = _listening()
    with _driver._connect(None, None, 1, None, 1, lambda m: None) as local:
        opened = _listening() - before
        info = local.scheduler_info()
        addresses = [info["address"], *info["workers"]] + [w["nanny"] for w in info["workers"].values() if w.get("nanny")]
    assert opened, "the local cluster opened no socket"
    assert {ip for ip, _ in opened} == {"127.0.0.1"}, sorted(opened)
    assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
    before = _listening()
    with _driver.local_cluster(1, processes=False, dashboard=0):  # threads, and a dashboard asked for
        opened = _listening() - before
    assert opened and {ip for ip, _ in opened} == {"127.0.0.1"}, sorted(opened)


def test_dashboard_is_off_by_default_and_on_localhost_when_asked(tmp_path):
    pytest.importorskip("bokeh")
    assert _driver.dashboard_address("8787") == "127.0.0.1:8787"
    assert _driver.dashboard_address(":0") == "127.0.0.1:0"
    with pytest.raises(ConfigError, match=r"dashboard='x:y' is not \[ADDRESS:\]PORT"):
        _driver.dashboard_address("x:y")
    cfg = config(models=CONFIG["models"][:1], methods={"zero": {}}, probe=False)
    cfg["datasets"] = [dict(CONFIG["datasets"][0], images=1)]
    seen = []

    def log(message):
        seen.append((message, _listening()))

    summary = run_sweep(cfg, tmp_path / "d.zarr", workers=1, progress=False, log=log, dashboard="0")
    assert summary.complete and summary.dashboard.startswith("http://127.0.0.1:")
    port = int(summary.dashboard.split(":")[2].split("/")[0])
    shown = next(sockets for message, sockets in seen if message == f"dask dashboard: {summary.dashboard}")
    assert ("127.0.0.1", port) in shown  # what is printed is what is bound
    listening = next(m for m, _ in seen if m.startswith("local dask cluster listening on "))
    assert "127.0.0.1:" in listening and "0.0.0.0" not in listening
    seen.clear()
    summary = run_sweep(cfg, tmp_path / "e.zarr", workers=1, progress=False, log=log)
    assert summary.dashboard is None
    assert any(m.startswith("dask dashboard: off") for m, _ in seen)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fine": -5}, r"methods\[0\]\.params\.fine \('pdcr', method 'pdcr'\): fine=-5 is too small; expected an integer >= 1"),
        ({"fine": "6"}, r"methods\[0\]\.params\.fine \('pdcr', method 'pdcr'\): fine must be an integer, got '6'"),
        ({"fine": 1.5}, r"methods\[0\]\.params\.fine .*: fine must be an integer, got 1\.5"),
        ({"tau": float("nan")}, r"methods\[0\]\.params\.tau .*: tau=nan must be finite"),
        ({"mode": "fast"}, r"methods\[0\]\.params\.mode .*: mode='fast' is not supported; expected one of \['paper', 'adaptive'\]"),
        ({"ci_level": 1.5}, r"methods\[0\]\.params\.ci_level .*: ci_level=1\.5 must be between 0 and 1"),
        ({"threshold": "high"}, r"methods\[0\]\.params\.threshold .*: threshold must be a (finite )?number, got 'high'"),
        ({"mode": "adaptive", "max_draws": 2}, r"methods\[0\]\.params \('pdcr', method 'pdcr'\): max_draws=2 is below"),
    ],
)
def test_method_parameters_are_checked_by_the_explainer_before_any_work(no_cluster, tmp_path, params, message):
    store = tmp_path / "bad.zarr"
    with pytest.raises(ConfigError, match="^" + message):
        run_sweep(config(methods={"pdcr": params}), store, progress=False, log=lambda m: None)
    assert not store.exists()


def test_bad_method_parameters_and_device_fail_the_dry_run_naming_the_file(tmp_path, capsys):
    from pdcr_lab import cli

    for name, text, expected in [
        ("nan.yaml", "methods:\n  pdcr: {coarse: 3, fine: 12, tau: .nan}\n", r"methods\[0\]\.params\.tau \('pdcr', method 'pdcr'\): tau=nan must be finite"),
        ("str.yaml", "methods:\n  pdcr: {fine: '6'}\n", r"methods\[0\]\.params\.fine .*: fine must be an integer, got '6'"),
        ("neg.yaml", "methods:\n  zero: {}\n  pdcr: {fine: -5}\n", r"methods\[1\]\.params\.fine .*: fine=-5 is too small"),
        ("dev.yaml", "methods: {zero: {}}\ndevice: banana\n", r"device: device='banana' is not a device torch knows"),
        ("gpu.yaml", "methods: {zero: {}}\ndevice: meta\n", r"device: device='meta' holds no data"),
    ]:
        base = {k: v for k, v in config().items() if k != "methods"}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(base) + text)
        assert cli.main(["sweep", str(path), "--store", str(tmp_path / "s.zarr"), "--dry-run"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"pdcr-lab sweep: error: config {str(path.resolve())!r}: "), err
        assert __import__("re").search(expected, err), (name, err)
    assert not (tmp_path / "s.zarr").exists()


def test_check_options_uses_the_explainers_own_checks():
    from pdcr_lab.explainers import OptionError, get_explainer

    pdcr = get_explainer("pdcr")
    assert pdcr.check_options({"fine": 12, "tau": 1}) == {"fine": 12, "tau": 1}
    assert get_explainer("occlusion_blur").check_options({}) == {"occluder": "blur"}
    for options, key, message in [
        ({"fine": True}, "fine", "fine must be an integer, got True"),
        ({"precision": "float64"}, "precision", "precision='float64' is not supported"),
        ({"activation": "relu"}, "activation", "activation='relu' is not supported"),
        ({"normalize": [[0.5], [0.0]]}, "normalize", "normalize std must be positive"),
        ({"value_range": [1, 0]}, "value_range", r"value_range=\(1, 0\) must have low < high"),
        ({"outcome": "dcie"}, "outcome", "outcome='dcie' is not supported"),
        ({"device": "banana"}, "device", "device='banana' is not a device torch knows"),
        ({"corse": 3}, "corse", "'corse' is not an option of 'pdcr'"),
    ]:
        with pytest.raises(OptionError, match=message) as info:
            pdcr.check_options(options)
        assert info.value.key == key and isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    rise = get_explainer("rise")
    with pytest.raises(OptionError, match=r"rise\(\) got unexpected keyword arguments \['nope'\]"):
        rise.check_options({"nope": 1})
    with pytest.raises(OptionError, match="n_masks must be an integer, got '5'"):
        rise.check_options({"n_masks": "5"})


# -- --overwrite --------------------------------------------------------------------------------------------


def _fingerprint(store: Path) -> str:
    import zarr

    return zarr.open_group(store=str(store), mode="r").attrs["sweep_fingerprint"]


def test_overwrite_replaces_a_sweep_store_after_validation(client, tmp_path):
    store = tmp_path / "s.zarr"
    _store.prepare(store, plan_sweep(config(probe=False), store))
    old = _fingerprint(store)
    small = config(probe=False, seed=8, models=CONFIG["models"][:1], methods={"zero": {}})
    with pytest.raises(ConfigError, match="holds a different sweep .*or start it afresh with --overwrite"):
        run_sweep(small, store, client=client, progress=False, log=lambda m: None)
    bad = dict(small, methods={"pdcr": {"fine": -5}})
    with pytest.raises(ConfigError, match=r"fine=-5"):  # a bad config never touches the old store
        run_sweep(bad, store, client=client, progress=False, log=lambda m: None, overwrite=True)
    assert _fingerprint(store) == old
    messages = []
    summary = run_sweep(small, store, client=client, progress=False, log=messages.append, overwrite=True)
    assert summary.complete and summary.computed == 4 and summary.skipped == 0
    assert _fingerprint(store) == plan_sweep(small, store).fingerprint != old
    assert "(replaced)" in messages[0]
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # no temporaries left
    assert pdcr_lab.load(store).sizes["model"] == 1


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    _store.prepare(store, plan_sweep(config(probe=False), store))
    old = _fingerprint(store)
    plan = plan_sweep(config(probe=False, seed=8), store)

    def half_built(_plan):
        raise OSError("disk full")

    monkeypatch.setattr(_store, "_template", half_built)
    with pytest.raises(OSError, match="disk full"):
        _store.prepare(store, plan, overwrite=True)
    assert _fingerprint(store) == old and _store.done_mask(store).shape[0] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_overwrite_refuses_what_is_not_a_sweep_store(no_cluster, tmp_path, capsys):
    import zarr

    from pdcr_lab import cli

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(config(probe=False)))
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    (plain / "thesis.tex").write_text("precious")
    other = tmp_path / "other.zarr"
    zarr.open_group(store=str(other), mode="w", attributes={"made_by": "someone"})
    fake = tmp_path / "fake.zarr"  # sweep attributes, but it holds a file a sweep store does not
    _store.prepare(fake, plan_sweep(config(probe=False), fake))
    (fake / "notes.txt").write_text("mine")
    link = tmp_path / "link.zarr"
    link.symlink_to(fake)
    for where, message in [(plain, "is not a sweep store"), (other, "not a sweep store made by pdcr_lab"),
                           (fake, r"holds \['notes.txt'\], which a sweep store does not"), (link, "is a link")]:
        for extra in (["--dry-run"], []):
            assert cli.main(["sweep", str(cfg), "--store", str(where), "--overwrite", *extra]) == 2, (where, extra)
            assert __import__("re").search(message, capsys.readouterr().err), (where, extra)
    assert (plain / "thesis.tex").read_text() == "precious" and (fake / "notes.txt").read_text() == "mine"
    assert zarr.open_group(store=str(other), mode="r").attrs["made_by"] == "someone"


# -- dry runs call nothing ------------------------------------------------------------------------------


MARKER_FACTORIES = """
from pathlib import Path

from pdcr_lab.sweep.toys import blobs, tiny_cnn


def model(marker, seed=1):
    Path(marker).write_text("called")
    return tiny_cnn(seed=seed)


def data(marker, n=4):
    Path(marker).write_text("called")
    return blobs(n=n, size=32)
"""


def test_dry_run_imports_and_checks_factories_but_calls_none(tmp_path, monkeypatch, capsys):
    from pdcr_lab import cli

    (tmp_path / "marker_factories.py").write_text(MARKER_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    called = {k: tmp_path / f"{k}_called" for k in ("model", "data", "system")}
    cfg = config(models=[{"name": "m", "factory": "marker_factories:model", "options": {"marker": str(called["model"])}},
                         {"name": "s", "factory": "os:system", "options": {"command": f"touch {called['system']}"}}],
                 datasets=[{"name": "d", "factory": "marker_factories:data", "options": {"marker": str(called["data"])}}])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["sweep", str(path), "--store", str(tmp_path / "s.zarr"), "--dry-run"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert not any(p.exists() for p in called.values())
    assert not (tmp_path / "s.zarr").exists()
    # Signatures are checked without a call: options a factory does not take are refused.
    for change, message in [
        ({"models": [{"name": "m", "factory": "marker_factories:model", "options": {"marker": "x", "depth": 2}}]},
         r"models\[0\] \('m'\): 'factory marker_factories:model' cannot be called with options \['depth', 'marker'\]"),
        ({"models": [{"name": "s", "factory": "os:system"}]}, r"models\[0\] \('s'\): 'factory os:system' cannot be called"),
        ({"datasets": [{"name": "d", "factory": "marker_factories:data", "options": {"size": 8}}]},
         r"datasets\[0\] \('d'\): 'factory marker_factories:data' cannot be called with options \['size'\]"),
        ({"methods": {"m": {"method": "marker_factories:model"}}}, r"methods\.m: .* cannot be called as an explainer"),
    ]:
        path.write_text(yaml.safe_dump(dict(cfg, **change)))
        assert cli.main(["sweep", str(path), "--store", str(tmp_path / "s.zarr"), "--dry-run"]) == 2
        assert __import__("re").search(message, capsys.readouterr().err), change
    assert not any(p.exists() for p in called.values())


def test_sweep_docs_say_configs_are_code():
    import pdcr_lab.sweep

    assert "a sweep config is code" in pdcr_lab.sweep.__doc__.lower()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Sweeps on dask.distributed"):]
    assert "Sweep configs are code" in section and "Run only configs you trust" in section
