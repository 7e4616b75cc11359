"""A user's own files: 8/16-bit PNG and TIFF, normalisation, label masks, tiling, read_pair, bank_from_folder."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from pdcr_lab import datasets
from pdcr_lab.datasets._io import read_pixels, read_scaled


# -- writing files ---------------------------------------------------------------------------------
def _write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (grey + alpha, RGB or RGBA by channel count) using the five row filters in turn.

    Pillow cannot write these; the filters are applied here as the PNG specification defines them.
    """
    h, w, c = pixels.shape
    raw = pixels.astype(">u2").view(np.uint8).reshape(h, w, 2 * c).astype(np.int32)
    a, b, up_left = (np.zeros_like(raw) for _ in range(3))
    a[:, 1:], b[1:], up_left[1:, 1:] = raw[:, :-1], raw[:-1], raw[:-1, :-1]
    pa, pb, pc = abs(b - up_left), abs(a - up_left), abs(a + b - 2 * up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, up_left))
    predictions = [0 * raw, a, b, (a + b) // 2, paeth]
    rows = b"".join(bytes([y % 5]) + ((raw[y] - predictions[y % 5][y]) & 0xFF).astype(np.uint8).tobytes()
                    for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _write(path: Path, pixels: np.ndarray) -> None:
    """(H, W, C) or (H, W) pixels to PNG (Pillow, or the 16-bit colour writer above) or TIFF."""
    if path.suffix == ".tif":
        tifffile.imwrite(path, pixels)
    elif pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[-1] > 1:
        _write_png16(path, pixels)
    else:
        Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels).save(path)


def _nuclei(shape=(64, 64), peak=4095, dtype=np.uint16, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image of a few bright discs and its instance-label mask (1, 2, 3, ...)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = rng.integers(0, peak // 20, shape).astype(np.float64)
    labels = np.zeros(shape, dtype)
    for k, (y, x) in enumerate(rng.integers(8, min(shape) - 8, (3, 2)), start=1):
        disc = (yy - y) ** 2 + (xx - x) ** 2 < 36
        labels[disc] = k * 100
        image[disc] = peak * 0.8
    image[0, 0] = peak
    return image.astype(dtype), labels


# -- readers: the same pixels whatever the format ------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_and_tiff_read_identically(tmp_path, dtype, channels):
    top = np.iinfo(dtype).max
    pixels = np.random.default_rng(channels).integers(0, top, (9, 13, channels), dtype=dtype, endpoint=True)
    _write(tmp_path / "a.png", pixels)
    _write(tmp_path / "a.tif", pixels)
    png, tif = read_pixels(tmp_path / "a.png"), read_pixels(tmp_path / "a.tif")
    assert png.dtype == tif.dtype == dtype and png.shape == tif.shape == (9, 13, channels)
    np.testing.assert_array_equal(png, pixels)
    np.testing.assert_array_equal(tif, pixels)
    (png_scaled, png_note), (tif_scaled, tif_note) = read_scaled(tmp_path / "a.png"), read_scaled(tmp_path / "a.tif")
    np.testing.assert_array_equal(png_scaled, tif_scaled)
    assert png_note == tif_note == f"{np.dtype(dtype).name} / {top}"


def test_16bit_colour_png_every_filter_and_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 65536, (11, 7, 4), dtype=np.uint16)
    _write_png16(tmp_path / "rgba.png", rgba)
    _write_png16(tmp_path / "la.png", rgba[..., :2])
    np.testing.assert_array_equal(read_pixels(tmp_path / "rgba.png"), rgba[..., :3])  # alpha dropped
    np.testing.assert_array_equal(read_pixels(tmp_path / "la.png"), rgba[..., :1])
    with Image.open(tmp_path / "rgba.png") as im:  # why the reader exists: Pillow keeps 8 bits only
        assert np.asarray(im).dtype == np.uint8


def test_tiff_layouts(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 65536, (3, 10, 12), dtype=np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile notes that it stores (3, H, W) as planar RGB
        tifffile.imwrite(tmp_path / "planar.tif", rgb)
    np.testing.assert_array_equal(read_pixels(tmp_path / "planar.tif"), rgb.transpose(1, 2, 0))
    tifffile.imwrite(tmp_path / "two.tif", rgb[:2])  # two pages, read as channels-first
    assert read_pixels(tmp_path / "two.tif").shape == (10, 12, 2)
    tifffile.imwrite(tmp_path / "rgba.tif", np.zeros((10, 12, 4), np.uint8))
    assert read_pixels(tmp_path / "rgba.tif").shape == (10, 12, 3)
    tifffile.imwrite(tmp_path / "float.tif", np.full((10, 12), 0.25, np.float32))
    image, note = read_scaled(tmp_path / "float.tif")
    assert image.dtype == np.float32 and float(image.max()) == 0.25 and note == "none (floats in [0, 1])"
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 10, 12), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(ValueError, match=r"cannot read image file '.*stack\.tif': .*shape \(3, 10, 12\).*ZYX.*stack"):
        read_pixels(tmp_path / "stack.tif")
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((9, 10, 12), np.uint8))
    with pytest.raises(ValueError, match=r"pages\.tif': its pixels have shape \(9, 10, 12\)"):
        read_pixels(tmp_path / "pages.tif")


def test_palette_and_rgba_png_become_rgb(tmp_path):
    palette = Image.new("P", (5, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "p.png")
    assert read_pixels(tmp_path / "p.png")[0, 0].tolist() == [200, 100, 50]
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    assert read_pixels(tmp_path / "rgba.png").shape == (4, 5, 3)
    with pytest.raises(FileNotFoundError, match=r"image file '.*nothing\.png' does not exist"):
        read_pixels(tmp_path / "nothing.png")


# -- normalisation ----------------------------------------------------------------------------------
def test_normalize_modes(tmp_path):
    image, labels = _nuclei(peak=4095)
    _write(tmp_path / "cell.tif", image)
    with pytest.warns(UserWarning, match=r"1 16-bit image file\(s\) .*cell\.tif.*normalize='percentile'.*\(0, 4095\)"):
        dim, note = read_scaled(tmp_path / "cell.tif")
    assert float(dim.max()) == pytest.approx(4095 / 65535) and note == "uint16 / 65535"
    ranged, note = read_scaled(tmp_path / "cell.tif", "range")
    assert float(ranged.min()) == 0.0 and float(ranged.max()) == 1.0 and note.startswith("per image: (x - 0)")
    fixed, note = read_scaled(tmp_path / "cell.tif", (0, 4095))
    np.testing.assert_allclose(fixed[..., 0], image / 4095, atol=1e-6)
    low, high = np.percentile(image, (1.0, 99.8))
    spread, note = read_scaled(tmp_path / "cell.tif", "percentile")
    np.testing.assert_allclose(spread[..., 0], np.clip((image - low) / (high - low), 0, 1), atol=1e-6)
    assert note == f"per image: percentiles (1, 99.8) = ({low:g}, {high:g}) -> 0..1, clipped"
    narrow, _ = read_scaled(tmp_path / "cell.tif", "percentile", (0, 50))
    assert float((narrow == 1).mean()) >= 0.5  # the upper half clipped to 1
    with pytest.raises(ValueError, match=r"percentiles=\(50, 5\) must be a \(low, high\) pair with 0 <= low < high"):
        read_scaled(tmp_path / "cell.tif", "percentile", (50, 5))


def test_folder_percentile_and_one_warning_per_load(tmp_path):
    (tmp_path / "img").mkdir()
    for k in range(3):
        image, labels = _nuclei(peak=4095, seed=k)
        _write(tmp_path / "img" / f"cell{k}.tif", image)
        _write(tmp_path / "img" / f"cell{k}_mask.tif", labels)
    with pytest.warns(UserWarning) as record:
        data = datasets.FolderDataset(tmp_path / "img", mask_suffix="_mask", binarize=True)
    messages = [str(w.message) for w in record if "16-bit" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("3 16-bit image file(s)") and "cell2.tif" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning once a rule for the range is chosen
        spread = datasets.FolderDataset(tmp_path / "img", mask_suffix="_mask", binarize=True, normalize="percentile",
                                        percentiles=(0.5, 99.5))
    assert spread.info["normalize"] == "percentile" and spread.info["percentiles"] == [0.5, 99.5]
    assert spread.metadata("all")[0]["normalize"].startswith("per image: percentiles (0.5, 99.5)")
    assert float(spread.images("all").max()) == 1.0 > float(data.images("all").max())


# -- label masks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_binarize_instance_labels(tmp_path, ext):
    image, labels = _nuclei()
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    _write(tmp_path / "img" / "cell.tif", image)
    _write(tmp_path / "lbl" / f"cell{ext}", labels)
    with pytest.raises(ValueError, match=r"mask file .*cell\..*has values \[0, 100, 200, 300\]; expected a binary "
                                         r"mask with values 0/1 or 0/255; pass binarize=True to treat every non-zero "
                                         r"label as foreground$"):
        datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", normalize="range")
    data = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", normalize="range", binarize=True)
    np.testing.assert_array_equal(data.masks("all")[0].numpy(), labels > 0)
    assert data.info["binarize"] is True


def test_binarize_other_label_types(tmp_path):
    labels = np.array([[0, 3, 0], [70000, 0, 1]], np.int32)
    tifffile.imwrite(tmp_path / "int32.tif", labels)
    np.testing.assert_array_equal(datasets.read_mask(tmp_path / "int32.tif", binarize=True), labels > 0)
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    assert datasets.read_mask(tmp_path / "rgb.png").tolist() == datasets.read_mask(tmp_path / "rgb.png", True).tolist()
    Image.fromarray(np.array([[[0, 0, 0], [9, 0, 0]]], np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match=r"differing channels; expected a binary mask; pass binarize=True"):
        datasets.read_mask(tmp_path / "colour.png")
    assert datasets.read_mask(tmp_path / "colour.png", binarize=True).tolist() == [[False, True]]


# -- tiling -------------------------------------------------------------------------------------------
def _tiled_folder(root: Path, names: list[str], side: int = 512) -> None:
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir()
    for k, name in enumerate(names):
        image, labels = _nuclei((side, side), peak=60000, seed=k)
        _write(root / "img" / f"{name}.tif", image)
        _write(root / "lbl" / f"{name}.png", labels)


def test_tiling_covers_the_image_with_ids_and_metadata(tmp_path):
    _tiled_folder(tmp_path, ["cell"])
    data = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=200, stride=150)
    offsets = [0, 150, 300, 312]  # the last window is flush with the border
    assert data.ids("all") == [f"cell_r{r}_c{c}" for r in offsets for c in offsets]
    assert tuple(data.images("all").shape) == (16, 1, 200, 200)
    assert data.info["tile"] == 200 and data.info["stride"] == 150
    image = tifffile.imread(tmp_path / "img" / "cell.tif") / 65535
    with Image.open(tmp_path / "lbl" / "cell.png") as written:
        labels = np.asarray(written) > 0
    seen = np.zeros((512, 512), bool)
    for tile, mask, meta in zip(data.images("all"), data.masks("all"), data.metadata("all")):
        r, c = meta["tile_row"], meta["tile_col"]
        assert (meta["source"], meta["tile"], meta["stride"], meta["image"]) == ("cell", 200, 150, "cell.tif")
        np.testing.assert_allclose(tile[0].numpy(), image[r : r + 200, c : c + 200], atol=1e-6)
        np.testing.assert_array_equal(mask.numpy(), labels[r : r + 200, c : c + 200])
        seen[r : r + 200, c : c + 200] = True
    assert seen.all()
    resized = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=256, size=64)
    assert tuple(resized.images("all").shape) == (4, 1, 64, 64) and resized.info["size"] == 64
    with pytest.raises(ValueError, match=r"stride=300 is larger than tile=256"):
        datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=256, stride=300)
    with pytest.raises(ValueError, match=r"image .*cell\.tif' is 512x512 \(HxW\), smaller than tile=600"):
        datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=600)


