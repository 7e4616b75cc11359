"""Faithfulness metrics pinned to hand-computed toy answers, naive loops and bad-input errors; the
bootstrap and the table of the comparison (the study that runs it is tested in tests/test_studies.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from pdcr_lab.baselines import gradcam, occlusion, random_scores
from pdcr_lab.faithfulness import (
    GateOracle,
    attribution_accuracy,
    auroc,
    average_precision,
    curve_auc,
    deletion_insertion,
    load_planted,
    make_planted,
    randomization_check,
    randomize_weights,
    rank_correlation,
    ranking,
    summarize,
    write_table,
)
from pdcr_lab.faithfulness._planted import PLANTED_DIR
from pdcr_lab.schema import empty_effects
from pdcr_lab.statistics import bootstrap_interval
from pdcr_lab.testing import ColumnsModel as Columns
from pdcr_lab.testing import dice_points


ROI_MASK = np.zeros((4, 20), bool)
ROI_MASK[:, :4] = True


def column_map(values, method="map", sign=1):
    ds = empty_effects((1, 5), 4, method=method, support_sign=sign)
    ds["ate"][:] = np.array([values], float)
    ds["ate_raw"][:] = ds["ate"]
    ds["roi_block"][:] = np.array([[True, False, False, False, False]])
    ds["roi_mask"][:] = ROI_MASK
    return ds


@pytest.fixture
def columns():
    return Columns(), torch.ones(1, 4, 20)


def test_deletion_insertion_equal_the_hand_computed_curves(columns):
    model, image = columns
    maps = {"good": column_map([0, 4, 3, 2, 1]), "bad": column_map([0, 1, 2, 3, 4])}
    res = deletion_insertion(model, image, maps, target=ROI_MASK, policies=["zero"], batch_size=3)
    # good ranking 1,2,3,4: deletion keeps p = 4, 1, 0, 0, 0 columns -> DSC 1, 2/5, 0, 0, 0
    good, bad = res.sel({"method": "good"}), res.sel({"method": "bad"})
    np.testing.assert_allclose(good.outcome.sel(curve="deletion")[0], [100, 40, 0, 0, 0], atol=1e-4)
    np.testing.assert_allclose(good.outcome.sel(curve="insertion")[0], [0, 600 / 7, 100, 100, 100], atol=1e-4)
    # AUC = 1/4 * (1/2 + 2/5) = 0.225 and 1/4 * (6/7 + 1 + 1 + 1/2) = 0.8392857
    assert float(good.auc.sel(policy="zero", curve="deletion")) == pytest.approx(0.225, abs=1e-6)
    assert float(good.auc.sel(policy="zero", curve="insertion")) == pytest.approx(0.8392857, abs=1e-6)
    assert float(bad.auc.sel(policy="zero", curve="deletion")) == pytest.approx(0.8392857, abs=1e-6)
    assert float(bad.auc.sel(policy="zero", curve="insertion")) == pytest.approx(0.225, abs=1e-6)
    assert list(res.method.values) == ["good", "bad", "random"] and float(res.m0) == 100.0
    np.testing.assert_array_equal(res.blocks.values, [0, 1, 2, 3, 4])


def test_subsampled_steps_and_pdcr_sign(columns):
    model, image = columns
    pdcr_like = column_map([0, -4, -3, 0, 0], method="pdcr", sign=-1)  # most negative first
    res = deletion_insertion(model, image, pdcr_like, target=ROI_MASK, policies=["zero"], steps=3, random_control=False)
    np.testing.assert_array_equal(res.blocks.values, [0, 2, 4])
    np.testing.assert_allclose(res.outcome.sel(curve="deletion")[0, 0], [100, 0, 0], atol=1e-4)
    assert float(res.auc.sel(curve="deletion")[0, 0]) == pytest.approx(0.25)  # x = 0, 1/2, 1 and y = 1, 0, 0


def test_curve_auc_definition():
    assert curve_auc(np.array([0, 0.5, 1]), np.array([100.0, 50.0, 0.0])) == pytest.approx(0.5)
    assert curve_auc(np.linspace(0, 1, 11), np.full(11, 100.0)) == pytest.approx(1.0)


def test_ranking_ties_follow_one_seeded_permutation():
    flat = column_map([0, 0, 0, 0, 0])
    assert sorted(ranking(flat, seed=1)) == [1, 2, 3, 4]
    assert list(ranking(flat, seed=1)) == list(ranking(column_map([0, 0, 0, 0, 0], method="other"), seed=1))
    assert list(ranking(column_map([0, 1, 5, 5, 2]), seed=0))[-2:] == [4, 1]
    assert list(ranking(column_map([0, -1, -5, 3, 0], sign=-1), seed=0))[:2] == [2, 1]


def naive_curves(model, image, order, fill, target, roi, ks):
    """One forward per step, by hand: deletion and insertion outcomes for a ranking at the steps `ks`."""
    c, h, w = image.shape
    out = {"deletion": [], "insertion": []}
    block = 4
    cand = [p for p in range(64) if not roi[(p // 8) * block, (p % 8) * block]]
    for k in ks:
        for curve in out:
            x = image.clone()
            replaced = order[:k] if curve == "deletion" else [p for p in cand if p not in order[:k]]
            for p in replaced:
                ys, xs = (p // 8) * block, (p % 8) * block
                x[:, ys : ys + block, xs : xs + block] = fill[:, ys : ys + block, xs : xs + block]
            with torch.no_grad():
                pred = (model(x[None])[:, 0] > 0.5).float()
            out[curve].append(float(dice_points(pred, target, torch.from_numpy(roi).float())[0]))
    return out


@pytest.mark.parametrize("policy", ["natural", "blur"])
def test_batched_curves_equal_a_naive_loop(policy, tiny_net, image, small_bank):
    target = torch.zeros(32, 32)
    target[8:20, 8:20] = 1
    ds = occlusion(tiny_net, image, roi=(12, 12, 8, 8), block=4)
    res = deletion_insertion(tiny_net, image, ds, target=target, policies=[policy], bank=small_bank, batch_size=17,
                             random_control=False, steps=13)
    from pdcr_lab.call import replacement_image

    fill = replacement_image(policy, image, 4, bank=small_bank, seed=0)
    ks = [int(k) for k in res.blocks.values]
    expected = naive_curves(tiny_net, image, list(ranking(ds)), fill, target, ds.roi_mask.values, ks)
    for curve in ("deletion", "insertion"):
        np.testing.assert_allclose(res.outcome.sel(curve=curve)[0, 0], expected[curve], atol=1e-3)
    assert np.ptp(expected["deletion"]) > 1, "the toy must have real effects"


def test_batch_size_does_not_change_the_curves(tiny_net, image, small_bank):
    ds = occlusion(tiny_net, image, roi=(12, 12, 8, 8), block=4)
    a = deletion_insertion(tiny_net, image, ds, bank=small_bank, batch_size=5, steps=9)
    b = deletion_insertion(tiny_net, image, ds, bank=small_bank, batch_size=256, steps=9)
    xr.testing.assert_allclose(a, b)
    assert list(a.policy.values) == ["natural", "zero", "blur"]


def test_curves_refuse_bad_maps(columns, tiny_net, image):
    model, col_image = columns
    wrong = empty_effects((2, 2), 4)
    grid_error = r"maps\['wrong'\] has a 2x2 block grid \(block=4\) but the 4x20 image with block=4 needs 1x5"
    with pytest.raises(ValueError, match=grid_error):
        deletion_insertion(model, col_image, {"pdcr": column_map([0, 1, 2, 3, 4]), "wrong": wrong}, target=ROI_MASK,
                           policies=["zero"])
    nan = column_map([0, 1, np.nan, 3, 4], method="gradcam")
    with pytest.raises(ValueError, match=r"maps\['gradcam'\] has 1 NaN or Inf values in 'ate'"):
        deletion_insertion(model, col_image, nan, target=ROI_MASK, policies=["zero"])
    with pytest.raises(ValueError, match=r"policies='noise' is not supported"):
        deletion_insertion(model, col_image, column_map([0, 1, 2, 3, 4]), target=ROI_MASK, policies=["noise"])
    with pytest.raises(ValueError, match=r"intervention='natural' needs bank=PatchBank"):
        deletion_insertion(model, col_image, column_map([0, 1, 2, 3, 4]), target=ROI_MASK)
    two = occlusion(tiny_net, image, roi=[(12, 12, 8, 8), (0, 0, 4, 4)], block=4)
    with pytest.raises(ValueError, match=r"has extra dims \['roi'\]"):
        deletion_insertion(tiny_net, image, two, policies=["zero"])
    other = occlusion(tiny_net, image, roi=(0, 0, 4, 4), block=4)
    with pytest.raises(ValueError, match=r"explains another RoI"):
        deletion_insertion(tiny_net, image, {"a": two.isel(roi=0), "b": other}, policies=["zero"])
    with pytest.raises(TypeError, match=r"maps must be an effects Dataset"):
        deletion_insertion(tiny_net, image, 3, policies=["zero"])


def test_rank_correlation_conventions():
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([0, 0, 0], [0, 0, 0]) == 1.0  # equal constant maps: nothing changed
    assert rank_correlation([0, 0, 0], [1, 2, 3]) == 0.0  # a constant map shares no ordering


def test_randomize_weights_is_seeded_and_leaves_the_model(tiny_net):
    before = [p.clone() for p in tiny_net.parameters()]
    state = torch.random.get_rng_state()
    a, b = randomize_weights(tiny_net, seed=1), randomize_weights(tiny_net, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(before, tiny_net.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not any(torch.equal(p, q) for p, q in zip(a.parameters(), tiny_net.parameters()))


def test_randomization_check_separates_model_dependent_maps(tiny_net, image):
    good = randomization_check(gradcam, tiny_net, image, roi=(12, 12, 8, 8), block=4)
    assert bool(good.passed) and abs(float(good.spearman)) < 0.5
    blind = randomization_check(random_scores, tiny_net, image, roi=(12, 12, 8, 8), block=4)
    assert float(blind.spearman) == 1.0 and not bool(blind.passed)  # ignores the model: must fail
    assert blind.attrs["method"] == "random"


def test_auroc_and_average_precision_by_hand():
    scores, labels = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool)
    assert auroc(scores, labels) == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs in order
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    assert auroc(np.array([1.0, 1.0]), np.array([1, 0], bool)) == 0.5  # a tie counts 1/2
    assert average_precision(np.array([1.0, 1.0]), np.array([1, 0], bool)) == 0.5  # ties count against
    # One class only: NaN (scikit-learn raises for AUROC and gives 0 for average precision).
    assert np.isnan(auroc(scores, np.zeros(4, bool))) and np.isnan(auroc(scores, np.ones(4, bool)))
    assert np.isnan(average_precision(scores, np.zeros(4, bool)))
    assert average_precision(scores, np.ones(4, bool)) == 1.0
    # The definitions, pair by pair and positive by positive, on scores with ties.
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 10, 60) / 10, rng.random(60) < 0.3
    pos, neg = s[y][:, None], s[~y][None, :]
    assert auroc(s, y) == pytest.approx(((pos > neg) + 0.5 * (pos == neg)).mean())
    at_least = s[None, :] >= s[y][:, None]
    assert average_precision(s, y) == pytest.approx(((at_least & y).sum(1) / at_least.sum(1)).mean())


def test_planted_tasks_are_built_as_documented():
    gate = make_planted("gate", 24, seed=3)
    assert gate.images.shape == (24, 3, 64, 64) and gate.images.dtype == torch.float32
    for i in range(24):
        assert bool(gate.masks[i].any()) == bool(gate.present[i]) == bool(gate.cause[i].any())
        if gate.present[i]:
            assert int(gate.cause[i].sum()) == 64  # one 8x8 block
    switch = make_planted("switch", 12, seed=3)
    assert all(int(c.sum()) == 256 for c in switch.cause)  # 2 x 2 blocks
    assert torch.equal(make_planted("gate", 4, seed=3).images, gate.images[:4])


def test_attribution_accuracy_of_the_oracle_is_perfect():
    from pdcr_lab.rois import boundary_roi

    data = make_planted("gate", 12, seed=5)
    i = int(np.flatnonzero(data.present)[0])
    roi = boundary_roi(data.masks[i], size=16, block=8)
    ds = occlusion(GateOracle(), data.images[i], roi=roi, target=data.masks[i])
    assert attribution_accuracy(ds, data.cause[i], data.blobs[i]) == (1.0, 1.0)
    flat = ds.copy(deep=True)
    flat["ate"][:] = 0
    area, precision = attribution_accuracy(flat, data.cause[i], data.blobs[i])
    assert area == 0.5 and precision < 0.1  # all tied: the one marker block sits behind every negative


def test_planted_checkpoints_match_their_manifest(tmp_path):
    if not (PLANTED_DIR / "MANIFEST.json").exists():
        pytest.skip("planted checkpoints not trained")
    manifest = json.loads((PLANTED_DIR / "MANIFEST.json").read_text())
    for task, meta in manifest.items():
        model, loaded = load_planted(task)
        assert loaded["sha256"] == meta["sha256"] and meta["test_dice"] > 0.9
    shutil.copytree(PLANTED_DIR, tmp_path / "planted")
    with open(tmp_path / "planted" / "gate.pt", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError, match=r"gate.pt has SHA-256 .* but MANIFEST.json records"):
        load_planted("gate", folder=tmp_path / "planted")
    with pytest.raises(FileNotFoundError, match=r"no planted checkpoint for task='gate'"):
        load_planted("gate", folder=tmp_path / "empty")


# -- bootstrap, summary and table ----------------------------------------------------------------------
def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = np.array([0.1, 0.4, 0.35, 0.8, 0.5])
    a = bootstrap_interval([values], n_boot=300, rng=3)
    assert a[0] == pytest.approx(values.mean()) and a[1] <= a[0] <= a[2]
    np.testing.assert_array_equal(a, bootstrap_interval([values], n_boot=300, rng=3))


@pytest.mark.parametrize("sample", [[0.7], [0.7, 0.7, 0.7]])
def test_bootstrap_interval_of_a_degenerate_sample_is_the_value(sample):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy DegenerateDataWarning, no NaN
        assert bootstrap_interval([sample]).tolist() == pytest.approx([0.7, 0.7, 0.7])


def test_bootstrap_interval_of_two_samples_with_a_single_value():
    diff = lambda a, b, axis=-1: np.mean(b, axis=axis) - np.mean(a, axis=axis)  # noqa: E731
    est, lo, hi = bootstrap_interval([[1.0], [2.0, 4.0, 3.0]], diff, n_boot=200, rng=0)
    assert est == pytest.approx(2.0) and 1.0 <= lo <= est <= hi <= 3.0
    assert np.isnan(bootstrap_interval([[], [1.0, 2.0]], diff)).all()


def test_bootstrap_interval_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"level=1.5 must lie in \(0, 1\)"):
        bootstrap_interval([[1.0, 2.0]], level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval([[1.0, 2.0]], n_boot=0)


def _fake_benchmark() -> xr.Dataset:
    rng = np.random.default_rng(0)
    coords = {"model": ["a"], "dataset": ["lesions"], "image": [0, 1, 2], "method": ["pdcr", "random"],
              "policy": ["zero"], "curve": ["deletion", "insertion"]}
    auc = rng.random((1, 1, 3, 2, 1, 2))
    auc[0, 0, :, 0, 0, 0] = 0.1  # pdcr deletes best on every image (and never varies)
    seconds = np.ones((1, 1, 3, 2))
    return xr.Dataset(
        {"auc": (("model", "dataset", "image", "method", "policy", "curve"), auc),
         "seconds": (("model", "dataset", "image", "method"), seconds),
         "spearman": (("model", "dataset", "method"), [[[0.1, 1.0]]]),
         "sanity_passed": (("model", "dataset", "method"), [[[1.0, 0.0]]]),
         "sanity_constant": (("model", "dataset", "method"), [[[0.0, 0.0]]])},
        coords=coords,
        attrs={"roi_size": 16, "seed": 0, "steps": 5, "wall_seconds": 1.0, "missing": json.dumps(["b/lesions"])},
    )


def test_summary_and_table_of_a_benchmark_result(tmp_path):
    result = _fake_benchmark()
    summary = summarize(result, n_boot=100)
    cell = summary.summary.sel({"model": "a", "dataset": "lesions", "method": "pdcr", "metric": "deletion_zero"}).values
    assert cell.tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert summary.summary.dims == ("model", "dataset", "method", "metric", "stat")
    path = write_table(result, summary, tmp_path / "t" / "table.md", command="test")
    text = path.read_text()
    assert "## Overall: lesions" in text and "b/lesions" in text and "| a | lesions | pdcr |" in text
    assert "Produced by `test`" in text
