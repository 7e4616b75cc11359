"""The shipped study results say what the README says, at the power the project claims.

Each stored result is re-derived from its own raw parts with today's code (labels from the stored
maps, tests from the labels, the cue truth from the stored ablation drops), so a change of the rules
that is not followed by a rerun fails here, and so does a README number that no longer matches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pdcr_lab.faithfulness import paired_tests, verdicts
from pdcr_lab.storage import load
from pdcr_lab.strategies import heterogeneity, label_maps
from pdcr_lab.studies import CueSettings, cue_agreement, cue_truth

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results"
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def strategies() -> xr.Dataset:
    return load(RESULTS / "strategies.nc")


@pytest.fixture(scope="module")
def cues() -> xr.Dataset:
    return load(RESULTS / "cues.nc")


def test_strategies_study_has_the_claimed_power(strategies):
    assert strategies.sizes["image"] >= 32 and strategies.attrs["fine"] == 50
    assert {"lesions", "vessels", "brain"} <= set(strategies.dataset.values.tolist())
    explained = strategies["explained"]
    models = strategies.sizes["model"]
    for dataset in strategies.dataset.values:
        n = int(explained.sel(dataset=dataset).sum())
        assert n >= 3, f"{dataset}: {n} models"
        # the README says how many of the study's models each dataset holds
        assert n == models or f"{dataset} {n} of {models}" in README.replace("`", ""), dataset
    maps = strategies["ate"].where(explained)
    has_value = (~np.isnan(maps)).any(("block_y", "block_x"))
    assert bool((has_value | ~explained).all()), "an explained pair has an image without a map"


def test_stored_labels_and_tests_follow_from_the_stored_maps(strategies):
    again = label_maps(strategies)
    assert (again["label"] == strategies["label"]).all()
    het = heterogeneity(again, n_perm=int(strategies.attrs["het_n_perm"]), seed=int(strategies.attrs["het_seed"]))
    for name in het.data_vars:
        np.testing.assert_allclose(het[name].values, strategies[name].values, equal_nan=True, err_msg=name)


def test_the_readme_quotes_the_stored_tests(strategies):
    p = float(strategies["het_arch_all_p"].sel(measure="label"))
    v = float(strategies["het_arch_all_effect"].sel(measure="label"))
    assert f"V = {v:.2f}" in README and (f"p = {p:.4f}" in README or (p < 1e-3 and "p < 0.001" in README))


def test_cue_truth_and_agreement_follow_from_the_stored_parts(cues):
    a = cues.attrs
    settings = CueSettings(truth_mode=a["cue_truth_mode"], min_drop=float(a["cue_min_drop"]),
                           mixed_ratio=float(a["cue_mixed_ratio"]))
    drops = xr.Dataset({"drop_mean": cues["cue_drop_mean"]})
    truth = cue_truth(drops, settings)
    assert (truth == cues["cue_truth"]).all()
    again = label_maps(cues)
    assert (again["label"] == cues["label"]).all()
    agreement = cue_agreement(again, truth, level=float(a["cue_level"]))
    np.testing.assert_allclose(agreement["agreement"].values, cues["agree_agreement"].values)
    np.testing.assert_allclose(agreement["agreement_by_truth"].values, cues["agree_agreement_by_truth"].values)


def test_the_readme_quotes_the_cue_agreement(cues):
    for kind in ("exact", "named"):
        s = cues["agree_agreement"].sel(subset="all", unit="map", kind=kind)
        est, lo, hi = (float(s.sel(stat=k)) for k in ("estimate", "lower", "upper"))
        assert f"{est:.2f} [{lo:.2f}, {hi:.2f}]" in README, kind


@pytest.fixture(scope="module")
def attribution() -> xr.Dataset:
    return load(RESULTS / "cue_attribution.nc", effects=False)


def test_baseline_labels_and_accuracy_follow_from_the_stored_maps(cues, attribution):
    """Each baseline's stored support map, put in the cue study's maps (same RoIs), gets the stored labels."""
    for method in attribution.method.values[1:]:
        support = attribution["support"].sel({"method": method}).drop_vars("method")
        maps = cues.assign(ate=-support.transpose(*cues["ate"].dims).fillna(0.0))
        again = label_maps(maps)
        stored = attribution["label"].sel({"method": method})
        assert (again["label"].transpose(*stored.dims) == stored).all(), method
        agreement = cue_agreement(again, cues["cue_truth"], level=float(attribution.attrs["level"]))
        np.testing.assert_allclose(agreement["agreement"].sel(unit="map").values,
                                   attribution["accuracy"].sel({"method": method}).values, err_msg=method)


def test_the_readme_quotes_the_attribution_accuracy(attribution):
    for method in attribution.method.values:
        s = attribution["accuracy"].sel({"method": method, "subset": "known", "kind": "named"})
        est, lo, hi = (float(s.sel(stat=k)) for k in ("estimate", "lower", "upper"))
        assert f"| {method} | {est:.2f} [{lo:.2f}, {hi:.2f}]" in README, method


@pytest.fixture(scope="module")
def faithfulness() -> xr.Dataset:
    return load(RESULTS / "faithfulness.nc", effects=False)


def test_faithfulness_study_has_the_claimed_power(faithfulness):
    assert faithfulness.sizes["image"] >= 16 and int(faithfulness.attrs["fine"]) == 50
    assert {"lesions", "vessels", "brain"} <= set(faithfulness.dataset.values.tolist())
    assert {"paired_diff", "paired_p_holm", "paired_all_p_holm", "paired_model_p_holm"} <= set(faithfulness.data_vars)
    pdcr = faithfulness["auc"].sel({"method": "pdcr"})
    ran = np.isfinite(pdcr).any(("image", "policy", "curve"))
    assert int(ran.sum("model").min()) >= 3, "every dataset has at least three models"
    assert bool(np.isfinite(pdcr.where(ran)).where(ran, True).all()), "an explained pair lacks an image"


def test_paired_tests_follow_from_the_stored_areas(faithfulness):
    a = faithfulness.attrs
    again = paired_tests(faithfulness[["auc"]], n_boot=int(a["paired_n_boot"]), level=float(a["paired_level"]),
                         seed=int(a["paired_seed"]))
    for name in ("paired_diff", "paired_p", "paired_p_holm", "paired_all_diff", "paired_all_p_holm", "paired_model_p"):
        # the stored file shares ``stat`` with the summaries (other labels): compare on the paired ones
        stored = faithfulness[name].sel(stat=again.stat) if "stat" in again[name].dims else faithfulness[name]
        np.testing.assert_allclose(again[name].values, stored.transpose(*again[name].dims).values, equal_nan=True,
                                   err_msg=name)


def test_the_readme_quotes_the_faithfulness_verdicts(faithfulness):
    counts = verdicts(faithfulness)
    for name in counts.comparison.values:
        row = " | ".join("/".join(str(int(v)) for v in counts.sel(comparison=name, scope=s).values)
                         for s in counts.scope.values)
        assert f"| {name} | {row} |" in README, name
