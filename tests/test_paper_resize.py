"""Resizing like the PdCR authors (Pillow) for the paper loaders, the old torch rule for user folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pdcr_lab import datasets
from pdcr_lab.datasets._io import read_image, read_mask, resize_pair

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdcr_reference"
requires_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/data/pdcr_reference is not present")
BILINEAR, NEAREST = Image.Resampling.BILINEAR, Image.Resampling.NEAREST


def _pil(array: np.ndarray, size: int, method: int) -> np.ndarray:
    """What the authors' code does: one Pillow resize of the whole array."""
    return np.asarray(Image.fromarray(array).resize((size, size), method))


def _rgb(seed: int, shape=(45, 60)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _blob(shape=(45, 60)) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (y - shape[0] / 2) ** 2 / 200 + (x - shape[1] / 3) ** 2 / 90 < 1


# -- synthetic ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 32, 100])  # shrinking by about 3x and 1.5x, and enlarging
def test_pil_matches_pillow_exactly(size):
    image, mask = _rgb(0), _blob()
    resized, small = resize_pair(image, mask, size, resample="pil")
    assert resized.dtype == np.uint8 and resized.shape == (3, size, size)
    np.testing.assert_array_equal(resized, _pil(image, size, BILINEAR).transpose(2, 0, 1))
    np.testing.assert_array_equal(small, _pil(mask.astype(np.uint8) * 255, size, NEAREST) > 127)
    assert small.dtype == bool


def test_pil_float_matches_pillow_mode_f_exactly():
    image = np.random.default_rng(1).random((45, 60, 2), dtype=np.float32)
    resized, _ = resize_pair(image, None, 20, resample="pil")
    expected = np.stack([_pil(image[..., c], 20, BILINEAR) for c in range(2)])
    assert resized.dtype == np.float32
    np.testing.assert_array_equal(resized, np.clip(expected, 0, 1))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_torch_is_the_old_rule(dtype):
    image = _rgb(2) if dtype == np.uint8 else np.random.default_rng(2).random((45, 60, 3), dtype=np.float32)
    mask = _blob()
    chw = torch.from_numpy(image.transpose(2, 0, 1).copy())[None].float()
    bilinear = F.interpolate(chw, size=(24, 24), mode="bilinear", align_corners=False)[0]
    expected = bilinear.round().clamp(0, 255).to(torch.uint8) if dtype == np.uint8 else bilinear.clamp(0, 1)
    nearest = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(24, 24), mode="nearest")[0, 0] > 0.5
    for resized, small in (resize_pair(image, mask, 24), resize_pair(image, mask, 24, resample="torch")):
        np.testing.assert_array_equal(resized, expected.numpy())
        np.testing.assert_array_equal(small, nearest.numpy())


def test_bad_resample_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"resample='bicubic' is not supported; expected one of \['pil', 'torch'\]"):
        resize_pair(_rgb(0), None, None, resample="bicubic")  # checked even when nothing is resized
    Image.fromarray(_rgb(0)).save(tmp_path / "ISIC_0000001.jpg")
    Image.fromarray(_blob().astype(np.uint8) * 255).save(tmp_path / "ISIC_0000001_segmentation.png")
    with pytest.raises(ValueError, match="resample='PIL' is not supported"):
        datasets.FolderDataset(tmp_path, pattern="*.jpg", mask_suffix="_segmentation", resample="PIL")
    with pytest.raises(ValueError, match="resample='antialias' is not supported"):
        datasets.HAM10000(tmp_path, resample="antialias")


def test_pil_antialiases_where_torch_aliases():
    # Lit every third diagonal: a pattern finer than the 4x-smaller grid can hold, so a correct
    # shrink gives its mean everywhere. (Period 2 would not tell: torch's half-pixel bilinear at an
    # even factor averages two neighbours, which for period 2 hits the mean by luck.)
    y, x = np.mgrid[:64, :64]
    image = (((x + y) % 3 == 0) * 255).astype(np.uint8)[..., None]
    mean = float(image.mean())  # 85
    pil = resize_pair(image, None, 16, resample="pil")[0].astype(float)
    torch_rule = resize_pair(image, None, 16, resample="torch")[0].astype(float)
    assert np.abs(pil - mean).max() <= 1.5
    assert np.abs(torch_rule - mean).max() > 40  # samples two pixels of 255, 0 or a mix: 64..128


