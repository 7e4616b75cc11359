"""Real-data loaders (HAM10000, FIVES, FolderDataset), RoI lists and the bad-file policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from pdcr_lab import datasets

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdcr_reference"


def _write_pair(image_path: Path, mask_path: Path, seed: int, shape=(30, 40), mask_shape=None) -> None:
    rng = np.random.default_rng(seed)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(image_path)
    mask = np.zeros(mask_shape or shape, dtype=np.uint8)
    mask[5:20, 10:30] = 255
    Image.fromarray(mask).save(mask_path)


def _ham(folder: Path, ids, masks_folder: Path | None = None) -> list[str]:
    names = [f"ISIC_{1000000 + i:07d}" for i in ids]
    for k, name in enumerate(names):
        _write_pair(folder / f"{name}.jpg", (masks_folder or folder) / f"{name}_segmentation.png", k)
    return names


def _fives(root: Path) -> dict[str, list[str]]:
    names = {"train": ["1_A", "2_D", "3_G", "4_N"], "test": ["5_N", "6_A"]}
    for split, stems in names.items():
        for k, stem in enumerate(stems):
            _write_pair(root / split / "Original" / f"{stem}.png", root / split / "Ground truth" / f"{stem}.png", k)
    return names


# -- layouts ---------------------------------------------------------------------------------------
def test_ham_flat_folder_masks_beside_images(tmp_path):
    names = _ham(tmp_path, range(4))
    data = datasets.HAM10000(tmp_path, size=16)
    assert isinstance(data, datasets.SegmentationData) and data.splits == ("all",)
    assert data.ids("all") == names
    assert tuple(data.images("all").shape) == (4, 3, 16, 16) and data.images("all").dtype == torch.float32
    assert data.masks("all").dtype == torch.bool and data.masks("all").any()
    with pytest.raises(ValueError, match="no held-out images"):
        data.bank  # any image might be explained: no bank without train split or explain_ids


def test_ham_separate_masks_folder_and_explain_ids(tmp_path):
    names = _ham(tmp_path / "HAM10000_images_part_1", range(5), tmp_path / "HAM10000_segmentations_lesion_tschandl")
    data = datasets.HAM10000(tmp_path, size=16, explain_ids=names[:2])
    assert data.ids("all") == names
    assert set(data.bank.provenance["sources"]) == set(names[2:])
    with_masks_dir = datasets.HAM10000(tmp_path / "HAM10000_images_part_1", size=16,
                                       masks_dir=tmp_path / "HAM10000_segmentations_lesion_tschandl")
    assert torch.equal(with_masks_dir.masks("all"), data.masks("all"))


def test_ham_split_folders_and_bank_from_train(tmp_path):
    train = _ham(tmp_path / "train", range(4))
    test = _ham(tmp_path / "test", range(10, 12))
    data = datasets.HAM10000(tmp_path, size=16)
    assert data.splits == ("train", "test")
    assert data.ids("train") == train and data.ids("test") == test
    assert data.bank.provenance["sources"] == train and data.bank.block == 1
    only_test = datasets.HAM10000(tmp_path, split="test", size=24)
    assert only_test.splits == ("test",)
    assert only_test.bank.provenance["sources"] == train and only_test.bank.block == 2  # read lazily
    with pytest.raises(ValueError, match="split='val' is not supported"):
        datasets.HAM10000(tmp_path, split="val")


def test_ham_seeded_split_is_deterministic(tmp_path):
    names = _ham(tmp_path, range(20))
    a = datasets.HAM10000(tmp_path, size=12, split_seed=1, explain_ids=names[:3])
    b = datasets.HAM10000(tmp_path, size=12, split_seed=1, explain_ids=names[:3])
    c = datasets.HAM10000(tmp_path, size=12, split_seed=2)
    assert a.splits == ("train", "val", "test")
    assert all(a.ids(s) == b.ids(s) for s in a.splits)
    assert a.ids("train") != c.ids("train")
    groups = [set(a.ids(s)) for s in a.splits]
    assert sum(map(len, groups)) == len(set().union(*groups)) == 20
    assert set(names[:3]) <= set(a.ids("test"))
    assert set(a.bank.provenance["sources"]) == set(a.ids("train"))


def test_fives_layout_and_disease_metadata(tmp_path):
    names = _fives(tmp_path)
    data = datasets.FIVES(tmp_path, size=16)
    assert data.splits == ("train", "test") and data.ids("test") == names["test"]
    meta = {m["image"]: m for m in data.metadata("train")}
    assert meta["2_D.png"]["disease"] == "diabetic retinopathy" and meta["2_D.png"]["letter"] == "D"
    assert [m["disease"] for m in data.metadata("test")] == ["normal", "AMD"]
    test_only = datasets.FIVES(tmp_path, split="test", size=16)
    assert test_only.splits == ("test",)
    assert test_only.bank.provenance["sources"] == names["train"]


def test_folder_dataset_generic(tmp_path):
    for k in range(3):
        _write_pair(tmp_path / "img" / f"case{k}.png", tmp_path / "lbl" / f"case{k}_mask.png", k)
    data = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", mask_suffix="_mask", explain_ids=["case0"])
    assert tuple(data.images("all").shape) == (3, 3, 30, 40)  # size=None keeps the files' size
    expected = np.zeros((30, 40), bool)
    expected[5:20, 10:30] = True
    assert np.array_equal(data.masks("all")[1].numpy(), expected)
    assert data.bank.provenance["sources"] == ["case1", "case2"]


def test_resize_is_bilinear_image_nearest_mask(tmp_path):
    _write_pair(tmp_path / "a.png", tmp_path / "m" / "a.png", 0)
    data = datasets.FolderDataset(tmp_path, tmp_path / "m", size=64)
    raw = torch.from_numpy(np.array(Image.open(tmp_path / "a.png"))).permute(2, 0, 1)[None].float()
    expected = torch.nn.functional.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(data.images("all") * 255, expected.round()[0], atol=1e-3)
    assert set(torch.unique(data.masks("all").int()).tolist()) == {0, 1}


# -- bad input ---------------------------------------------------------------------------------------
def test_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"root=.*nowhere.* does not exist; expected a HAM10000 folder"):
        datasets.HAM10000(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"is not a FIVES folder.*train/Original"):
        datasets.FIVES(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match=r"holds no ISIC_\*\.jpg images"):
        datasets.HAM10000(tmp_path)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"images folder .*img.* holds no image files \(\.png, \.tif"):
        datasets.FolderDataset(tmp_path / "img")
    with pytest.raises(ValueError, match=r"images folder .*img.* holds no files matching '\*\.png'"):
        datasets.FolderDataset(tmp_path / "img", pattern="*.png")


def test_missing_mask_names_the_file(tmp_path):
    names = _ham(tmp_path, range(3))
    (tmp_path / f"{names[1]}_segmentation.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"no mask for image .*{names[1]}\.jpg.*expected .*{names[1]}_segmentation\.png"):
        datasets.HAM10000(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    names = _ham(tmp_path, range(3))
    (tmp_path / f"{names[2]}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=rf"cannot read image file .*{names[2]}\.jpg"):
        datasets.HAM10000(tmp_path)


def test_mask_with_unexpected_values(tmp_path):
    names = _ham(tmp_path, range(2))
    Image.fromarray(np.full((30, 40), 128, np.uint8)).save(tmp_path / f"{names[0]}_segmentation.png")
    with pytest.raises(ValueError, match=rf"mask file .*{names[0]}_segmentation\.png.* has values \[128\]; expected"):
        datasets.HAM10000(tmp_path)


def test_image_mask_size_mismatch(tmp_path):
    _fives(tmp_path)
    _write_pair(tmp_path / "train" / "Original" / "2_D.png", tmp_path / "train" / "Ground truth" / "2_D.png", 0,
                mask_shape=(20, 40))
    with pytest.raises(ValueError, match=r"image .*2_D\.png.* is 30x40 \(HxW\) but its mask .*2_D\.png.* is 20x40"):
        datasets.FIVES(tmp_path)


def test_mixed_sizes_without_resize(tmp_path):
    _write_pair(tmp_path / "a.png", tmp_path / "m" / "a.png", 0)
    _write_pair(tmp_path / "b.png", tmp_path / "m" / "b.png", 1, shape=(20, 20))
    with pytest.raises(ValueError, match=r"image .*b\.png.* has shape .*pass size="):
        datasets.FolderDataset(tmp_path, tmp_path / "m")


def test_skip_policy_warns_and_loads_the_rest(tmp_path):
    names = _ham(tmp_path, range(5))
    (tmp_path / f"{names[0]}.jpg").write_bytes(b"garbage")
    (tmp_path / f"{names[3]}_segmentation.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 2 bad image/mask pair\(s\)") as record:
        data = datasets.HAM10000(tmp_path, size=16, on_error="skip")
    message = str(record[0].message)
    assert names[0] in message and names[3] in message
    assert data.ids("all") == [names[1], names[2], names[4]]
    for name in (names[1], names[2], names[4]):
        (tmp_path / f"{name}.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 5 image/mask pairs"):
        datasets.HAM10000(tmp_path, on_error="skip")
    with pytest.raises(ValueError, match=r"on_error='ignore' is not supported"):
        datasets.HAM10000(tmp_path, on_error="ignore")


# -- RoI lists ----------------------------------------------------------------------------------------
def test_read_roi_list(tmp_path):
    path = tmp_path / "coords.txt"
    path.write_text("# id row col\nISIC_1 72 88\n\n12_A 0 224\n")
    rois = datasets.read_roi_list(path, roi=16)
    assert [r.box for r in rois] == [(72, 88, 16, 16), (0, 224, 16, 16)]
    assert rois[1].image_id == "12_A" and rois[0].slices == (slice(72, 88), slice(88, 104))


def test_read_roi_list_malformed_line(tmp_path):
    path = tmp_path / "coords.txt"
    path.write_text("ISIC_1 72 88\nISIC_2 72\n")
    with pytest.raises(ValueError, match=r"line 2: expected 'image_id row col'.*'ISIC_2 72'"):
        datasets.read_roi_list(path)
    path.write_text("ISIC_1 72 -8\n")
    with pytest.raises(ValueError, match="line 1"):
        datasets.read_roi_list(path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        datasets.read_roi_list(tmp_path / "missing.txt")


# -- the real reference files -----------------------------------------------------------------------
@pytest.mark.requires_reference
@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/data/pdcr_reference is not present")
def test_real_ham10000_image():
    rois = datasets.read_roi_list(REFERENCE / "demo" / "HAM10000_block_coords_p32_b8.txt")
    assert len(rois) == 50 and rois[0].box == (72, 88, 32, 32)
    fives = datasets.read_roi_list(REFERENCE / "demo" / "FIVES_block_coords_p32_b32.txt")
    assert fives[0].image_id == "78_D"
    data = datasets.HAM10000(REFERENCE / "demo", explain_ids=[r.image_id for r in rois])
    assert data.ids("all") == ["ISIC_0033556"]
    assert tuple(data.images("all").shape) == (1, 3, 256, 256)
    mask = data.masks("all")[0]
    assert mask.dtype == torch.bool
    assert 0.03 < float(mask.float().mean()) < 0.6
    # The lesion is darker than the skin.
    brightness = data.images("all")[0].mean(0)
    assert float(brightness[mask].mean()) < float(brightness[~mask].mean())


# -- 16-bit files: one normalisation rule for every image -------------------------------------------
def _ramp(peak: int, shape=(16, 20)) -> np.ndarray:
    return np.linspace(0, peak, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


def _write_16bit_folder(root: Path, peaks: dict[str, int], ext: str) -> dict[str, np.ndarray]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    arrays = {}
    for name, peak in peaks.items():
        arrays[name] = _ramp(peak)
        Image.fromarray(arrays[name]).save(root / "images" / f"{name}{ext}")
        with Image.open(root / "images" / f"{name}{ext}") as written:
            assert written.mode.startswith("I;16")  # really a 16-bit file
        mask = np.zeros(arrays[name].shape, dtype=np.uint8)
        mask[4:10, 5:15] = 255
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return arrays


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_images_keep_their_relative_brightness(tmp_path, ext):
    arrays = _write_16bit_folder(tmp_path, {"dim": 200, "bright": 40000}, ext)
    with pytest.warns(UserWarning, match=r"1 16-bit image file\(s\) .*dim"):  # "dim" peaks at 200 <= 4095
        data = datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", pattern=f"*{ext}",
                                      explain_ids=["dim"])
    images, ids = data.images("all"), data.ids("all")
    assert images.dtype == torch.float32 and images.shape[1] == 1
    for name, array in arrays.items():  # uint16 / 65535, not each image by its own range
        np.testing.assert_allclose(images[ids.index(name), 0].numpy(), array / 65535.0, rtol=0, atol=1e-7)
    dim, bright = (float(images[ids.index(n)].max()) for n in ("dim", "bright"))
    assert dim == pytest.approx(200 / 65535) and bright == pytest.approx(40000 / 65535)
    assert {m["normalize"] for m in data.metadata("all")} == {"uint16 / 65535"}
    assert data.info["normalize"] == "dtype" and "percentiles" not in data.info
    bank = float(data.bank.blocks.max())  # cut from "bright" only, on the same scale (not 1.0)
    assert 0.3 < bank <= 40000 / 65535 + 1e-6


def test_16bit_normalize_can_be_chosen_and_mixes_with_8bit(tmp_path, recwarn):
    _write_16bit_folder(tmp_path, {"dim": 200, "bright": 40000}, ".png")
    for old_name in ("range", "image"):  # "image" is the old name of "range"
        own = datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", normalize=old_name)
        assert [float(own.images("all")[k].max()) for k in range(2)] == [1.0, 1.0]
        assert own.info["normalize"] == "range"
        assert own.metadata("all")[own.ids("all").index("dim")]["normalize"] == "per image: (x - 0) / (200 - 0)"
    fixed = datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", normalize=(0, 50000))
    assert float(fixed.images("all")[fixed.ids("all").index("dim")].max()) == pytest.approx(200 / 50000)
    assert fixed.metadata("all")[0]["normalize"] == "(x - 0) / (50000 - 0)" and fixed.info["normalize"] == [0, 50000]
    with pytest.raises(ValueError, match=r"image file '.*bright.png' has values in \[0, 40000\], outside normalize=\(0, 1000\)"):
        datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", normalize=(0, 1000))
    with pytest.raises(ValueError, match=r"normalize=\(5, 5\) must be 'dtype', 'range', 'percentile' or a \(low, high\) pair"):
        datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", normalize=(5, 5))
    with pytest.raises(ValueError, match=r"normalize='minmax' must be"):
        datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", normalize="minmax")
    assert not [w for w in recwarn.list if w.category is UserWarning]  # the dim warning is for "dtype" only
    # an 8-bit file beside 16-bit ones: each by its own dtype's range, one float32 stack
    Image.fromarray(np.full((16, 20), 255, dtype=np.uint8)).save(tmp_path / "images" / "eight.png")
    Image.open(tmp_path / "masks" / "dim.png").save(tmp_path / "masks" / "eight.png")
    with pytest.warns(UserWarning, match="dim.png"):
        mixed = datasets.FolderDataset(tmp_path / "images", tmp_path / "masks")
        resized = datasets.FolderDataset(tmp_path / "images", tmp_path / "masks", size=8)
    by_id = dict(zip(mixed.ids("all"), mixed.images("all")))
    assert float(by_id["eight"].max()) == 1.0 and float(by_id["dim"].max()) == pytest.approx(200 / 65535)
    assert {m["image"]: m["normalize"] for m in mixed.metadata("all")}["eight.png"] == "uint8 / 255"
    assert float(resized.images("all")[resized.ids("all").index("dim")].max()) <= 200 / 65535 + 1e-7


# -- file discovery ------------------------------------------------------------------------------------
def test_default_pattern_takes_every_image_extension_and_finds_masks_by_stem(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    pixels = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img" / "a.PNG")
    Image.fromarray(pixels).save(tmp_path / "img" / "b.jpeg")
    Image.fromarray(pixels).save(tmp_path / "img" / "c.bmp")
    tifffile.imwrite(tmp_path / "img" / "d.TIF", pixels)
    (tmp_path / "img" / "readme.txt").write_text("not an image")
    (tmp_path / "img" / "._a.png").write_bytes(b"macOS resource fork")
    mask = np.zeros((12, 16), np.uint8)
    mask[2:6, 3:9] = 255
    for stem, ext in zip("abcd", (".png", ".tif", ".TIFF", ".bmp")):
        (tifffile.imwrite if ext.lower().startswith(".tif") else lambda p, m: Image.fromarray(m).save(p))(
            tmp_path / "lbl" / f"{stem}_mask{ext}", mask)
    data = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", mask_suffix="_mask")
    assert data.ids("all") == ["a", "b", "c", "d"] and data.info["pattern"] is None
    assert [m["mask"] for m in data.metadata("all")] == ["a_mask.png", "b_mask.tif", "c_mask.TIFF", "d_mask.bmp"]
    assert all(bool(m[2:6, 3:9].all()) and int(m.sum()) == 24 for m in data.masks("all"))
    # an ambiguous mask names the candidates; an explicit mask_ext chooses
    Image.fromarray(mask).save(tmp_path / "lbl" / "a_mask.bmp")
    with pytest.raises(ValueError, match=r"a\.PNG' has 2 candidate masks \['a_mask.bmp', 'a_mask.png'\]"):
        datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", mask_suffix="_mask")
    only_png = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", pattern="*.PNG", mask_suffix="_mask",
                                      mask_ext=".png")
    assert only_png.ids("all") == ["a"]
    # a missing mask keeps the existing message, with the extension left open
    (tmp_path / "lbl" / "d_mask.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask for image .*d\.TIF.*expected .*d_mask\.\*"):
        datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", pattern="*.TIF", mask_suffix="_mask")


def test_default_pattern_in_one_folder_tells_masks_by_suffix(tmp_path):
    for k in range(2):
        _write_pair(tmp_path / f"case{k}.png", tmp_path / f"case{k}_mask.png", k)
    data = datasets.FolderDataset(tmp_path, mask_suffix="_mask")
    assert data.ids("all") == ["case0", "case1"]
    with pytest.raises(ValueError, match=r"mask_suffix is empty, so masks cannot be told from images"):
        datasets.FolderDataset(tmp_path)
    Image.open(tmp_path / "case0.png").save(tmp_path / "case0.tif")
    with pytest.raises(ValueError, match=r"'case0.png' and 'case0.tif' share the id 'case0'"):
        datasets.FolderDataset(tmp_path, mask_suffix="_mask")
