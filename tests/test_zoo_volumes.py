"""Tests of the 3-D (volume) zoo: architectures, input checks, dataset compatibility, training and
the shipped 3-D checkpoints."""

from __future__ import annotations

import pytest
import torch

from pdcr_lab import zoo
from pdcr_lab.cli import build_parser, main

# the MONAI subclasses and the training loop are internal
from pdcr_lab.zoo import _monai, _training

VOLUME_NAMES = zoo.list(3)
SHIPPED_3D = {k: v for k, v in zoo.read_manifest()["models"].items() if k.split("/")[0] in zoo.DATASETS_3D}


def test_volume_recipes_are_registered_apart_from_the_2d_zoo():
    assert VOLUME_NAMES == ["unet3d", "segresnet3d"]
    assert not set(VOLUME_NAMES) & set(zoo.list()) and zoo.list(None) == list(zoo.RECIPES)
    assert zoo.DATASETS == ("lesions", "vessels", "brain", "cues", "cues_global", "cues_sequential")
    assert zoo.DATASETS_3D == ("brain3d", "vessels3d")
    assert {zoo.info(n)["family"] for n in VOLUME_NAMES} == {"cnn", "deep-cnn"}
    for name in VOLUME_NAMES:
        facts = zoo.info(name)
        assert facts["spatial_dims"] == 3 and facts["datasets"] == ["brain3d", "vessels3d"]
        assert set(facts["training"]) == {"brain3d", "vessels3d"} and "3-D" in facts["paper"]
        assert zoo.RECIPES[name].spatial_dims == 3
    assert zoo.info("unet")["spatial_dims"] == 2 and zoo.info("unet")["datasets"] == list(zoo.DATASETS)
    with pytest.raises(ValueError, match="spatial_dims=1 is not valid; expected 2, 3 or None"):
        zoo.list(1)


@pytest.mark.parametrize("name", VOLUME_NAMES)
def test_volume_architecture_contract(name):
    from pdcr_lab.zoo import _store  # the recipe bounds are checked by the loader

    torch.manual_seed(0)
    model = zoo.build(name).eval()
    assert (model.spatial_dims, model.channels, model.multiple) == (3, 1, 16)
    assert 30_000 <= _store.check_recipe_size(name, zoo.RECIPES[name].kwargs) <= 300_000
    x = torch.rand(2, 1, 16, 32, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 1, 16, 32, 16)
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, model(x))
    stages = model.stages()
    assert set(stages.values()) <= set(zoo.ROLES) and {"encoder", "bottleneck", "decoder", "head"} <= set(stages.values())
    for path in stages:
        model.get_submodule(path)


@pytest.mark.parametrize(("cls", "kwargs"), [
    (_monai.UNet, {"channels": (4, 8, 16)}), (_monai.SegResNet, {"init_filters": 4, "norm_groups": 4}),
    (_monai.AttentionUnet, {"channels": (4, 8, 16)}), (_monai.BasicUNetPlusPlus, {}),
])
def test_monai_subclasses_have_the_same_stages_in_2d_and_3d(cls, kwargs):
    flat, cube = cls(**kwargs), cls(**kwargs, spatial_dims=3)
    assert (flat.spatial_dims, cube.spatial_dims) == (2, 3)
    assert [n for n, _ in flat.named_modules()] == [n for n, _ in cube.named_modules()]
    assert flat.stage_roles() == cube.stage_roles()
    assert any(isinstance(m, torch.nn.Conv3d) for m in cube.modules())
    assert not any(isinstance(m, torch.nn.Conv3d) for m in flat.modules())
    with pytest.raises(ValueError, match="spatial_dims=1 is not valid; expected 2 .* or 3"):
        cls(**kwargs, spatial_dims=1)