# -- the loaders ----------------------------------------------------------------------------------------
def test_paper_loaders_use_pil_and_folders_keep_torch(tmp_path):
    mask = _blob()
    jpeg = tmp_path / "ham" / "ISIC_0000001.jpg"
    fives = tmp_path / "fives" / "train"
    for folder in (jpeg.parent, fives / "Original", fives / "Ground truth"):
        folder.mkdir(parents=True)
    Image.fromarray(_rgb(3)).save(jpeg)
    with Image.open(jpeg) as im:
        image = np.array(im)  # the JPEG as decoded: what both loaders get (FIVES from a lossless copy)
    Image.fromarray(image).save(fives / "Original" / "1_A.png")
    for path in (jpeg.with_name("ISIC_0000001_segmentation.png"), fives / "Ground truth" / "1_A.png"):
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    pil, pil_mask = resize_pair(image, mask, 32, "pil")
    old, old_mask = resize_pair(image, mask, 32, "torch")
    assert (pil != old).any() and (pil_mask != old_mask).any()  # the two rules do differ here

    for data in (datasets.HAM10000(tmp_path / "ham", size=32), datasets.FIVES(tmp_path / "fives", size=32)):
        split = data.splits[0]
        assert data.info["resample"] == "pil"
        np.testing.assert_array_equal(data.arrays[split][0][0].numpy(), pil)
        np.testing.assert_array_equal(data.masks(split)[0].numpy(), pil_mask)
    asked = datasets.HAM10000(tmp_path / "ham", size=32, resample="torch")
    np.testing.assert_array_equal(asked.arrays["all"][0][0].numpy(), old)

    folder = datasets.FolderDataset(tmp_path / "ham", pattern="*.jpg", mask_suffix="_segmentation", size=32)
    assert folder.info["resample"] == "torch"
    np.testing.assert_array_equal(folder.arrays["all"][0][0].numpy(), old)
    np.testing.assert_array_equal(folder.masks("all")[0].numpy(), old_mask)
    tiled = datasets.FolderDataset(tmp_path / "ham", pattern="*.jpg", mask_suffix="_segmentation", size=16,
                                   tile=40, stride=20, resample="pil")
    assert tiled.info["resample"] == "pil"
    np.testing.assert_array_equal(tiled.arrays["all"][0][0].numpy(), resize_pair(image[:40, :40], None, 16, "pil")[0])


# -- the real reference image ---------------------------------------------------------------------------
@requires_reference
def test_isic_0033556_matches_the_authors_inputs():
    demo = REFERENCE / "demo"
    jpeg, png = demo / "ISIC_0033556.jpg", demo / "ISIC_0033556_segmentation.png"
    # The authors' inputs as issue 17 reads their code: Image.open(...).convert("RGB").resize((256, 256),
    # BILINEAR), and the mask (0/255) resized with NEAREST.
    with Image.open(jpeg) as im:
        authors = np.array(im.convert("RGB").resize((256, 256), BILINEAR)).transpose(2, 0, 1)
    with Image.open(png) as im:
        authors_mask = np.asarray(im.convert("L").resize((256, 256), NEAREST)) > 127
    rois = datasets.read_roi_list(demo / "HAM10000_block_coords_p32_b8.txt")
    row, col, height, width = next(r.box for r in rois if r.image_id == "ISIC_0033556")  # (72, 88, 32, 32)
    in_roi = np.zeros((256, 256), dtype=bool)
    in_roi[row : row + height, col : col + width] = True

    data = datasets.HAM10000(demo, explain_ids=["ISIC_0033556"])
    assert data.ids("all") == ["ISIC_0033556"] and data.info["resample"] == "pil"
    np.testing.assert_array_equal(data.arrays["all"][0][0].numpy(), authors)
    np.testing.assert_array_equal(data.masks("all")[0].numpy(), authors_mask)
    assert torch.equal(data.images("all")[0], torch.from_numpy(authors).float() / 255)  # what ToTensor gives

    # The old rule, for the record (measured: 17.9% of image values off by > 2/255, at most 41/255;
    # 155 mask pixels differ, 33 of them inside the paper's RoI).
    old, old_mask = resize_pair(read_image(jpeg), read_mask(png), 256, resample="torch")
    off = np.abs(old.astype(int) - authors.astype(int))
    changed = old_mask != authors_mask
    measured = (f"torch vs authors: {(off > 2).mean():.1%} of image values off by > 2/255 (max {off.max()}/255), "
                f"{changed.sum()} mask pixels differ, {(changed & in_roi).sum()} inside the RoI")
    assert 0.17 < (off > 2).mean() < 0.19 and changed.sum() == 155 and (changed & in_roi).sum() == 33, measured
