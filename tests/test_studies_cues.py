"""The cue study (ablation recovers a known reliance, the truth rule, agreement) and the baselines' accuracy on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
import xarray as xr

from pdcr_lab.datasets import _cues
from pdcr_lab.storage import load, save
from pdcr_lab.studies import CueSettings, cue_agreement, cue_reliance_study, cue_study, cue_truth, format_cues
from pdcr_lab.studies import cue_attribution, format_cue_attribution
from pdcr_lab.studies._cues import roi_region
from pdcr_lab.studies._faithfulness import Method


class Oracle(torch.nn.Module):
    """A 'model' that decides the foreground by one cue alone (its reliance is known by construction)."""

    def __init__(self, cue: str) -> None:
        super().__init__()
        self.cue = cue

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(_cues.ORACLES[self.cue](x.detach().cpu().numpy()), dtype=torch.float32)[:, None]


def _loader(name: str, dataset: str):
    return Oracle(name), {"test_dice": float("nan")}


def test_ablation_recovers_each_oracles_cue():
    reliance = cue_reliance_study(list(_cues.CUES), ("cues", "cues_global"), images=16, loader=_loader,
                                  log=lambda s: None)
    assert reliance.sizes["image"] == 16
    truth = cue_truth(reliance)
    # On the set with every cue, each oracle relies on its own cue, and only on it.
    assert truth.sel(dataset="cues").values.tolist() == list(_cues.CUES)
    own = reliance.drop_mean.sel(dataset="cues", mode="contradicted")
    for cue in _cues.CUES:
        assert float(own.sel(model=cue, cue=cue)) > 90
        assert all(abs(float(own.sel(model=cue, cue=other))) < 5 for other in _cues.CUES if other != cue)
    # The single-cue set shows only the global cue: the other cues are not ablated (NaN), and the
    # oracles that need a missing cue fail on it (their truth is "no reliance").
    glob = reliance.drop_mean.sel(dataset="cues_global", mode="contradicted")
    assert np.isnan(float(glob.sel(model="global", cue="local")))
    assert truth.sel(dataset="cues_global", model="global").item() == "global"
    assert float(reliance.dice_whole.sel(dataset="cues_global", model="global")) > 0.9
    assert float(reliance.dice_whole.sel(dataset="cues_global", model="local")) < 0.5
    # Every RoI sits on the ground truth, at the far end of its chain.
    data = __import__("pdcr_lab").datasets.load("cues")
    region = roi_region(data)
    for k, i in enumerate(reliance.image.values):
        r, c = int(reliance.roi_row[k]), int(reliance.roi_col[k])
        box = region[i, r:r + int(reliance.roi_height[k]), c:c + int(reliance.roi_width[k])]
        assert box.any() and data.masks("test")[i, r:r + 16, c:c + 16].any()


def test_truth_rule_thresholds():
    drops = xr.Dataset({"drop_mean": (("model", "mode", "cue"),
                                      [[[4.0, 1.0, 0.0]], [[30.0, 14.0, 0.0]], [[30.0, 15.0, 0.0]]])},
                       coords={"model": ["weak", "clear", "tied"], "mode": ["contradicted"],
                               "cue": list(_cues.CUES)})
    assert cue_truth(drops).values.tolist() == ["no reliance", "local", "mixed"]
    assert cue_truth(drops, CueSettings(min_drop=3.0)).values.tolist()[0] == "local"
    with pytest.raises(ValueError, match="truth_mode"):
        CueSettings(truth_mode="removed")


def test_agreement_counts_exact_and_named():
    labels = np.array([[["local", "no effect", "mixed"]], [["global", "sequential", "sequential"]]])
    present = np.zeros((2, 1, 3, 3), bool)
    present[0, 0, 0, 0] = present[0, 0, 2, 0] = present[0, 0, 2, 2] = True   # local; -; local+sequential
    present[1, 0, 0, 1] = present[1, 0, 1, 2] = present[1, 0, 2, 2] = True
    labelled = xr.Dataset({"label": (("model", "dataset", "image"), labels),
                           "present": (("model", "dataset", "image", "strategy"), present)},
                          coords={"model": ["a", "b"], "dataset": ["cues"], "strategy": ["local", "global", "sequential"]})
    truth = xr.DataArray([["local"], ["sequential"]], dims=("model", "dataset"),
                         coords={"model": ["a", "b"], "dataset": ["cues"]})
    out = cue_agreement(labelled, truth)
    assert out.exact.values.astype(bool).tolist() == [[[True, False, False]], [[False, True, True]]]
    # named: local is present in map 3 of a, and "no effect" names a local truth
    assert out.named.values.astype(bool).tolist() == [[[True, True, True]], [[False, True, True]]]
    table = out.agreement.sel(subset="all")
    assert float(table.sel(kind="exact", unit="map", stat="estimate")) == pytest.approx(3 / 6)
    assert float(table.sel(kind="named", unit="map", stat="estimate")) == pytest.approx(5 / 6)
    assert float(table.sel(kind="exact", unit="pair", stat="estimate")) == pytest.approx(1.0)   # majorities
    assert out.majority.values[1, 0] == "sequential"
    by_truth = out.agreement_by_truth
    assert float(by_truth.sel(truth_label="local", kind="named", stat="estimate")) == 1.0
    assert float(by_truth.sel(truth_label="sequential", kind="exact", stat="estimate")) == pytest.approx(2 / 3)
    assert int(by_truth.sel(truth_label="global", kind="exact", stat="n")) == 0
    # a pair whose model relies on none of the cues has no known answer: left out of "known"
    truth_none = truth.copy(data=[["no reliance"], ["sequential"]])
    known = cue_agreement(labelled, truth_none).agreement.sel(subset="known", kind="exact", unit="map")
    assert int(known.sel(stat="n")) == 3 and float(known.sel(stat="estimate")) == pytest.approx(2 / 3)


def test_cue_study_end_to_end_on_oracles(oracle_cues, tmp_path):
    result = oracle_cues
    assert result.cue_truth.sel(dataset="cues").values.tolist() == ["sequential", "local"]
    # a chain to the source: the sequential oracle's maps name it; the local oracle has no effect
    assert bool(result.present.sel(model="sequential", dataset="cues", strategy="sequential").any())
    assert set(result.label.sel(model="local", dataset="cues").values.tolist()) == {"no effect"}
    assert float(result.agree_agreement.sel(subset="all", kind="named", unit="map", stat="n")) == 4
    back = load(save(result, tmp_path / "cues.nc"))
    text = format_cues(back, command="pdcr-lab cues --test")
    assert "pdcr-lab cues --test" in text and "| sequential | cues |" in text


# -- attribution accuracy of the baselines ---------------------------------------------------------
METHODS = {"occlusion_zero": Method("occlusion_zero"), "random": Method("random")}


@pytest.fixture(scope="module")
def oracle_cues():
    return cue_study(["sequential", "local"], CueSettings(images=2, fine=2), datasets=("cues",), loader=_loader,
                     log=lambda s: None)


@pytest.fixture(scope="module")
def result(oracle_cues):
    return cue_attribution(oracle_cues, METHODS, loader=_loader, log=lambda s: None)


def test_methods_share_the_cue_studys_maps_and_truth(oracle_cues, result):
    assert result.method.values.tolist() == ["pdcr", "occlusion_zero", "random"]
    assert result.truth.sel(dataset="cues").values.tolist() == ["sequential", "local"]
    # PdCR's row is the cue study's own labels and maps, in support units (larger = supports more)
    pdcr_labels = result.label.sel({"method": "pdcr"}).transpose(*oracle_cues.label.dims)
    assert pdcr_labels.values.tolist() == oracle_cues.label.values.tolist()
    np.testing.assert_array_equal(result.support.sel({"method": "pdcr"}).values,
                                  -oracle_cues.ate.transpose("model", "dataset", "image", ...).values)
    # occluding a chain block cuts the sequential oracle's connection: the chain is named where PdCR names it
    occlusion = result.label.sel({"method": "occlusion_zero", "dataset": "cues"})
    assert "sequential" in occlusion.sel(model="sequential").values.tolist()
    # the local oracle reads only the RoI's own structure: no block outside moves it, a hit for a local truth
    assert set(occlusion.sel(model="local").values.tolist()) == {"no effect"}
    assert float(result.named.sel({"method": "occlusion_zero", "model": "local"}).mean()) == 1.0
    # the random control spreads over the grid: "global" everywhere, so it never names the local truth
    assert set(np.ravel(result.label.sel({"method": "random"}).values).tolist()) == {"global"}
    assert float(result.named.sel({"method": "random", "model": "local"}).mean()) == 0.0
    assert int(result.accuracy.sel({"method": "random", "subset": "all", "kind": "named", "stat": "n"})) == 4
    # balanced: every cue truth with maps counts alike (here sequential and local)
    by_truth = result.accuracy_by_truth.sel(truth_label=["local", "sequential"], stat="estimate")
    np.testing.assert_allclose(result.accuracy_balanced.values, by_truth.mean("truth_label").transpose(
        "method", "kind").values)


def test_paired_counts_and_p_follow_the_per_map_hits(result):
    for kind in ("exact", "named"):
        ref = result[kind].sel({"method": "pdcr"}).values.ravel().astype(bool)
        for m in ("occlusion_zero", "random"):
            other = result[kind].sel({"method": m}).values.ravel().astype(bool)
            test = result.vs_pdcr.sel({"method": m, "kind": kind})
            only_a, only_b = int((ref & ~other).sum()), int((~ref & other).sum())
            assert (int(test.sel(test="pdcr_only")), int(test.sel(test="method_only"))) == (only_a, only_b)
            p = float(test.sel(test="p"))
            if only_a + only_b:
                assert p == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
                assert float(test.sel(test="p_holm")) >= p
            else:
                assert np.isnan(p)


def test_result_round_trips_and_formats(result, tmp_path):
    back = load(save(result, tmp_path / "cue_attribution.nc", effects=False), effects=False)
    text = format_cue_attribution(back, command="pdcr-lab cue-attribution --test")
    assert "pdcr-lab cue-attribution --test" in text
    assert "| occlusion_zero | " in text and "| random | " in text


def test_refuses_other_rois_and_pdcr_among_the_methods(oracle_cues):
    with pytest.raises(ValueError, match="must not contain 'pdcr'"):
        cue_attribution(oracle_cues, {"pdcr": Method("pdcr")}, loader=_loader, log=lambda s: None)
    moved = oracle_cues.assign(roi_row=oracle_cues.roi_row + 8)
    with pytest.raises(ValueError, match="RoIs .*roi_row.* differ from the cue study's"):
        cue_attribution(moved, {"random": Method("random")}, loader=_loader, log=lambda s: None)
    with pytest.raises(ValueError, match="cues lacks"):
        cue_attribution(oracle_cues.drop_vars("cue_truth"), METHODS, loader=_loader, log=lambda s: None)


def test_a_method_that_does_not_apply_is_left_out_and_named(oracle_cues):
    # Grad-CAM needs a convolution the oracles do not have: its pairs are left out, the others still count
    result = cue_attribution(oracle_cues, {"gradcam": Method("gradcam"), "random": Method("random")}, loader=_loader,
                             log=lambda s: None)
    failures = json.loads(result.attrs["failures"])
    assert set(failures) == {"sequential/cues/gradcam", "local/cues/gradcam"}
    assert "no layer with a (B, C, h, w) output" in failures["local/cues/gradcam"]
    assert set(np.ravel(result.label.sel({"method": "gradcam"}).values).tolist()) == {"not explained"}
    assert int(result.accuracy.sel({"method": "gradcam", "subset": "all", "kind": "named", "stat": "n"})) == 0
    assert int(result.accuracy.sel({"method": "random", "subset": "all", "kind": "named", "stat": "n"})) == 4
    with pytest.raises(RuntimeError, match="no method could explain"):
        cue_attribution(oracle_cues, {"gradcam": Method("gradcam")}, loader=_loader, log=lambda s: None)
