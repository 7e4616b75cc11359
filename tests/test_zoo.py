"""Tests of pdcr_lab.zoo: architectures, checkpoints, training, errors and the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from pdcr_lab import zoo
from pdcr_lab.cli import build_parser, main
from pdcr_lab.zoo import _training  # no public equivalent of predict / dice_iou / fit / evaluate yet
from pdcr_lab.zoo._ssm import selective_scan  # the state-space kernel is internal to vm_unet

NAMES = zoo.list()
MANIFEST = zoo.read_manifest()["models"]


def test_registry_lists_thirteen_architectures_of_five_families():
    assert len(NAMES) == 13
    assert {zoo.info(n)["family"] for n in NAMES} == {"cnn", "deep-cnn", "token-mlp", "transformer", "state-space"}
    assert {"unet", "unet_bn", "unetpp", "attention_unet", "segresnet", "segnet", "hrnet", "unext", "ukan", "segformer",
            "swin_unet", "transunet", "vm_unet"} == set(NAMES)
    assert NAMES.index("unet_bn") == NAMES.index("unet") + 1


def _norms(model):
    return {type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}


def test_unet_bn_is_the_unet_with_batch_norm():
    """unet keeps MONAI's default instance norm (its checkpoints' recipes carry no norm); unet_bn only swaps
    the normalisation: BatchNorm2d everywhere, no InstanceNorm2d, same layers otherwise."""
    unet, unet_bn = zoo.info("unet"), zoo.info("unet_bn")
    assert unet["kwargs"] == {"channels": [16, 32, 64, 128], "num_res_units": 1}
    assert unet_bn["kwargs"] == unet["kwargs"] | {"norm": "batch"}
    assert unet_bn["training"] == unet["training"] and unet_bn["family"] == "cnn"
    assert "BatchNorm" in unet_bn["bias"] and "InstanceNorm" in unet_bn["bias"]
    json.dumps(zoo.RECIPES["unet_bn"].as_dict("lesions"))  # stored in checkpoints: must be JSON-able
    assert _norms(zoo.build("unet")) == {"InstanceNorm2d"}
    assert _norms(zoo.build("unet_bn")) == {"BatchNorm2d"}
    a, b = zoo.build("unet"), zoo.build("unet_bn")
    assert [n for n, _ in a.named_modules()] == [n for n, _ in b.named_modules()]
    assert list(a.stages()) == list(b.stages())
    # eval-mode BatchNorm is local: a change far from a pixel leaves that pixel's output unchanged
    model = b.eval()
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    far = x.clone()
    far[..., 80:, 80:] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(x)[..., :16, :16], model(far)[..., :16, :16])


@pytest.mark.parametrize("name", NAMES)
def test_architecture_contract(name):
    torch.manual_seed(0)  # fixed initialisation
    model = zoo.build(name).eval()
    params = sum(p.numel() for p in model.parameters())
    assert 30_000 <= params <= 600_000, params
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 1, 64, 64)
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, model(x))  # deterministic in eval mode
        assert model(torch.rand(1, 3, 96, 96)).shape == (1, 1, 96, 96)
    stages = model.stages()
    assert len(stages) >= 5 and set(stages.values()) <= set(zoo.ROLES)
    assert {"encoder", "decoder"} & set(stages.values()) and "head" in stages.values()
    for path in stages:
        model.get_submodule(path)


def test_stages_follow_the_forward_order():
    stages = list(zoo.build("transunet").stages())
    assert stages.index("net.enc1") < stages.index("net.bottleneck") < stages.index("net.dec1") < stages.index(
        "net.head")
    assert "net.bottleneck.blocks.0.mixer" in stages


def test_input_checks():
    model = zoo.build("unext")
    with pytest.raises(ValueError, match="divisible by 32, got 48x64"):
        model(torch.rand(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) tensor, got \(1, 1, 64, 64\)"):
        model(torch.rand(1, 1, 64, 64))


def naive_scan(u, delta, A, B, C, D):
    """One token at a time, straight from the S6 recurrence."""
    h = u.new_zeros(*u.shape[:3], A.shape[-1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * B[:, :, None, :, t]
        ys.append((h * C[:, :, None, :, t]).sum(-1))
    return torch.stack(ys, -1) + D[..., None] * u


@pytest.mark.parametrize("length", [5, 8, 37])
def test_selective_scan_matches_the_sequential_recurrence(length):
    g = torch.Generator().manual_seed(length)
    u, delta = torch.randn(2, 4, 3, length, generator=g), torch.rand(2, 4, 3, length, generator=g)
    A = -torch.rand(4, 3, 5, generator=g) * 3
    B, C = torch.randn(2, 4, 5, length, generator=g), torch.randn(2, 4, 5, length, generator=g)
    D = torch.randn(4, 3, generator=g)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, D), naive_scan(u, delta, A, B, C, D),
                               rtol=1e-4, atol=1e-4)


def test_selective_scan_is_causal():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(1, 4, 2, 20, generator=g), torch.rand(1, 4, 2, 20, generator=g),
            -torch.rand(4, 2, 3, generator=g), torch.randn(1, 4, 3, 20, generator=g),
            torch.randn(1, 4, 3, 20, generator=g), torch.ones(4, 2)]
    y = selective_scan(*args)
    args[0] = args[0].clone()
    args[0][..., 12] += 1.0
    changed = (selective_scan(*args) - y).abs().amax((0, 1, 2)) > 0
    assert not changed[:12].any() and changed[12:].all()


# --- checkpoints --------------------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(MANIFEST))
def test_checkpoint_reproduces_its_recorded_test_dice(key):
    from pdcr_lab import datasets

    dataset, name = key.split("/")
    entry = MANIFEST[key]
    model, meta = zoo.load(name, dataset)  # verifies the sha256
    assert not model.training
    assert meta["sha256"] == entry["sha256"] and meta["params"] == entry["params"]
    assert (zoo.zoo_dir() / entry["file"]).stat().st_size < 5_000_000
    data = datasets.load(dataset)
    n = len(entry["test_dice_first"])
    probs = _training.predict(model, data.images("test")[:n])
    dice, _ = _training.dice_iou(probs > 0.5, data.masks("test")[:n])
    torch.testing.assert_close(dice, torch.tensor(entry["test_dice_first"], dtype=dice.dtype), atol=1e-3, rtol=0)


def test_checkpoint_recipes_match_the_registry():
    """Each shipped checkpoint stores the build options its registry recipe gives today (adding a build
    option with a default, like the U-Net's ``norm``, leaves the older recipes as they were)."""
    for key in sorted(MANIFEST):
        dataset, name = key.split("/")
        stored = torch.load(zoo.zoo_dir() / MANIFEST[key]["file"], map_location="cpu", weights_only=True)["recipe"]
        expected = zoo.RECIPES[name].as_dict(dataset)["kwargs"]
        channels = MANIFEST[key].get("in_channels", expected.get("in_channels", 3))
        if channels != expected.get("in_channels", 3):  # a 1-channel set (brain) records its channels
            expected = expected | {"in_channels": channels}
        assert stored["kwargs"] == expected, key
        assert stored["builder"] == zoo.RECIPES[name].as_dict(dataset)["builder"], key


# --- training -----------------------------------------------------------------------------------

class TinyData:
    """Same interface as pdcr_lab.datasets.load(...): bright discs on a dark noisy background."""

    def __init__(self, n=(8, 4, 4), size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self._splits = {}
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        for split, count in zip(("train", "val", "test"), n):
            centre = torch.randint(8, size - 8, (count, 2), generator=g)
            masks = ((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2) < 36
            images = 0.2 * torch.rand(count, 3, size, size, generator=g) + 0.6 * masks[:, None]
            self._splits[split] = (images.float(), masks)

    def images(self, split):
        return self._splits[split][0]

    def masks(self, split):
        return self._splits[split][1]


def test_early_stopping_restores_the_best_validation_epoch(monkeypatch):
    scores = iter([0.2, 0.6, 0.4, 0.3, 0.5, 0.9])
    snapshots = []

    def scripted(model, images, masks):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"dice": next(scores), "iou": 0.0, "per_image_dice": []}

    monkeypatch.setattr(_training, "evaluate", scripted)
    torch.manual_seed(0)
    model = zoo.build("unext")
    out = _training.fit(model, TinyData(), zoo.Training(epochs=6, patience=2, batch_size=4), progress=False)
    assert out["epochs_run"] == 4 and out["best_epoch"] == 1 and out["best_val_dice"] == 0.6
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])