def test_tiling_splits_by_source_and_keeps_explained_images_out_of_the_bank(tmp_path):
    names = [f"cell{k}" for k in range(8)]
    _tiled_folder(tmp_path, names, side=64)
    data = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=32, stride=16,
                                  split_seed=0, explain_ids=["cell3", "cell5_r16_c32"])
    sources = {s: {m["source"] for m in data.metadata(s)} for s in data.splits}
    assert sum(map(len, sources.values())) == len(set().union(*sources.values())) == 8  # no image in two splits
    assert {"cell3", "cell5"} <= sources["test"]
    assert all(len(data.ids(s)) == 9 * len(sources[s]) for s in data.splits)
    assert {i.rsplit("_r", 1)[0] for i in data.bank.provenance["sources"]} == sources["train"]
    eighty = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=32, split_seed=0,
                                    split_fractions=(0.75, 0.25, 0))
    assert [len(eighty.ids(s)) // 4 for s in eighty.splits] == [6, 2, 0]
    assert eighty.info["split_fractions"] == [0.75, 0.25, 0]
    with pytest.raises(ValueError, match=r"split_fractions=\(0.5, 0.2\) must be three numbers"):
        datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, split_seed=0,
                               split_fractions=(0.5, 0.2))
    # without a split, every tile of an explained image (named by source or by one tile) stays out
    flat = datasets.FolderDataset(tmp_path / "img", tmp_path / "lbl", binarize=True, tile=32, stride=16,
                                  explain_ids=["cell3", "cell5_r16_c32"])
    used = {i.rsplit("_r", 1)[0] for i in flat.bank.provenance["sources"]}
    assert used == set(names) - {"cell3", "cell5"} and len(flat.bank.provenance["sources"]) == 6 * 9


