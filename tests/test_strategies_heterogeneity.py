"""Heterogeneity tests of strategies: they find differences that exist, stay calm when there are none."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pdcr_lab.statistics import holm, permutation_p
from pdcr_lab.strategies import LABELS, STRATEGIES, format_heterogeneity, heterogeneity


def _result(labels: np.ndarray, d50: np.ndarray | None = None) -> xr.Dataset:
    """A labelled stack (model, dataset, image) with a d50 and strategy shares."""
    m, d, n = labels.shape
    d50 = np.ones(labels.shape) if d50 is None else d50
    share = np.stack([(labels == s).astype(float) for s in STRATEGIES], axis=-1)
    return xr.Dataset(
        {"label": (("model", "dataset", "image"), labels.astype(str)),
         "d50": (("model", "dataset", "image"), d50),
         "near_share": (("model", "dataset", "image"), 1.0 / (1.0 + d50)),
         "share": (("model", "dataset", "image", "strategy"), share)},
        coords={"model": [f"m{k}" for k in range(m)], "dataset": [f"d{k}" for k in range(d)],
                "strategy": list(STRATEGIES)},
    )


def test_holm_and_permutation_p():
    # Holm by hand: sorted 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (monotone).
    assert holm([0.04, 0.01, 0.02]).tolist() == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.6, 0.9]).tolist() == [1.0, 1.0]
    assert np.isnan(holm([np.nan, 0.1])[0]) and holm([np.nan, 0.1])[1] == pytest.approx(0.1)
    assert float(permutation_p(3.0, [1.0, 2.0, 3.0, 4.0])) == pytest.approx(3 / 5)
    assert float(permutation_p(10.0, np.zeros(99))) == pytest.approx(0.01)


def test_differences_between_architectures_are_found():
    rng = np.random.default_rng(0)
    n = 24
    labels = np.empty((3, 2, n), object)
    labels[0] = "local"
    labels[1] = np.where(rng.random((2, n)) < 0.8, "global", "local")
    labels[2] = np.where(rng.random((2, n)) < 0.8, "sequential", "local")
    d50 = np.stack([np.full((2, n), 1.0), np.full((2, n), 4.0), np.full((2, n), 3.0)]) + rng.normal(0, 0.3, (3, 2, n))
    het = heterogeneity(_result(labels, d50), n_perm=499, seed=1)
    assert (het.het_arch_p_holm.sel(measure=["label", "d50"]) < 0.01).all()
    assert float(het.het_arch_effect.sel(dataset="d0", measure="label")) > 0.6
    assert float(het.het_arch_all_p.sel(measure="label")) == pytest.approx(1 / 500)
    # The same models on both datasets: no shift.
    assert (het.het_shift_p.sel(measure="label") > 0.05).all()


def test_no_difference_gives_uniform_p_values():
    # Labels drawn from one distribution for every model: p-values of the across-architecture test
    # are not small more often than chance (the test keeps its level).
    ps = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        labels = rng.choice(["local", "global", "mixed"], size=(4, 1, 16))
        ps.append(float(heterogeneity(_result(labels), measures=["label"], n_perm=199, seed=seed)
                        .het_arch_p.sel(dataset="d0", measure="label")))
    ps = np.array(ps)
    assert (ps < 0.05).mean() <= 0.15 and 0.3 < np.median(ps) < 0.7


def test_shift_between_datasets_is_found_per_model():
    labels = np.empty((2, 2, 20), object)
    labels[:, 0] = "local"
    labels[0, 1] = "global"      # model 0 shifts to global on the second dataset
    labels[1, 1] = "local"       # model 1 does not
    d50 = np.where(labels == "global", 4.0, 1.0) + np.random.default_rng(2).normal(0, 0.2, labels.shape)
    het = heterogeneity(_result(labels, d50), n_perm=499)
    assert float(het.het_shift_p_holm.sel(model="m0", measure="label")) < 0.01
    assert float(het.het_shift_effect.sel(model="m0", measure="label")) == pytest.approx(1.0)
    assert float(het.het_shift_p.sel(model="m1", measure="label")) == 1.0
    assert float(het.het_shift_p_holm.sel(model="m0", measure="d50")) < 0.01
    assert float(het.het_shift_p.sel(model="m1", measure="d50")) > 0.01


def test_within_image_pairing_removes_image_difficulty():
    # Every image has its own d50 level; the models add small consistent offsets. The paired
    # (within-image) test sees the offsets; an unpaired view would drown them in image variance.
    rng = np.random.default_rng(3)
    image_level = rng.uniform(0, 6, 16)
    d50 = image_level[None, None, :] + np.array([0.0, 0.3, 0.6])[:, None, None] + rng.normal(0, 0.05, (3, 1, 16))
    het = heterogeneity(_result(np.full((3, 1, 16), "local", object), d50), measures=["d50"], n_perm=499)
    assert float(het.het_arch_p.sel(dataset="d0", measure="d50")) < 0.01
    assert float(het.het_arch_effect.sel(dataset="d0", measure="d50")) > 0.9


def test_not_explained_pairs_and_bad_arguments():
    labels = np.full((3, 2, 6), "local", object)
    labels[2, 1] = "not explained"
    labels[0, 0, :3] = "global"
    het = heterogeneity(_result(labels), measures=["label"], n_perm=99)
    assert float(het.het_arch_n.sel(dataset="d1", measure="label")) == 12     # two explained models x 6
    assert np.isnan(float(het.het_shift_p.sel(model="m2", measure="label")))  # one dataset only
    text = format_heterogeneity(het)
    assert "Across architectures" in text and "| m2 | - |" in text
    with pytest.raises(ValueError, match="measures: unknown measure 'spread'"):
        heterogeneity(_result(labels), measures=["spread"])
    with pytest.raises(ValueError, match="n_perm"):
        heterogeneity(_result(labels), n_perm=0)
    assert set(LABELS) >= {"local", "global"}
