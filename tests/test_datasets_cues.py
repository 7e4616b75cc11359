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


# ---------------------------------------------------------------- oracle predictors, one cue each

def _channels(images):
    rgb = images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)
    return rgb, rgb.mean(1)


def _disc(rgb, luma):
    """The green source disc, dilated over its soft edge."""
    green = (rgb[1] - 0.5 * (rgb[0] + rgb[2])) > 0.3 * luma
    return ndimage.binary_dilation(green & (luma > 0.15), EIGHT, iterations=1)


def _parts(rgb, luma):
    """Structure pixels and their 8-connected parts: brighter than the background and not the disc,
    then cut at each part's half level (between the background and the part's luminance), so that
    soft and sharp edges give the same extent."""
    candidates = (luma > 0.11) & ~_disc(rgb, luma)
    labels, n = ndimage.label(candidates, structure=EIGHT)
    if n == 0:
        return labels, n
    smooth = ndimage.uniform_filter(luma, 3)
    peak = np.asarray(ndimage.labeled_comprehension(smooth, labels, np.arange(1, n + 1),
                                                    lambda v: np.percentile(v, 80), float, 0.0))
    half = np.concatenate([[np.inf], (_cues.BACKGROUND + peak) / 2])
    return ndimage.label(candidates & (luma > half[labels]), structure=EIGHT)


def _keep(labels, n, decide):
    keep = np.zeros(n + 1, bool)
    for k in range(1, n + 1):
        keep[k] = decide(labels == k)
    return keep[labels]


def oracle_local(images):
    """Foreground = parts with a pixel-scale checker texture (a 2 x 2 diagonal filter)."""
    out = []
    for image in images:
        rgb, luma = _channels(image[None])
        rgb, luma = rgb[0], luma[0]
        response = np.abs(luma[:-1, :-1] - luma[1:, :-1] - luma[:-1, 1:] + luma[1:, 1:]) / 4
        response = np.pad(response, ((0, 1), (0, 1)))
        labels, n = _parts(rgb, luma)
        out.append(_keep(labels, n, lambda part: np.median(response[part]) > 0.02))
    return np.stack(out)


def oracle_global(images):
    """Foreground = parts whose luminance is above the level decoded from the image-mean cast."""
    out = []
    for image in images:
        level = _cues.decode_level(image)
        level = float(np.mean(_cues.LEVEL_RANGE)) if np.isnan(level) else level
        rgb, luma = _channels(image[None])
        rgb, luma = rgb[0], luma[0]
        smooth = ndimage.uniform_filter(luma, 3)
        labels, n = _parts(rgb, luma)
        out.append(_keep(labels, n, lambda part: np.percentile(smooth[part], 80) > level))
    return np.stack(out)


def oracle_sequential(images):
    """Foreground = parts connected (bridging 1 px) to the source disc."""
    out = []
    for image in images:
        rgb, luma = _channels(image[None])
        rgb, luma = rgb[0], luma[0]
        disc = ndimage.binary_dilation(_disc(rgb, luma), EIGHT, iterations=1)
        labels, n = _parts(rgb, luma)
        out.append(_keep(labels, n, lambda part: bool((part & disc).any())))
    return np.stack(out)


ORACLES = {"local": oracle_local, "global": oracle_global, "sequential": oracle_sequential}


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
        assert _disc(rgb, rgb.mean(0)).any()
        # foreground touches the source disc; every distractor is at least `clearance` away
        y, x = np.mgrid[:SIZE, :SIZE] + 0.5
        source = np.hypot(y - meta["source"][0] * SIZE, x - meta["source"][1] * SIZE)
        near = ndimage.binary_dilation(source < meta["disc_radius"] * SIZE, EIGHT)
        labels, n = ndimage.label(mask, structure=EIGHT)
        assert set(np.unique(labels[near & mask])) >= set(range(1, n + 1))
        absent = _cues.ablate(image, meta, "sequential", "absent").astype(np.float64)
        assert not _disc(absent, absent.mean(0)).any()
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