def test_train_save_load_roundtrip_and_errors(tmp_path):
    meta = zoo.train("unext", "lesions", epochs=1, out_dir=tmp_path, progress=False, data=TinyData())
    assert meta["epochs_run"] == 1 and meta["best_epoch"] == 0 and 0 <= meta["test_dice"] <= 1
    entry = zoo.read_manifest(tmp_path)["models"]["lesions/unext"]
    assert entry["sha256"] == meta["sha256"] and entry["images_per_s"] > 0

    model, loaded = zoo.load("unext", "lesions", root=tmp_path)
    assert loaded["test_dice_first"] == meta["test_dice_first"] and loaded["seed"] == 0
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    data = TinyData()
    dice, _ = _training.dice_iou(_training.predict(model, data.images("test")) > 0.5, data.masks("test"))
    torch.testing.assert_close(dice.tolist(), meta["test_dice_first"], atol=1e-6, rtol=0)

    # same seed, same recipe -> the same weights
    again = zoo.train("unext", "lesions", epochs=1, progress=False, data=TinyData(), save=False)
    for key, value in again["model"].state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key])

    with pytest.raises(FileNotFoundError, match="no checkpoint for 'unet' on 'lesions'"):
        zoo.load("unet", "lesions", root=tmp_path)
    path = tmp_path / entry["file"]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(zoo.ChecksumError, match="checksum mismatch for .*unext.pt: the manifest records sha256"):
        zoo.load("unext", "lesions", root=tmp_path)


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown zoo model name='resnet'; known models: \['unet', 'unet_bn', 'segnet'"):
        zoo.load("resnet", "lesions")
    with pytest.raises(ValueError, match=r"unknown zoo dataset='skin'; the zoo is trained on: \['lesions', 'vessels', 'brain', "):
        zoo.load("unet", "skin")
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.train("resnet", "lesions")


def test_cli(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["zoo", "train", "unet", "--dataset", "vessels", "--seed", "3", "--epochs", "2",
                              "--out", str(tmp_path)])
    assert (args.name, args.dataset, args.seed, args.epochs, args.func.__name__) == ("unet", "vessels", 3, 2, "_train")
    with pytest.raises(SystemExit):
        parser.parse_args(["zoo", "train", "resnet", "--dataset", "vessels"])
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "models": {}}))
    assert main(["zoo", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vm_unet" in out and "untrained" in out
    assert main(["zoo", "benchmark", "--root", str(tmp_path)]) == 0


# --- manifests and recipes are checked before anything is loaded or built --------------------------

def _manifest(root, entries):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"format": 1, "models": entries}))
    return root / "manifest.json"