def test_small_images_are_skipped_and_a_2048_image_is_tiled(tmp_path):
    (tmp_path / "img").mkdir()
    ramp = np.arange(2048, dtype=np.uint16)[:, None] * 16 + np.arange(2048, dtype=np.uint16)[None, :]
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "img" / "big.png")
    Image.fromarray(((ramp % 7) == 0).astype(np.uint8)).save(tmp_path / "img" / "big_mask.png")
    Image.new("L", (100, 80)).save(tmp_path / "img" / "small.png")
    Image.new("L", (100, 80)).save(tmp_path / "img" / "small_mask.png")
    with pytest.warns(UserWarning, match=r"skipped 1 bad image/mask pair\(s\):\n  image .*small\.png' is 80x100"):
        data = datasets.FolderDataset(tmp_path / "img", mask_suffix="_mask", tile=512, on_error="skip")
    assert len(data.ids("all")) == 16 and data.ids("all")[-1] == "big_r1536_c1536"
    assert data.images("all").dtype == torch.float32 and tuple(data.images("all").shape[1:]) == (1, 512, 512)


# -- read_pair and bank_from_folder ----------------------------------------------------------------------
def test_read_pair(tmp_path):
    image, labels = _nuclei(peak=4095)
    _write(tmp_path / "cell.tif", image)
    _write(tmp_path / "labels.png", labels)
    own = datasets.read_pair(tmp_path / "cell.tif", tmp_path / "labels.png", normalize="percentile", binarize=True)
    assert isinstance(own, datasets.OwnImage)
    assert own.image.dtype == torch.float32 and tuple(own.image.shape) == (1, 64, 64)
    assert float(own.image.min()) == 0.0 and float(own.image.max()) == 1.0
    assert own.mask.dtype == torch.bool and torch.equal(own.mask, torch.from_numpy(labels > 0))
    assert own.info == {"image": "cell.tif", "mask": "labels.png", "normalize": own.info["normalize"],
                        "binarize": True, "shape": [64, 64, 1], "dtype": "uint16", "size": None, "resample": "torch"}
    small = datasets.read_pair(tmp_path / "cell.tif", normalize=(0, 4095), size=32)
    assert small.mask is None and tuple(small.image.shape) == (1, 32, 32)
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "colour.png")
    rgb = datasets.read_pair(tmp_path / "colour.png")
    assert rgb.image.dtype == torch.float32 and rgb.image[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"mask file '.*labels\.png' has values .*pass binarize=True"):
        datasets.read_pair(tmp_path / "cell.tif", tmp_path / "labels.png", normalize="range")
    with pytest.raises(ValueError, match=r"image '.*cell\.tif' is 64x64 \(HxW\) but its mask '.*colour\.png' is 6x8"):
        datasets.read_pair(tmp_path / "cell.tif", tmp_path / "colour.png", normalize="range", binarize=True)
    with pytest.raises(FileNotFoundError, match=r"image file '.*missing\.tif' does not exist"):
        datasets.read_pair(tmp_path / "missing.tif")


