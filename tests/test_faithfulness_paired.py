"""Paired comparisons of the faithfulness study: direction, pairing by image, Holm families."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pdcr_lab.faithfulness import comparisons, format_paired, paired_tests, verdicts

METHODS = ["pdcr", "gradcam", "random"]


def _result(auc: np.ndarray, curves=("deletion", "insertion"), datasets=("a", "b")) -> xr.Dataset:
    return xr.Dataset({"auc": (("model", "dataset", "image", "method", "policy", "curve"), auc)},
                      coords={"model": [f"m{k}" for k in range(auc.shape[0])], "dataset": list(datasets),
                              "method": METHODS, "policy": ["natural"], "curve": list(curves)})


def test_comparisons_cover_reference_and_control():
    assert comparisons(["pdcr", "gradcam", "misure", "random"]) == [
        ("pdcr", "gradcam"), ("pdcr", "misure"), ("pdcr", "random"), ("gradcam", "random"), ("misure", "random")]
    assert comparisons(["gradcam", "random"], reference="pdcr") == [("gradcam", "random")]


def test_direction_of_deletion_and_insertion():
    rng = np.random.default_rng(0)
    auc = rng.normal(0.5, 0.05, (3, 2, 16, 3, 1, 2))
    auc[:, :, :, 0, :, 0] -= 0.1   # pdcr: lower deletion AUC -> more faithful
    auc[:, :, :, 0, :, 1] += 0.1   # and higher insertion AUC
    out = paired_tests(_result(auc), n_boot=200)
    sel = dict(comparison="pdcr - gradcam", policy="natural")
    assert float(out.paired_all_diff.sel(**sel, curve="deletion", stat="mean")) == pytest.approx(-0.1, abs=0.03)
    assert float(out.paired_all_better.sel(**sel, curve="deletion")) > 0.9
    assert float(out.paired_all_better.sel(**sel, curve="insertion")) > 0.9
    assert (out.paired_p_holm.sel(**sel) < 0.01).all()
    # gradcam and random are exchangeable: no verdict
    assert (out.paired_all_p_holm.sel(comparison="gradcam - random") > 0.05).all()
    text = format_paired(out)
    assert "| pdcr - gradcam |" in text and "A better" in text and "tie" in text


def test_images_are_the_unit_not_model_image_pairs():
    # One image-level effect shared by all models, noise otherwise: 12 models x 4 images must not
    # look like 48 independent samples. With 4 images the exact Wilcoxon p is at least 0.125.
    rng = np.random.default_rng(1)
    auc = rng.normal(0.5, 0.01, (12, 1, 4, 3, 1, 1))
    auc[:, :, :, 0] -= 0.05
    out = paired_tests(_result(auc, curves=("deletion",), datasets=("a",)), n_boot=200)
    assert int(out.paired_n.sel(dataset="a", comparison="pdcr - gradcam", policy="natural", curve="deletion")) == 4
    assert float(out.paired_p.sel(dataset="a", comparison="pdcr - gradcam", policy="natural",
                                  curve="deletion")) == pytest.approx(0.125)


def test_missing_values_and_bad_arguments():
    auc = np.random.default_rng(2).normal(0.5, 0.05, (2, 2, 6, 3, 1, 2))
    auc[1] = np.nan                                   # a model that was not run
    auc[0, 1] = np.nan                                # and a dataset without any value
    out = paired_tests(_result(auc), n_boot=100)
    assert int(out.paired_n.sel(dataset="a", comparison="pdcr - gradcam", policy="natural", curve="deletion")) == 6
    assert int(out.paired_n.sel(dataset="b", comparison="pdcr - gradcam", policy="natural", curve="deletion")) == 0
    assert np.isnan(float(out.paired_p.sel(dataset="b", comparison="pdcr - gradcam", policy="natural",
                                           curve="deletion")))
    with pytest.raises(ValueError, match="reference='occlusion' is not a method of the result"):
        paired_tests(_result(auc), reference="occlusion")


def test_verdicts_count_wins_ties_and_losses_per_scope():
    rng = np.random.default_rng(3)
    auc = rng.normal(0.5, 0.05, (2, 2, 16, 3, 1, 2))
    auc[:, 0, :, 0, :, 0] += 0.1   # on dataset a pdcr deletes slower (less faithful) ...
    auc[:, :, :, 0, :, 1] += 0.1   # ... and inserts better everywhere
    counts = verdicts(paired_tests(_result(auc), n_boot=200))
    assert counts.verdict.values.tolist() == ["A better", "tie", "B better"]
    assert counts.sel(comparison="pdcr - gradcam", scope="a").values.tolist() == [1, 0, 1]
    assert counts.sel(comparison="pdcr - gradcam", scope="b").values.tolist() == [1, 1, 0]
    assert counts.sel(comparison="gradcam - random", scope="all").values.tolist() == [0, 2, 0]
    assert int(counts.sum("verdict").max()) == int(counts.sum("verdict").min()) == 2  # 1 policy x 2 curves
    assert "| pdcr - gradcam | 1/0/1 | 1/1/0 |" in format_paired(paired_tests(_result(auc), n_boot=200))