def test_checkpoint_outside_the_zoo_folder_is_refused(tmp_path):
    import re

    shipped = MANIFEST["lesions/segnet"]
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes((zoo.zoo_dir() / shipped["file"]).read_bytes())
    root = tmp_path / "zoo"
    (root / "lesions").mkdir(parents=True)
    (root / "lesions" / "link.pt").symlink_to(outside)
    for file, message in [("../elsewhere.pt", "climbs out of the zoo folder"), (str(outside), "is an absolute path"),
                          ("lesions/../../elsewhere.pt", "climbs out of the zoo folder"),
                          ("lesions/link.pt", "outside the zoo folder")]:
        manifest = _manifest(root, {"lesions/segnet": {"file": file, "sha256": shipped["sha256"]}})
        with pytest.raises(ValueError, match=re.escape(f"zoo manifest {str(manifest)!r}: models['lesions/segnet'].file=") + ".*" + message):
            zoo.load("segnet", "lesions", root=root)
    # inside the folder (a sub-folder, or a link that stays inside) it loads
    (root / "lesions" / "segnet.pt").write_bytes(outside.read_bytes())
    _manifest(root, {"lesions/segnet": {"file": "lesions/segnet.pt", "sha256": shipped["sha256"]}})
    model, meta = zoo.load("segnet", "lesions", root=root)
    assert meta["sha256"] == shipped["sha256"]


def test_corrupt_or_malformed_manifest_names_the_file(tmp_path):
    import re

    path = tmp_path / "manifest.json"
    path.write_text('{"format": 1,\n "models": {"lesions/unet": }}')
    where = re.escape(f"zoo manifest {str(path)!r}")
    with pytest.raises(ValueError, match=where + " is not valid JSON: Expecting value at line 2, column 29"):
        zoo.load("unet", "lesions", root=tmp_path)
    with pytest.raises(ValueError, match=where + " is not valid JSON"):
        zoo.trained("lesions", root=tmp_path)
    for models, message in [([], "must be a JSON object with a 'models' object"),
                            ({"unet": {}}, r"model key 'unet' is not '<dataset>/<name>'"),
                            ({"lesions/unet": {"sha256": "0" * 64}}, r"models\['lesions/unet'\]\.file must be a non-empty path"),
                            ({"lesions/unet": {"file": "lesions/unet.pt", "sha256": "abc"}},
                             r"models\['lesions/unet'\]\.sha256 must be 64 lower-case hex digits")]:
        path.write_text(json.dumps({"format": 1, "models": models}))
        with pytest.raises(ValueError, match=where + ".*" + message):
            zoo.read_manifest(tmp_path)