def test_bank_from_folder_excludes_by_path_and_by_content(tmp_path):
    folder = tmp_path / "others"
    folder.mkdir()
    for k in range(4):
        _write(folder / f"cell{k}.tif", _nuclei(peak=60000, seed=k)[0])
    explained = folder / "cell0.tif"
    copy = _nuclei(peak=60000, seed=1)[0]
    _write(tmp_path / "explained_elsewhere.png", copy)  # the same pixels as cell1.tif, in another format
    bank = datasets.bank_from_folder(folder, block=8, exclude=[explained, tmp_path / "explained_elsewhere.png"],
                                     per_image=5, seed=3, normalize="percentile")
    assert bank.provenance["sources"] == ["cell2", "cell3"] and bank.provenance["excluded"] == ["cell0", "cell1"]
    assert bank.provenance["folder"] == "others" and bank.provenance["normalize"] == "percentile"
    assert bank.provenance["seed"] == 3 and bank.provenance["percentiles"] == [1.0, 99.8]
    assert len(bank) == 10 and bank.block == 8 and bank.channels == 1
    resized = datasets.bank_from_folder(folder, block=16, size=32, per_image=2, normalize="range")
    assert resized.provenance["sources"] == [f"cell{k}" for k in range(4)] and resized.provenance["size"] == 32
    with pytest.raises(ValueError, match=r"block=12 does not tile image '.*cell0\.tif' of size 64x64"):
        datasets.bank_from_folder(folder, block=12, normalize="range")
    with pytest.raises(ValueError, match=r"folder '.*others' has no images left for a patch bank after leaving out 4"):
        datasets.bank_from_folder(folder, block=8, exclude=sorted(folder.iterdir()), normalize="range")