def test_input_checks_in_3d_and_unchanged_in_2d():
    volume, image = zoo.build("unet3d"), zoo.build("unet")
    with pytest.raises(ValueError, match=r"unet3d: input must be a \(B, 1, D, H, W\) tensor, got \(1, 1, 32, 32\)"):
        volume(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\) tensor, got \(1, 3, 16, 16, 16\) \(this model takes 1 channel\)"):
        volume(torch.rand(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="depth, height and width must be divisible by 16, got 24x32x16"):
        volume(torch.rand(1, 1, 24, 32, 16))
    with pytest.raises(ValueError, match=r"unet: input must be a \(B, 3, H, W\) tensor, got \(1, 3, 32, 32, 32\)"):
        image(torch.rand(1, 3, 32, 32, 32))
    with pytest.raises(ValueError, match="input height and width must be divisible by 32, got 48x64"):
        image(torch.rand(1, 3, 48, 64))
    assert image.mean.shape == (1, 3, 1, 1) and volume.mean.shape == (1, 1, 1, 1, 1)  # 2-D checkpoints unchanged


def test_models_and_datasets_of_the_other_kind_are_refused():
    with pytest.raises(ValueError, match=r"zoo model 'unet' is a 2-D architecture, trained on \['lesions', 'vessels', 'brain', .*\], "
                                         r"not on the 3-D dataset 'brain3d'; the 3-D models are \['unet3d', 'segresnet3d'\]"):
        zoo.load("unet", "brain3d")
    with pytest.raises(ValueError, match=r"zoo model 'segresnet3d' is a 3-D architecture, .* not on the 2-D dataset "
                                         r"'vessels'; the 2-D models are \['unet', "):
        zoo.load("segresnet3d", "vessels")
    with pytest.raises(ValueError, match=r"unknown zoo dataset='brain4d'; the zoo is trained on: \['lesions', 'vessels', 'brain', 'cues', 'cues_global', 'cues_sequential'\] "
                                         r"\(2-D\) and \['brain3d', 'vessels3d'\] \(3-D\)"):
        zoo.trained("brain4d")
    with pytest.raises(ValueError, match="zoo model 'unet3d' is a 3-D architecture"):
        zoo.train("unet3d", "lesions", epochs=1, save=False, progress=False, data=TinyVolumes())


def test_trained_lists_the_shipped_volume_models():
    for dataset in zoo.DATASETS_3D:
        assert zoo.trained(dataset) == [n for n in VOLUME_NAMES if f"{dataset}/{n}" in SHIPPED_3D]
    assert not set(zoo.trained("lesions")) & set(VOLUME_NAMES)


# --- training -----------------------------------------------------------------------------------

class TinyVolumes:
    """Same interface as ``pdcr_lab.datasets.load("brain3d")``: bright balls in noisy 16^3 volumes."""

    def __init__(self, n=(6, 3, 3), size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        zz, yy, xx = torch.meshgrid(*(torch.arange(size),) * 3, indexing="ij")
        self._splits = {}
        for split, count in zip(("train", "val", "test"), n):
            c = torch.randint(5, size - 5, (count, 3, 1, 1, 1), generator=g)
            masks = (zz - c[:, 0]) ** 2 + (yy - c[:, 1]) ** 2 + (xx - c[:, 2]) ** 2 < 12
            images = 0.3 * torch.rand(count, 1, size, size, size, generator=g) + 0.6 * masks[:, None]
            self._splits[split] = (images.float(), masks)

    def images(self, split):
        return self._splits[split][0]

    def masks(self, split):
        return self._splits[split][1]


def test_flips_move_volume_and_mask_together_along_every_axis():
    import itertools

    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 1, 2, 3, 5).repeat(16, 1, 1, 1, 1)
    fx, fy = _training._flip(x, x.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(fx, fy)
    combos = [c for k in range(4) for c in itertools.combinations((-1, -2, -3), k)]
    axes = [next(c for c in combos if torch.equal(fx[i], x[i].flip(c) if c else x[i])) for i in range(16)]
    for dim in (-1, -2, -3):  # each axis flipped for some volumes, not all
        assert 0 < sum(dim in a for a in axes) < 16


def test_dice_per_volume():
    pred = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    pred[0, :2] = True
    target = pred.clone()
    target[0, 1] = False
    dice, iou = _training.dice_iou(pred, target)
    assert dice.tolist() == [2 * 16 / 48, 1.0] and iou.tolist() == [0.5, 1.0]


def test_train_save_load_roundtrip_on_tiny_volumes(tmp_path):
    meta = zoo.train("unet3d", "brain3d", epochs=2, out_dir=tmp_path, progress=False, data=TinyVolumes())
    assert meta["image_size"] == [16, 16, 16] and meta["recipe"]["kwargs"] == zoo.info("unet3d")["kwargs"]
    assert meta["epochs_run"] == 2 and 0 <= meta["test_dice"] <= 1
    entry = zoo.read_manifest(tmp_path)["models"]["brain3d/unet3d"]
    assert entry["sha256"] == meta["sha256"] and entry["images_per_s"] > 0 and entry["in_channels"] == 1
    model, loaded = zoo.load("unet3d", "brain3d", root=tmp_path)
    assert model.spatial_dims == 3 and model.mean.shape == (1, 1, 1, 1, 1) and not model.training
    data = TinyVolumes()
    dice, _ = _training.dice_iou(_training.predict(model, data.images("test")) > 0.5, data.masks("test"))
    torch.testing.assert_close(dice.tolist(), loaded["test_dice_first"], atol=1e-6, rtol=0)
    assert zoo.load_checkpoint(tmp_path / "brain3d" / "unet3d.pt")[1]["verified"] is True
    with pytest.raises(FileNotFoundError, match="no checkpoint for 'segresnet3d' on 'brain3d'"):
        zoo.load("segresnet3d", "brain3d", root=tmp_path)
    with pytest.raises(ValueError, match="zoo model 'unet' is a 2-D architecture"):
        zoo.load("unet", "brain3d", root=tmp_path)


def test_fit_segresnet3d_and_throughput_in_volumes():
    torch.manual_seed(0)
    model = zoo.build("segresnet3d")
    out = _training.fit(model, TinyVolumes(), zoo.Training(epochs=1, batch_size=3), progress=False)
    assert out["epochs_run"] == 1 and 0 <= out["best_val_dice"] <= 1 and not model.training
    assert _training.throughput(model, batch=2, size=16, repeats=1) > 0


def test_own_data_of_the_wrong_rank_is_refused():
    with pytest.raises(ValueError, match=r"'unet' is a 2-D architecture: it trains on \(N, C, H, W\) images, but the "
                                         r"training split of 'cubes' has shape \(6, 1, 16, 16, 16\)"):
        zoo.train("unet", "cubes", epochs=1, save=False, progress=False, data=TinyVolumes())


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_trains_volume_models_on_volume_datasets(tmp_path, capsys, monkeypatch):
    args = build_parser().parse_args(["zoo", "train", "unet3d", "--dataset", "brain3d", "--epochs", "2"])
    assert (args.name, args.dataset, args.epochs) == ("unet3d", "brain3d", 2)
    calls = []
    monkeypatch.setattr("pdcr_lab.zoo.cli.train", lambda name, dataset, **kw: calls.append((dataset, name)) or {
        "dataset": dataset, "name": name, "test_dice": 1.0, "test_iou": 1.0, "val_dice": 1.0, "epochs_run": 1,
        "best_epoch": 0, "train_seconds": 0.0})
    assert main(["zoo", "train-all", "--out", str(tmp_path), "--quiet"]) == 0
    assert {name for d, name in calls if d in zoo.DATASETS_3D} == set(VOLUME_NAMES)
    assert {name for d, name in calls if d in zoo.DATASETS} == set(zoo.list())
    capsys.readouterr()
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "brain3d" in out and "segresnet3d" in out
    assert main(["zoo", "list", "--markdown"]) == 0
    assert "| model | family | paper | brain3d Dice / IoU | vessels3d Dice / IoU | params | volumes/s |" in capsys.readouterr().out


# --- the shipped 3-D checkpoints ----------------------------------------------------------------

def test_the_volume_zoo_ships_every_model_on_every_3d_dataset():
    assert sorted(SHIPPED_3D) == sorted(f"{d}/{n}" for d in zoo.DATASETS_3D for n in VOLUME_NAMES)


def _volume_data(dataset):
    from pdcr_lab import datasets

    try:
        return datasets.load(dataset)
    except (ValueError, KeyError, ImportError) as exc:  # the 3-D datasets may be missing from this checkout
        pytest.skip(f"{dataset} is not loadable: {exc}")


@pytest.mark.parametrize("key", sorted(SHIPPED_3D))
def test_shipped_volume_checkpoint_verifies_and_reproduces_its_test_dice(key):
    dataset, name = key.split("/")
    entry = SHIPPED_3D[key]
    model, meta = zoo.load(name, dataset)  # verifies the sha256
    assert meta["sha256"] == entry["sha256"] and model.spatial_dims == 3 and not model.training
    assert (zoo.zoo_dir() / entry["file"]).stat().st_size < 2_000_000
    assert meta["recipe"]["kwargs"] == zoo.info(name)["kwargs"]
    assert entry["test_dice"] > 0.6 and entry["images_per_s"] > 0
    data = _volume_data(dataset)
    result = _training.evaluate(model, data.images("test"), data.masks("test"))
    assert abs(result["dice"] - entry["test_dice"]) < 1e-3
    n = len(entry["test_dice_first"])
    torch.testing.assert_close(result["per_image_dice"][:n], entry["test_dice_first"], atol=1e-3, rtol=0)
