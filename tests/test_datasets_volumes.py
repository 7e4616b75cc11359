"""Embedded volumetric datasets (brain3d, vessels3d): shapes, disjoint splits, determinism, masks, banks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from pdcr_lab import datasets
from pdcr_lab.banks import PatchBank
from pdcr_lab.datasets import _registry
from pdcr_lab.datasets._data import bank_block_3d

SMALL = 16  # tests load the volumes at 16 voxels a side (the working size is 32)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One cache per test session, never the user's ~/.cache.
    monkeypatch.setenv("PDCR_LAB_CACHE", str(tmp_path_factory.getbasetemp() / "pdcr_cache_volumes"))


@pytest.fixture(scope="module")
def brain3d():
    return datasets.load("brain3d", cache=False)  # the working size, 32


@pytest.fixture(scope="module")
def vessels3d():
    return datasets.load("vessels3d", size=SMALL, seed=1, cache=False)


def _check_arrays(data, size):
    assert data.splits == ("train", "val", "test")
    for split in data.splits:
        images, masks = data.images(split), data.masks(split)
        n = len(data.ids(split))
        assert images.dtype == torch.float32 and tuple(images.shape) == (n, 1, size, size, size)
        assert masks.dtype == torch.bool and tuple(masks.shape) == (n, size, size, size)
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        assert len(data.metadata(split)) == n
    ids = [data.ids(s) for s in data.splits]
    assert len(set().union(*ids)) == sum(map(len, ids)) == len(data)  # unique and disjoint
    assert data.info["ndim"] == 3 and data.info["size"] == size and data.info["channels"] == 1
    assert data.info["splits"] == {s: len(data.ids(s)) for s in data.splits}


def test_list_datasets_and_ndim():
    assert {"brain3d", "vessels3d"} <= set(datasets.list_datasets())
    assert datasets.list_datasets(ndim=3) == ["brain3d", "vessels3d"]
    assert set(datasets.list_datasets(ndim=2)) == {"lesions", "vessels", "brain", "cues", "cues_global", "cues_sequential"}
    assert datasets.load("lesions", size=32).info["ndim"] == 2
    with pytest.raises(ValueError, match=r"ndim=4 is not supported"):
        datasets.list_datasets(ndim=4)


def test_brain3d_shapes_and_split_sizes(brain3d):
    _check_arrays(brain3d, 32)
    sizes = brain3d.info["splits"]
    assert sizes["train"] >= 60 and sizes["val"] >= 10 and sizes["test"] >= 12
    assert "one averaged brain" in brain3d.info["description"].lower()
    assert repr(brain3d) == f"SegmentationData('brain3d': train={sizes['train']}, val={sizes['val']}, " \
                            f"test={sizes['test']}, images 1x32x32x32)"


def test_brain3d_splits_are_disjoint_regions(brain3d):
    owner = np.full((99, 117, 95), "", dtype=object)  # the 2 mm template grid
    for split in brain3d.splits:
        covered = np.zeros(owner.shape, dtype=bool)
        for meta in brain3d.metadata(split):
            x, y, z = meta["origin_xyz"]
            side = meta["side_voxels"]
            covered[x : x + side, y : y + side, z : z + side] = True
        assert not (owner[covered] != "").any(), f"{split} shares template voxels with another split"
        owner[covered] = split


def test_brain3d_cubes_are_template_crops(brain3d):
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=2).get_fdata()
    template = np.clip(template, 0, None) / template.max()
    meta, cube = brain3d.metadata("test")[3], brain3d.images("test")[3, 0].numpy()
    x, y, z = meta["origin_xyz"]
    crop = template[x : x + 32, y : y + 32, z : z + 32]
    # Axes (depth, height, width) = (z up, y anterior first, x left to right).
    assert np.abs(crop.transpose(2, 1, 0)[:, ::-1, :] - cube).max() <= 0.5 / 255 + 1e-6


def test_brain3d_masks(brain3d):
    fractions = brain3d.masks("train").float().mean(dim=(1, 2, 3))
    assert bool((fractions > 0.05).all()) and bool((fractions < 0.7).all())
    # Grey matter is brain: the masked voxels are not background.
    images, masks = brain3d.images("train")[:, 0], brain3d.masks("train")
    assert float(images[masks].min()) > 0.05


def test_brain3d_resampled_keeps_the_splits(brain3d):
    small = datasets.load("brain3d", size=SMALL, cache=False)
    _check_arrays(small, SMALL)
    assert all(small.ids(s) == brain3d.ids(s) for s in brain3d.splits)


def test_vessels3d_shapes_and_masks(vessels3d):
    _check_arrays(vessels3d, SMALL)
    assert vessels3d.info["splits"] == {"train": 160, "val": 24, "test": 24}
    masks = vessels3d.masks("test").numpy()
    fractions = masks.mean(axis=(1, 2, 3))
    assert bool((fractions > 0.005).all()) and 0.01 < float(np.median(fractions)) < 0.15
    for mask, meta in zip(masks, vessels3d.metadata("test")):
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() >= 0.95 * mask.sum()  # one tree
        # ... connected to its source: the main component touches the entry face.
        axis = "zyx".index(meta["entry_face"][0])
        face = np.take(labels, 0 if meta["entry_face"][1] == "-" else -1, axis=axis)
        assert (face == 1 + sizes.argmax()).any()


def test_vessels3d_vessels_are_brighter(vessels3d):
    images, masks = vessels3d.images("train")[:, 0], vessels3d.masks("train")
    inside = (images * masks).sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))
    outside = (images * ~masks).sum(dim=(1, 2, 3)) / (~masks).sum(dim=(1, 2, 3))
    assert bool((inside > outside + 0.1).all())


def test_vessels3d_determinism(vessels3d):
    other = datasets.load("vessels3d", size=SMALL, seed=2, cache=False)
    again = datasets.load("vessels3d", size=SMALL, seed=1)  # generated again, and written
    cached = datasets.load("vessels3d", size=SMALL, seed=1)  # read back
    for split in vessels3d.splits:
        for copy in (again, cached):
            assert torch.equal(vessels3d.images(split), copy.images(split))
            assert torch.equal(vessels3d.masks(split), copy.masks(split))
            assert vessels3d.metadata(split) == copy.metadata(split)
    assert not torch.equal(vessels3d.images("test"), other.images("test"))
    assert not torch.equal(vessels3d.masks("test"), other.masks("test"))
    files = sorted(p.name for p in datasets.cache_dir().iterdir())
    assert f"vessels3d-v{cached.info['version']}-size{SMALL}-seed1.npz" in files


def test_default_size_is_the_sets_working_size(brain3d, monkeypatch):
    assert brain3d.info["size"] == 32  # loaded without a size
    asked = []

    def make(size, seed):  # a stand-in generator: only the size it is asked for matters here
        asked.append(size)
        return {"images": np.zeros((3, 1, size, size, size), np.uint8), "masks": np.zeros((3, size, size, size), bool),
                "ids": ["a", "b", "c"], "meta": [{}, {}, {}]}

    for name, size in (("vessels3d", 32), ("vessels", 96)):
        monkeypatch.setitem(_registry._SPECS, name, dataclasses.replace(_registry._SPECS[name], make=make))
        datasets.load(name, cache=False)
        assert asked[-1] == size


def test_bank_block_3d():
    assert bank_block_3d(32, 32, 32) == 4 and bank_block_3d(16, 16, 16) == 2
    assert bank_block_3d(48, 48, 48) == 6 and bank_block_3d(36, 32, 32) == 4


@pytest.mark.parametrize("name", ["brain3d", "vessels3d"])
def test_bank_of_cubes_from_train_only(name, brain3d, vessels3d):
    data = {"brain3d": brain3d, "vessels3d": vessels3d}[name]
    bank = data.bank
    size = data.info["size"]
    block = bank_block_3d(size, size, size)
    assert isinstance(bank, PatchBank) and bank.block == block and bank.channels == 1
    assert tuple(bank.blocks.shape[1:]) == (1, block, block, block)
    sources = set(bank.provenance["sources"])
    assert sources == set(data.ids("train"))
    assert bank.provenance["dataset"] == name and bank.provenance["split"] == "train"
    assert data.bank is bank


def test_bad_name_lists_the_names():
    with pytest.raises(ValueError, match=r"name='brain_3d' is not supported; expected one of .*'brain3d', 'vessels3d'"):
        datasets.load("brain_3d")
