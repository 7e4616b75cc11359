"""Embedded datasets: shapes, determinism, splits, banks, cache, and mask plausibility."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from pdcr_lab import datasets
from pdcr_lab.banks import PatchBank


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One cache per test session, never the user's ~/.cache.
    monkeypatch.setenv("PDCR_LAB_CACHE", str(tmp_path_factory.getbasetemp() / "pdcr_cache"))


def test_list_datasets():
    assert {"lesions", "vessels", "brain"} <= set(datasets.list_datasets())


@pytest.mark.parametrize("name", ["lesions", "vessels"])
def test_generated_shapes_and_splits(name):
    data = datasets.load(name, size=32)
    assert isinstance(data, datasets.SegmentationData)
    assert data.name == name and data.splits == ("train", "val", "test")
    sizes = {s: len(data.images(s)) for s in data.splits}
    assert sizes == {"train": 320, "val": 48, "test": 48} == data.info["splits"]
    images, masks = data.images("test"), data.masks("test")
    assert images.dtype == torch.float32 and tuple(images.shape) == (48, 3, 32, 32)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert masks.dtype == torch.bool and tuple(masks.shape) == (48, 32, 32)
    assert len(data.ids("test")) == len(data.metadata("test")) == 48
    ids = [set(data.ids(s)) for s in data.splits]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 416  # disjoint, unique
    assert data.info["size"] == 32 and data.info["seed"] == 0 and data.info["version"] >= 1


@pytest.mark.parametrize("name", ["lesions", "vessels"])
def test_generated_determinism(name):
    a = datasets.load(name, size=32, seed=3, cache=False)
    b = datasets.load(name, size=32, seed=3, cache=False)
    c = datasets.load(name, size=32, seed=4, cache=False)
    cached = datasets.load(name, size=32, seed=3)  # written then read back
    for split in a.splits:
        assert torch.equal(a.images(split), b.images(split))
        assert torch.equal(a.masks(split), b.masks(split))
        assert torch.equal(a.images(split), cached.images(split))
        assert torch.equal(a.masks(split), cached.masks(split))
        assert a.metadata(split) == cached.metadata(split)
    assert not torch.equal(a.images("test"), c.images("test"))


@pytest.mark.parametrize("name", ["lesions", "vessels", "brain"])
def test_bank_from_train_only(name):
    data = datasets.load(name, size=48)
    bank = data.bank
    assert isinstance(bank, PatchBank)
    assert bank.block == 4 and bank.channels == data.images("test").shape[1]
    sources = set(bank.provenance["sources"])
    assert sources == set(data.ids("train"))
    assert not sources & (set(data.ids("test")) | set(data.ids("val")))
    assert bank.provenance["seed"] == 0 and bank.provenance["dataset"] == name
    assert data.bank is bank  # built once


def test_lesion_masks_plausible():
    data = datasets.load("lesions", size=48)
    fractions = data.masks("train").float().mean(dim=(1, 2))
    assert bool((fractions > 0).all()) and bool((fractions < 0.9).all())
    assert 0.1 <= float(fractions.median()) <= 0.4
    # The lesion is darker than the skin around it.
    images, masks = data.images("train"), data.masks("train")
    brightness = images.mean(dim=1)
    inside = (brightness * masks).sum(dim=(1, 2)) / masks.sum(dim=(1, 2))
    ring = torch.from_numpy(np.stack([ndimage.binary_dilation(m, iterations=3) & ~m for m in masks.numpy()]))
    around = (brightness * ring).sum(dim=(1, 2)) / ring.sum(dim=(1, 2)).clamp(min=1)
    assert float((inside < around).float().mean()) > 0.9


def test_vessel_masks_are_trees_inside_the_field():
    data = datasets.load("vessels", size=48)
    masks = data.masks("test").numpy()
    size = masks.shape[-1]
    yy, xx = np.mgrid[:size, :size] + 0.5
    fov = np.hypot(yy - size / 2, xx - size / 2) < size * 44 / 96
    for mask in masks:
        assert not (mask & ~fov).any()
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        largest = np.bincount(labels.ravel())[1:].max()
        assert largest >= 0.9 * mask.sum()  # one connected tree (rare touching-edge crumbs allowed)
    fractions = masks.sum(axis=(1, 2)) / fov.sum()
    assert 0.05 < float(np.median(fractions)) < 0.25


def test_default_size_and_cache_file():
    data = datasets.load("vessels")
    assert tuple(data.images("test").shape) == (48, 3, 96, 96)
    assert data.bank.block == 8
    fractions = np.array([m["vessel_fraction"] for m in data.metadata("train")])
    assert 0.08 <= float(np.median(fractions)) <= 0.15
    files = sorted(p.name for p in datasets.cache_dir().iterdir())
    assert f"vessels-v{data.info['version']}-size96-seed0.npz" in files
    assert not [f for f in files if f.endswith(".tmp")]


def test_corrupt_cache_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setenv("PDCR_LAB_CACHE", str(tmp_path))
    fresh = datasets.load("lesions", size=32, seed=7)
    (path,) = tmp_path.glob("lesions-*-size32-seed7.npz")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable"):
        again = datasets.load("lesions", size=32, seed=7)
    assert torch.equal(fresh.images("val"), again.images("val"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        datasets.load("lesions", size=32, seed=7)  # repaired file reads cleanly


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("PDCR_LAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.cache_dir() == tmp_path / ".cache" / "pdcr_lab"


def test_brain_slices():
    data = datasets.load("brain", size=48)
    assert data.splits == ("train", "val", "test")
    images = data.images("test")
    assert images.shape[1:] == (1, 48, 48) and images.dtype == torch.float32
    assert len(data.images("train")) + len(data.images("val")) + len(images) >= 100
    assert len(images) >= 32  # the strategies study explains 32 test images per model
    slices = {s: {m["slice"] for m in data.metadata(s)} for s in data.splits}
    assert not (slices["train"] & slices["test"]) and not (slices["val"] & slices["test"])
    # No two neighbouring slices sit in different splits (a gap slice is dropped between them).
    owner = {z: s for s, zs in slices.items() for z in zs}
    assert all(owner.get(z + 1, owner[z]) == owner[z] for z in owner)
    fractions = data.masks("train").float().mean(dim=(1, 2))
    assert bool((fractions > 0).all()) and bool((fractions < 0.6).all())
    assert "one averaged brain" in data.info["description"].lower()


def test_load_bad_arguments():
    with pytest.raises(ValueError, match=r"name='skin' is not supported; expected one of"):
        datasets.load("skin")
    with pytest.raises(TypeError, match="size must be an integer"):
        datasets.load("lesions", size="96")
    with pytest.raises(ValueError, match="seed=-1 is too small"):
        datasets.load("lesions", seed=-1)
    data = datasets.load("lesions", size=32)
    with pytest.raises(ValueError, match=r"split='testing' is not supported"):
        data.images("testing")
