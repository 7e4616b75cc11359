"""The cue-controlled generated set: shapes, determinism, controllable cues, ablation and reliance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pdcr_lab.datasets import _cues

SIZE = 64
EIGHT = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def drawn():
    """Eight images at 64 px (every cue present) as float (3, H, W), with masks and metadata."""
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(11).spawn(8)]
    images, masks, metas = zip(*(_cues.draw_cues(r, SIZE) for r in rngs), strict=True)
    return np.stack(images), np.stack(masks), list(metas)


ORACLES = _cues.ORACLES


# ---------------------------------------------------------------- generation

def test_shapes_dtypes_range_and_meta(drawn):
    images, masks, metas = drawn
    assert images.shape == (8, 3, SIZE, SIZE) and images.dtype == np.float32
    assert masks.shape == (8, SIZE, SIZE) and masks.dtype == bool
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert all(m.any() for m in masks)
    for meta in metas:
        assert meta["controls"] == dict.fromkeys(_cues.CUES, "present")
        assert _cues.LEVEL_RANGE[0] <= meta["level"] <= _cues.LEVEL_RANGE[1]
    out = _cues.generate(32, seed=3, n={"train": 3, "val": 1, "test": 1})
    assert out["images"].shape == (5, 3, 32, 32) and out["images"].dtype == np.uint8
    assert out["masks"].shape == (5, 32, 32) and len(out["ids"]) == len(out["meta"]) == 5
    assert _cues.split_sizes(out) == _cues.SPLITS


def test_deterministic_per_seed_and_seeds_differ():
    a, b = _cues.generate(SIZE, seed=0, n={"t": 3}), _cues.generate(SIZE, seed=0, n={"t": 3})
    c = _cues.generate(SIZE, seed=1, n={"t": 3})
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["masks"], b["masks"])
    assert a["meta"] == b["meta"]
    assert not np.array_equal(a["images"], c["images"]) and not np.array_equal(a["masks"], c["masks"])
    # image k does not depend on how many are drawn
    assert np.array_equal(_cues.generate(SIZE, seed=0, n={"t": 2})["images"], a["images"][:2])


def test_controls_recorded_and_checked():
    image, mask, meta = _cues.draw_cues(np.random.default_rng(0), SIZE, {"global": "absent"})
    assert meta["controls"] == {"local": "present", "global": "absent", "sequential": "present"}
    with pytest.raises(ValueError):
        _cues.render(1, SIZE, {"colour": "absent"})
    with pytest.raises(ValueError):
        _cues.render(1, SIZE, {"local": "removed"})


def test_ablate_never_changes_the_mask_and_is_deterministic(drawn):
    images, masks, metas = drawn
    for image, mask, meta in zip(images[:3], masks[:3], metas[:3], strict=True):
        for cue in _cues.CUES:
            for mode in ("absent", "contradicted"):
                controls = {**meta["controls"], cue: mode}
                _, mask2, _ = _cues.render(meta["render_seed"], SIZE, controls)
                assert np.array_equal(mask2, mask)
                once = _cues.ablate(image, meta, cue, mode)
                assert np.array_equal(once, _cues.ablate(image, meta, cue, mode))
                assert once.dtype == np.float32 and not np.array_equal(once, image)
        assert np.array_equal(_cues.ablate(image, meta, "local", "present"), image)
    as_uint8 = np.round(images[:2] * 255).astype(np.uint8)
    assert _cues.ablate_batch(as_uint8, metas[:2], "global").dtype == np.uint8


# ---------------------------------------------------------------- each cue is controllable

def test_global_cue_statistic(drawn):
    images, masks, metas = drawn
    for image, meta in zip(images, metas, strict=True):
        assert abs(_cues.decode_level(image) - meta["level"]) < 0.01
        assert np.isnan(_cues.decode_level(_cues.ablate(image, meta, "global", "absent")))
    # locally the cast is hidden: the 8 x 8 patch chroma spreads wider than the whole level range
    rgb = images[0].astype(np.float64)
    chroma = (rgb[0] - rgb[2]) / (2 * rgb.mean(0) + 1e-6)
    patches = chroma.reshape(8, 8, 8, 8).mean((1, 3))
    assert np.ptp(patches) > _cues.CAST_RANGE[1] - _cues.CAST_RANGE[0]


def _luma_of_parts(image, shape):
    luma = image.astype(np.float64).mean(0)
    labels, n = ndimage.label(shape, structure=EIGHT)
    core = ndimage.binary_erosion(shape, EIGHT)
    return np.array([np.mean(luma[(labels == k) & core]) for k in range(1, n + 1) if ((labels == k) & core).any()])


def test_global_cue_levels_flip_when_contradicted(drawn):
    images, masks, metas = drawn
    for image, mask, meta in zip(images, masks, metas, strict=True):
        level = meta["level"]
        assert (_luma_of_parts(image, mask) > level).all()
        assert (_luma_of_parts(_cues.ablate(image, meta, "global", "contradicted"), mask) < level).all()


def test_sequential_cue_connectivity(drawn):
    images, masks, metas = drawn
    for image, mask, meta in zip(images, masks, metas, strict=True):
        rgb = image.astype(np.float64)
        assert _cues._disc(rgb, rgb.mean(0)).any()
        # foreground touches the source disc; every distractor is at least `clearance` away
        y, x = np.mgrid[:SIZE, :SIZE] + 0.5
        source = np.hypot(y - meta["source"][0] * SIZE, x - meta["source"][1] * SIZE)
        near = ndimage.binary_dilation(source < meta["disc_radius"] * SIZE, EIGHT)
        labels, n = ndimage.label(mask, structure=EIGHT)
        assert set(np.unique(labels[near & mask])) >= set(range(1, n + 1))
        absent = _cues.ablate(image, meta, "sequential", "absent").astype(np.float64)
        assert not _cues._disc(absent, absent.mean(0)).any()
        moved = _cues.ablate(image, meta, "sequential", "contradicted").astype(np.float64)
        green = (moved[1] - 0.5 * (moved[0] + moved[2])) > 0.3 * moved.mean(0)
        assert green.any() and ndimage.distance_transform_edt(~green)[mask].min() >= meta["clearance_px"] - 1.5


def test_local_cue_contrast_at_the_border(drawn):
    images, masks, metas = drawn

    def border_contrast(image, mask):
        luma = image.astype(np.float64).mean(0)
        grad = np.hypot(*np.gradient(luma))
        checker = np.abs(ndimage.convolve(luma, np.array([[1.0, -1.0], [-1.0, 1.0]]) / 4))
        inner = mask & ~ndimage.binary_erosion(mask, EIGHT)
        return float(grad[inner].mean()), float(checker[mask].mean())

    for image, mask, meta in zip(images, masks, metas, strict=True):
        grad, tex = border_contrast(image, mask)
        grad_a, tex_a = border_contrast(_cues.ablate(image, meta, "local"), mask)
        assert grad_a < 0.85 * grad and tex_a < 0.3 * tex


# ---------------------------------------------------------------- reliance

def test_oracles_decide_the_mask_from_one_cue(drawn):
    images, masks, _ = drawn
    for name, oracle in ORACLES.items():
        assert _cues.dice(oracle(images), masks).mean() > 0.9, name


@pytest.mark.parametrize("mode", ["absent", "contradicted"])
@pytest.mark.parametrize("name", list(ORACLES))
def test_cue_reliance_drops_only_for_the_cue_used(drawn, name, mode):
    images, masks, metas = drawn
    result = _cues.cue_reliance(ORACLES[name], images, masks, metas, mode=mode, n_boot=200)
    assert result["drop"].shape == (3, len(images)) and result.attrs["mode"] == mode
    drop = result["drop_mean"].to_series()
    assert drop[name] > 0.4 and float(result["drop_low"].sel(cue=name)) > 0.2
    for other in set(_cues.CUES) - {name}:
        assert abs(drop[other]) < 0.05, (other, drop[other])
    assert float(result["dice_low"]) <= float(result["dice_mean"]) <= float(result["dice_high"])


def test_generation_time_at_working_size():
    import time

    start = time.perf_counter()
    _cues.generate(128, seed=0, n={"t": 8})
    assert (time.perf_counter() - start) / 8 < 0.1  # 432 images well under a minute


# ---------------------------------------------------------------- regimes and the registered sets

def test_training_cue_mixture_and_regimes():
    modes = _cues.training_controls(3000, seed=5)
    absent = np.array([list(m.values()).count("absent") for m in modes])
    for k, p in _cues.TRAIN_ABSENT.items():
        assert abs((absent == k).mean() - p) < 0.03
    assert absent.max() <= 2
    # every cue is missing from some training images, about equally often
    share = {c: np.mean([m[c] == "absent" for m in modes]) for c in _cues.CUES}
    assert max(share.values()) - min(share.values()) < 0.04 and min(share.values()) > 0.2
    n = {"train": 6, "val": 2, "test": 3}
    mixed = _cues.generate(SIZE, seed=2, n=n)
    assert all(m["controls"] == dict.fromkeys(_cues.CUES, "present") for m in mixed["meta"][8:])
    for regime in ("global", "sequential"):
        single = _cues.generate(SIZE, seed=2, n=n, regime=regime)
        assert np.array_equal(single["masks"], mixed["masks"])        # same geometry, same masks
        assert all(m["controls"] == {c: "present" if c == regime else "absent" for c in _cues.CUES}
                   for m in single["meta"])
    with pytest.raises(ValueError, match="regime='colour' is not supported"):
        _cues.generate(SIZE, n=n, regime="colour")


def test_far_from_source_region(drawn):
    _, masks, metas = drawn
    region = _cues.far_from_source(metas, SIZE, far=0.3)
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    for k, meta in enumerate(metas):
        distance = np.hypot(y / SIZE - meta["source"][0], x / SIZE - meta["source"][1])
        assert np.array_equal(region[k], distance >= 0.3)
        assert (masks[k] & region[k]).any()          # chains reach beyond it


def test_registered_cue_sets():
    from pdcr_lab import datasets

    assert {"cues", "cues_global", "cues_sequential"} <= set(datasets.list_datasets(ndim=2))
    data = datasets.load("cues", size=32)
    assert data.info["splits"] == _cues.SPLITS and data.images("test").shape[1:] == (3, 32, 32)
    assert data.metadata("test")[0]["controls"] == dict.fromkeys(_cues.CUES, "present")
    train_modes = [m["controls"] for m in data.metadata("train")]
    assert any("absent" in m.values() for m in train_modes) and any("absent" not in m.values() for m in train_modes)
    glob = datasets.load("cues_global", size=32)
    assert torch_equal(glob.masks("test"), data.masks("test"))
    assert "global cue alone" in glob.info["description"]


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