def _checkpoint(root, kwargs):
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "recipe": {"kwargs": kwargs}, "metadata": {}}, buffer)
    (root / "lesions").mkdir(parents=True, exist_ok=True)
    (root / "lesions" / "segnet.pt").write_bytes(buffer.getvalue())
    _manifest(root, {"lesions/segnet": {"file": "lesions/segnet.pt", "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"channels": [65536, 16, 32, 64]}, r"build option channels=\[65536, 16, 32, 64\] of 'segnet' holds 65536; integer build options are at most 1024"),
    ({"channels": [1024, 1024, 1024, 1024]}, r"'segnet' built from options .* has [\d,]+ parameters; at most 20,000,000 are allowed"),
    ({"channels": list(range(1, 40))}, r"build option channels= of 'segnet' has 39 entries; at most 16"),
])
def test_absurd_recipe_is_refused_before_the_model_is_built(tmp_path, monkeypatch, kwargs, message):
    _checkpoint(tmp_path, kwargs)
    with pytest.raises(ValueError, match=r"^checkpoint '.*segnet\.pt': " + message):
        zoo.load("segnet", "lesions", root=tmp_path)


def test_shipped_recipes_are_within_the_documented_bounds():
    from pdcr_lab.zoo import _store  # the bounds are not exported by pdcr_lab.zoo yet

    for name in NAMES:
        count = _store.check_recipe_size(name, zoo.RECIPES[name].kwargs)
        assert 30_000 <= count <= _store.MAX_PARAMETERS
    assert "MAX_PARAMETERS" in _store.__doc__ and "meta" in _store.__doc__


# --- own data: any channel count, a user folder, never the shipped zoo unless asked --------------

class GreyData(TinyData):
    """TinyData as one-channel images, with the provenance a folder loader records."""

    info = {"loader": "test", "normalize": "percentile", "binarize": True}

    def images(self, split):
        return super().images(split)[:, :1]


def test_train_on_own_one_channel_data_records_the_recipe_and_reloads(tmp_path):
    meta = zoo.train("segnet", "cells", epochs=1, out_dir=tmp_path, progress=False, data=GreyData())
    assert meta["in_channels"] == 1 and meta["recipe"]["in_channels"] == 1
    assert meta["recipe"]["kwargs"]["in_channels"] == 1 and meta["data"]["normalize"] == "percentile"
    # a few dozen images still get the embedded sets' optimiser steps per epoch
    assert meta["recipe"]["training"]["min_epoch_images"] == 320
    model, loaded = zoo.load("segnet", "cells", root=tmp_path)
    assert model.channels == 1 and loaded["test_dice_first"] == meta["test_dice_first"]
    again, info = zoo.load_checkpoint(tmp_path / "cells" / "segnet.pt")
    assert info["verified"] is True and again.channels == 1
    with pytest.raises(ValueError, match=r"unknown dataset='lesions' in the zoo folder .*; its checkpoints are "
                                         r"trained on: \['cells'\]"):
        zoo.load("segnet", "lesions", root=tmp_path)
    path = tmp_path / "cells" / "segnet.pt"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(zoo.ChecksumError, match="checksum mismatch"):
        zoo.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"dataset='my data' names the checkpoint's folder"):
        zoo.train("segnet", "my data", epochs=1, out_dir=tmp_path, progress=False, data=GreyData())


def test_training_never_writes_into_the_shipped_zoo_unless_asked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"is the shipped zoo; a training run would overwrite its checkpoints"):
        zoo.train("segnet", "lesions", epochs=1, out_dir=zoo.shipped_zoo(), progress=False, data=TinyData())
    monkeypatch.chdir(tmp_path)
    meta = zoo.train("segnet", "lesions", epochs=1, progress=False, data=TinyData())
    assert meta["file"] == str(zoo.USER_ZOO / "lesions" / "segnet.pt")  # the default: a user folder
    assert (tmp_path / "outputs" / "zoo" / "manifest.json").is_file()
