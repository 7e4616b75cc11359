"""Own data and own models from the command line: `pdcr-lab zoo train --images/--masks` and
`pdcr-lab explain --image/--images --model SPEC`, end to end on a generated folder of 16-bit grey
images with instance-label masks, and the one-line error of every bad input."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from pdcr_lab import load, validate
from pdcr_lab.cli import main
from pdcr_lab.models import ModelSpecError, load_model

SIDE = 64


def _nuclei(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 12-bit fluorescence-like image stored in 16 bits, and its instance labels (0 = background)."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    labels = np.zeros((SIDE, SIDE), np.uint16)
    image = rng.normal(300, 40, (SIDE, SIDE))
    for label in range(1, 4):
        cy, cx, r = rng.uniform(12, SIDE - 12), rng.uniform(12, SIDE - 12), rng.uniform(5, 9)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        labels[inside] = label
        image[inside] += 2500
    return np.clip(image, 0, 4095).astype(np.uint16), labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "nuclei"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(14):
        image, labels = _nuclei(rng)
        Image.fromarray(image).save(root / "images" / f"cell{k:02d}.png")
        Image.fromarray(labels).save(root / "masks" / f"cell{k:02d}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    code = main(["zoo", "train", "unet_bn", "--images", str(folder / "images"), "--masks", str(folder / "masks"),
                 "--out", str(out), "--epochs", "8", "--binarize", "--normalize", "percentile", "--seed", "1",
                 "--quiet"])
    assert code == 0
    (path,) = out.glob("*/unet_bn.pt")
    return path


def test_zoo_train_on_a_folder_writes_a_checkpoint_with_its_recipe_and_data(checkpoint, folder, capsys):
    assert checkpoint.parent.name == "nuclei"  # named after the data folder, not after an embedded dataset
    manifest = json.loads((checkpoint.parent.parent / "manifest.json").read_text())
    entry = manifest["models"]["nuclei/unet_bn"]
    assert entry["in_channels"] == 1 and entry["file"] == "nuclei/unet_bn.pt"
    model, meta = load_model(str(checkpoint)).model, load_model(str(checkpoint)).info
    assert model.channels == 1 and meta["verified"] is True
    assert meta["recipe"]["in_channels"] == 1 and meta["recipe"]["kwargs"]["in_channels"] == 1
    data = meta["data"]
    assert data["normalize"] == "percentile" and data["binarize"] is True
    assert sum(data["splits"].values()) == 14 and data["splits"]["val"] >= 1
    assert meta["epochs_run"] <= 8 and 0 <= meta["val_dice"] <= 1


def test_explain_own_files_with_a_bank_cut_from_the_folder(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "maps"
    image, mask = folder / "images" / "cell03.png", folder / "masks" / "cell03.png"
    code = main(["explain", "--image", str(image), "--mask", str(mask), "--model", str(checkpoint), "--binarize",
                 "--bank-from", str(folder / "images"), "--coarse", "1", "--fine", "2", "--out", str(out)])
    assert code == 0
    (nc,) = out.glob("*.nc")
    (png,) = out.glob("*.png")
    assert nc.stem == png.stem and nc.stem.startswith("cell03_r")
    ds = validate(load(nc))
    assert ds.ate.shape == (SIDE // 8, SIDE // 8)
    assert ds.attrs["outcome"] == "dice" and ds.attrs["model_kind"] == "checkpoint"
    assert "percentile" in ds.attrs["input_normalize"]  # the checkpoint's normalisation was used
    provenance = json.loads(ds.attrs["bank_provenance"])
    assert "cell03" not in json.dumps(provenance.get("sources", provenance))  # never the explained image
    assert capsys.readouterr().out.count("wrote") == 1


def test_explain_a_folder_is_resumable_and_ground_truth_free_can_show_harm(checkpoint, folder, tmp_path, capsys):
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("cell00.png", "cell01.png"):
        (subset / name).write_bytes((folder / "images" / name).read_bytes())
    args = ["explain", "--images", str(subset), "--model", str(checkpoint), "--bank-from", str(folder / "images"),
            "--coarse", "1", "--fine", "2", "--tau", "0", "--out", str(tmp_path / "maps")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "2 map(s) written, 0 kept, 0 skipped" in first and "outcome soft_dice" in first
    results = sorted((tmp_path / "maps").glob("*.nc"))
    assert len(results) == 2
    ds = load(results[0])
    assert ds.attrs["outcome"] == "soft_dice" and ds.attrs["target_source"] == "prediction"
    assert float(ds.m0) < 100  # soft Dice against the factual prediction: room to go up as well as down
    assert bool((ds.ate > 0).any()) and bool((ds.ate < 0).any())  # harm and support, without ground truth
    stamp = results[0].stat().st_mtime_ns
    assert main(args) == 0
    assert "0 map(s) written, 2 kept, 0 skipped" in capsys.readouterr().out
    assert results[0].stat().st_mtime_ns == stamp
    assert main(args[:-2] + ["--fine", "3", "--out", str(tmp_path / "maps")]) == 0  # other settings: recomputed
    out = capsys.readouterr().out
    assert "2 map(s) written, 0 kept, 0 skipped" in out and "it was computed with fine=2" in out
    assert int(load(results[0]).attrs["fine"]) == 3


def _tiny_grey_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid()).eval()


def test_model_specs_export_program_and_module_function(tmp_path, folder):
    model = _tiny_grey_model()
    x = torch.rand(1, 1, SIDE, SIDE)
    program = torch.export.export(model, (x,))
    torch.export.save(program, tmp_path / "fixed.pt2")
    dynamic = torch.export.export(model, (torch.rand(2, 1, SIDE, SIDE),),
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    torch.export.save(dynamic, tmp_path / "dynamic.pt2")
    for name in ("fixed.pt2", "dynamic.pt2"):
        loaded = load_model(str(tmp_path / name))
        assert loaded.kind == "export"
        batch = torch.rand(3, 1, SIDE, SIDE)
        torch.testing.assert_close(loaded.model(batch), model(batch))
        assert loaded.model.eval() is loaded.model  # exported graphs refuse eval(); the wrapper does not
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "mynet.py").write_text(textwrap.dedent(f"""
        import torch
        def build():
            net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid())
            net.load_state_dict(torch.load({str(tmp_path / 'weights.pt')!r}))
            return net
        def not_a_model():
            return 3
    """))
    loaded = load_model(f"{tmp_path / 'mynet.py'}:build")
    assert loaded.kind == "function"
    torch.testing.assert_close(loaded.model(x), model(x))
    out = tmp_path / "maps"
    image = folder / "images" / "cell05.png"
    for spec in (str(tmp_path / "fixed.pt2"), f"{tmp_path / 'mynet.py'}:build"):
        assert main(["explain", "--image", str(image), "--model", spec, "--intervention", "zero", "--coarse", "1",
                     "--fine", "1", "--roi", "16", "16", "16", "16", "--out", str(out), "--overwrite"]) == 0
    with pytest.raises(ModelSpecError, match=r"not_a_model\(\) returned int, expected a torch.nn.Module"):
        load_model(f"{tmp_path / 'mynet.py'}:not_a_model")


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_every_bad_input_gets_one_line_and_exit_status_2(checkpoint, folder, tmp_path, capsys):
    image, mask = str(folder / "images" / "cell03.png"), str(folder / "masks" / "cell03.png")
    bank = ["--bank-from", str(folder / "images")]
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(rgb)
    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((50, 50), np.uint16)).save(odd)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save(_tiny_grey_model().state_dict(), tmp_path / "weights.pt")  # weights without an architecture
    torch.save(_tiny_grey_model(), tmp_path / "module.pt")  # a pickled module: never unpickled
    (tmp_path / "empty").mkdir()
    cases = {
        "--image '.*missing.png' does not exist": ["--image", str(tmp_path / "missing.png"), "--model", str(checkpoint)],
        "--model '.*nothing.pt': file does not exist": ["--image", image, "--model", str(tmp_path / "nothing.pt")],
        "junk.pt.* cannot be read as a pdcr_lab zoo checkpoint": ["--image", image, "--model", str(tmp_path / "junk.pt")],
        "weights.pt.* has no recipe .* give a function that builds the model and loads them \\(--model file.py:function\\)":
            ["--image", image, "--model", str(tmp_path / "weights.pt")],
        "module.pt.* holds pickled objects .* which are not loaded: unpickling can run code":
            ["--image", image, "--model", str(tmp_path / "module.pt")],
        "--model 'no_such_module:build': cannot import 'no_such_module'": ["--image", image, "--model", "no_such_module:build"],
        "--model 'resnet' is neither a checkpoint": ["--image", image, "--model", "resnet"],
        r"cannot take rgb.png \(3 channels, 64x64\): it expects 1-channel images": ["--image", str(rgb), "--model",
                                                                                   str(checkpoint), *bank],
        r"cannot take odd.png \(1 channel, 50x50\): it expects 1-channel images, height and width divisible by 32":
            ["--image", str(odd), "--model", str(checkpoint), *bank],
        "--bank-from '.*nowhere' does not exist": ["--image", image, "--model", str(checkpoint), "--bank-from",
                                                    str(tmp_path / "nowhere")],
        "the natural intervention draws blocks from a bank": ["--image", image, "--mask", mask, "--binarize",
                                                              "--model", str(checkpoint)],
        "binarize": ["--image", image, "--mask", mask, "--model", str(checkpoint), *bank],  # label mask, no --binarize
        "--images folder '.*empty' holds no image files": ["--images", str(tmp_path / "empty"), "--model", str(checkpoint)],
        "--mask goes with --image": ["--images", str(folder / "images"), "--mask", mask, "--model", str(checkpoint)],
        "--model 'x.pt2' is not a zoo architecture": ["--model", "x.pt2"],
    }
    for message, argv in cases.items():
        line = _error(capsys, ["explain", *argv, "--out", str(tmp_path / "out")])
        assert line.startswith("pdcr-lab explain: error: "), line
        assert __import__("re").search(message, line), (message, line)
    train = ["zoo", "train", "unet_bn", "--images", str(folder / "images"), "--epochs", "1", "--quiet"]
    assert "needs --masks" in _error(capsys, train + ["--out", str(tmp_path / "z")])
    assert "is the shipped zoo" in _error(capsys, train + ["--masks", str(folder / "masks"), "--binarize",
                                                          "--out", "data/zoo"])
    assert "--val-fraction 0.0" in _error(capsys, train + ["--masks", str(folder / "masks"), "--binarize",
                                                           "--val-fraction", "0", "--out", str(tmp_path / "z")])
    for sub in ("images", "masks"):  # one image: its tiles stay together, so there is nothing to validate on
        (tmp_path / "one" / sub).mkdir(parents=True)
        (tmp_path / "one" / sub / "cell00.png").write_bytes((folder / sub / "cell00.png").read_bytes())
    line = _error(capsys, ["zoo", "train", "unet_bn", "--images", str(tmp_path / "one" / "images"), "--masks",
                           str(tmp_path / "one" / "masks"), "--binarize", "--normalize", "percentile", "--tile", "32",
                           "--out", str(tmp_path / "z")])
    assert "the val split is empty; splits are drawn over source images" in line and "the folder has 1" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "z").exists()


def test_bank_option_reads_a_block_folder_or_a_saved_bank(checkpoint, folder, tmp_path, capsys):
    from pdcr_lab.banks import PatchBank
    from pdcr_lab.datasets import bank_from_folder

    image = folder / "images" / "cell03.png"
    bank = bank_from_folder(folder / "images", block=8, exclude=[image], normalize="percentile", per_image=5)
    saved = bank.save(tmp_path / "bank.npz")
    blocks = tmp_path / "blocks"  # the reference layout: <source>_<row>_<col>.png, here 16-bit grey
    blocks.mkdir()
    for k, block in enumerate(bank.blocks[:20]):
        Image.fromarray((block[0].numpy() * 65535).round().astype(np.uint16)).save(blocks / f"cell_{k:02d}_0.png")
    assert float(PatchBank.from_folder(blocks).blocks.max()) <= 1.0
    torch.testing.assert_close(PatchBank.from_folder(blocks).blocks, bank.blocks[:20], atol=1e-4, rtol=0)
    for source in (saved, blocks):
        assert main(["explain", "--image", str(image), "--model", str(checkpoint), "--bank", str(source),
                     "--coarse", "1", "--fine", "1", "--out", str(tmp_path / f"out_{source.stem}"), "--roi", "16", "16",
                     "16", "16"]) == 0
        (nc,) = (tmp_path / f"out_{source.stem}").glob("*.nc")
        assert load(nc).attrs["bank_id"] == (bank.id if source == saved else PatchBank.from_folder(blocks).id)


def test_zoo_train_on_an_rgb_folder_resized_and_the_size_error(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for sub in ("images", "masks"):
        (tmp_path / "rgb" / sub).mkdir(parents=True)
    for k in range(8):
        mask = np.zeros((50, 50), np.uint8)
        r, c = rng.integers(10, 35, 2)
        mask[r : r + 10, c : c + 12] = 255
        image = rng.integers(0, 90, (50, 50, 3)).astype(np.uint8)
        image[mask > 0] = (200, 60, 60)
        Image.fromarray(image).save(tmp_path / "rgb" / "images" / f"im{k}.png")
        Image.fromarray(mask).save(tmp_path / "rgb" / "masks" / f"im{k}.png")
    base = ["zoo", "train", "segnet", "--images", str(tmp_path / "rgb" / "images"), "--masks",
            str(tmp_path / "rgb" / "masks"), "--epochs", "1", "--quiet", "--out", str(tmp_path / "zoo")]
    line = _error(capsys, base)
    assert "are 50x50; zoo models need sides divisible by 32: pass --size (e.g. --size 96) or --tile" in line
    assert main(base + ["--size", "64", "--resample", "pil"]) == 0
    checkpoint = tmp_path / "zoo" / "rgb" / "segnet.pt"
    loaded = load_model(str(checkpoint))
    assert loaded.model.channels == 3 and loaded.info["image_size"] == [64, 64]
    assert loaded.info["data"]["size"] == 64 and loaded.info["data"]["normalize"] == "dtype"
    assert loaded.info["data"]["resample"] == "pil"
    # explain reads files the way the checkpoint's training data were read (Pillow resizing here) ...
    explain = ["explain", "--image", str(tmp_path / "rgb" / "images" / "im0.png"), "--mask",
               str(tmp_path / "rgb" / "masks" / "im0.png"), "--model", str(checkpoint), "--size", "64",
               "--intervention", "zero", "--coarse", "1", "--fine", "1", "--out", str(tmp_path / "maps")]
    assert main(explain) == 0
    (result,) = (tmp_path / "maps").glob("*.nc")
    assert load(result).attrs["input_resample"] == "pil"
    capsys.readouterr()
    # ... and another resizing asked for on the command line is another result
    assert main(explain + ["--resample", "torch"]) == 0
    assert "it was computed with input_resample=pil" in capsys.readouterr().out
    assert load(result).attrs["input_resample"] == "torch"


def test_a_warning_is_one_line_naming_the_command(folder, tmp_path, capsys):
    """class_index=0 of a 2-class model with a foreground mask: the polarity warning, as one line."""
    (tmp_path / "twoclass.py").write_text(textwrap.dedent("""
        import torch
        def build():
            net = torch.nn.Conv2d(1, 2, 1)
            with torch.no_grad():
                net.weight[:] = torch.tensor([-40.0, 40.0]).view(2, 1, 1, 1)
                net.bias[:] = torch.tensor([20.0, -20.0])   # class 1 where the image is bright
            return net
    """))
    image, mask = folder / "images" / "cell03.png", folder / "masks" / "cell03.png"
    assert main(["explain", "--image", str(image), "--mask", str(mask), "--binarize", "--normalize", "percentile",
                 "--model", f"{tmp_path / 'twoclass.py'}:build", "--class-index", "0", "--intervention", "zero",
                 "--coarse", "1", "--fine", "1", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    (line,) = [part for part in err.replace("\r", "\n").splitlines() if "OutcomeWarning" in part]
    assert line.startswith("pdcr-lab explain: OutcomeWarning: M0 < 10 DSC points") and "target=~mask" in line


def test_a_bad_image_of_a_folder_is_skipped_and_reported(checkpoint, folder, tmp_path, capsys):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for name in ("cell00.png", "cell01.png"):
        for sub in ("images", "masks"):
            (tmp_path / sub / name).write_bytes((folder / sub / name).read_bytes())
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint16)).save(tmp_path / "masks" / "cell01.png")  # nothing to explain
    code = main(["explain", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--binarize",
                 "--model", str(checkpoint), "--bank-from", str(folder / "images"), "--coarse", "1", "--fine", "1",
                 "--out", str(tmp_path / "maps")])
    captured = capsys.readouterr()
    assert code == 1 and "1 map(s) written, 0 kept, 1 skipped" in captured.out
    assert "cell01.png: skipped: cell01.png: its mask has no foreground" in captured.err
    assert [p.name.split("_")[0] for p in (tmp_path / "maps").glob("*.nc")] == ["cell00"]
