"""The family of hand-built models with a known strategy (pdcr_lab/strategies/_family.py): the members
are what they claim, the labels are right on a small held-out subset (with its Wilson interval),
ambiguous maps are reported as such, the two failure cases of issue 17 get the right labels, and
the new descriptors and thresholds behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdcr_lab
from pdcr_lab import schema
from pdcr_lab.strategies import (
    FamilyMember,
    FamilyModel,
    StrategyThresholds,
    classify,
    descriptors,
    family_members,
    family_scene,
    format_family_report,
    legacy_classify,
    run_family,
    summarize_family,
    wilson_interval,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def zero_map(member: FamilyMember):
    scene = family_scene(member)
    model = FamilyModel(member, scene)
    return scene, model, pdcr_lab.explain(model, scene.image, roi=scene.roi, intervention="zero", block=4,
                                          incremental="off")


def roi_foreground(model: FamilyModel, image: torch.Tensor) -> float:
    """Fraction of the RoI predicted foreground."""
    r, c, h, w = model.scene.roi
    with torch.no_grad():
        return float((model(image[None])[0, 0, r : r + h, c : c + w] > 0.5).float().mean())


def zeroed(image: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    out = image.clone()
    out[:, block[0] * 4 : block[0] * 4 + 4, block[1] * 4 : block[1] * 4 + 4] = 0.0
    return out


def block_distance(roi_block: np.ndarray) -> np.ndarray:
    """Chebyshev distance in blocks of every block from the RoI blocks."""
    roi = np.argwhere(roi_block)
    grid = np.stack(np.meshgrid(*map(np.arange, roi_block.shape), indexing="ij"), -1)
    return np.abs(grid[:, :, None, :] - roi[None, None]).max(-1).min(-1)


# -- the members are what they claim ----------------------------------------------------------------------
@pytest.mark.parametrize("radius", [1, 4])
def test_a_local_member_sees_only_its_window(radius):
    member = FamilyMember("local", radius=radius, local_weight=8.0, seed=4)
    scene, model, ds = zero_map(member)
    assert roi_foreground(model, scene.image) == 1.0  # the factual RoI is foreground
    cheb = block_distance(ds.roi_block.values)
    reach = 1 + radius // 4  # blocks whose pixels come within `radius` px of the RoI
    assert (ds.ate.values[cheb > reach] == 0).all()
    assert (ds.ate.values[cheb == 1] < 0).any()


def test_a_sequential_member_dies_when_its_chain_is_cut():
    member = FamilyMember("sequential", sequential_weight=1.0, shape="straight", length=8, gap=1, seed=5)
    scene, model, ds = zero_map(member)
    assert roi_foreground(model, scene.image) == 1.0
    path = np.argwhere(scene.path & ~scene.gap)
    d = np.sqrt(((path[:, None] - np.argwhere(ds.roi_block.values)[None]) ** 2).sum(-1)).min(1)
    middle = tuple(path[np.argsort(d)[len(d) // 2]])
    assert roi_foreground(model, zeroed(scene.image, middle)) == 0.0  # a mid-path block kills the RoI
    far_off = tuple(np.argwhere(~scene.path & ~ds.roi_block.values & (block_distance(ds.roi_block.values) > 3))[0])
    assert roi_foreground(model, zeroed(scene.image, far_off)) == 1.0
    for block in np.argwhere(scene.gap):  # the bypass: either strand alone carries the chain
        assert roi_foreground(model, zeroed(scene.image, tuple(block))) == 1.0
    assert (ds.ate.values[scene.gap] == 0).all()
    assert (ds.ate.values[scene.path & ~scene.gap] == -100).sum() >= 6
    assert scene.extent == 8.0


def test_a_two_block_wide_vessel_needs_both_of_its_rows():
    member = FamilyMember("sequential", sequential_weight=1.0, shape="L", length=8, width=2, seed=6)
    scene, model, ds = zero_map(member)
    cut = ds.ate.values[scene.path] == -100
    assert cut.sum() >= 10  # both block rows of the band matter, not one
    assert 0 < float(classify(ds).chain_linearity) <= 0.5


def test_length_mode_effects_fall_along_the_chain():
    member = FamilyMember("sequential", sequential_weight=1.0, mode="length", decay=0.5, shape="straight", length=8)
    scene, _, ds = zero_map(member)
    roi = np.argwhere(ds.roi_block.values)
    path = np.argwhere(scene.path)
    order = np.argsort(np.sqrt(((path[:, None] - roi[None]) ** 2).sum(-1)).min(1))
    effects = np.abs(ds.ate.values[tuple(path[order].T)])
    assert (np.diff(effects[1:]) <= 0).all() and effects[1] > 5 * effects[-2] > 0


@pytest.mark.parametrize("statistic", ["mean", "dark"])
def test_a_global_member_is_moved_by_almost_every_block(statistic):
    _, _, ds = zero_map(FamilyMember("global", global_weight=0.5, statistic=statistic, seed=7))
    assert float(descriptors(ds).nonzero_fraction) >= 0.9


def test_only_keeps_one_term():
    member = FamilyMember("local+global", radius=4, local_weight=2.0, global_weight=0.2)
    model = FamilyModel(member)
    alone = model.only("global")
    assert alone.member.terms == {"global": 0.2} and alone.scene is model.scene


def test_the_grid_and_the_members_are_checked():
    members = family_members(seeds=(0, 1))
    assert len(members) == 2 * 117 and len({m.name for m in members}) == len(members)
    assert {m.family for m in members} == {"local", "global", "sequential", "local+global", "local+sequential",
                                           "global-on-path"}
    with pytest.raises(ValueError, match="needs a path"):
        FamilyMember("sequential", sequential_weight=1.0)
    with pytest.raises(ValueError, match="gap"):
        FamilyMember("sequential", sequential_weight=1.0, shape="diagonal", length=6, gap=1)
    with pytest.raises(ValueError, match="family"):
        FamilyMember("nonlocal")


# -- labels on a held-out subset ---------------------------------------------------------------------------
#: Seed 5 is used by no report run (the rule was shaped on seed 0; the report holds out 1, 2 and 3).
HELD_OUT = [
    FamilyMember("local", radius=2, local_weight=2.0, seed=5),
    FamilyMember("local", radius=6, local_weight=0.5, seed=5),
    FamilyMember("local", radius=8, local_weight=8.0, seed=5),
    FamilyMember("global", global_weight=0.5, statistic="dark", seed=5),
    FamilyMember("global", global_weight=0.5, statistic="mean", seed=5),
    FamilyMember("local+global", radius=4, local_weight=2.0, global_weight=0.6, statistic="dark", seed=5),
    FamilyMember("local+global", radius=8, local_weight=2.0, global_weight=0.6, statistic="dark", seed=5),
    FamilyMember("local+global", radius=2, local_weight=2.0, global_weight=0.02, statistic="mean", seed=5),
    FamilyMember("sequential", sequential_weight=1.0, shape="straight", length=6, seed=5),
    FamilyMember("sequential", sequential_weight=1.0, shape="L", length=8, width=2, seed=5),
    FamilyMember("sequential", sequential_weight=1.0, shape="diagonal", length=8, seed=5),
    FamilyMember("sequential", sequential_weight=1.0, shape="straight", length=2, seed=5),
    FamilyMember("sequential", sequential_weight=1.0, shape="L", length=8, gap=2, seed=5),
    FamilyMember("sequential", sequential_weight=1.0, mode="length", decay=0.7, shape="L", length=8, seed=5),
    FamilyMember("local+sequential", radius=4, local_weight=2.0, sequential_weight=0.2, shape="L", length=8, seed=5),
    FamilyMember("local+sequential", radius=4, local_weight=8.0, sequential_weight=0.5, mode="length", decay=0.7,
                 shape="straight", length=8, seed=5),
]


@pytest.fixture(scope="module")
def held_out():
    torch.set_num_threads(1)
    return run_family(HELD_OUT, dev_seeds=())


def test_labels_on_a_held_out_subset_meet_the_stated_accuracy(held_out):
    summary = summarize_family(held_out, split="held-out")
    after = summary.accuracy.sel(rule="after", group="all")
    before = summary.accuracy.sel(rule="before", group="all")
    # Stated: at least 14 of the 16 labels right (the full held-out grid: about 0.96; docs/strategy_family.md).
    assert int(summary.correct.sel(rule="after", group="all")) >= 14, held_out.label.values
    lower, upper = float(after.sel(stat="lower")), float(after.sel(stat="upper"))
    assert (lower, upper) == pytest.approx(wilson_interval(int(summary.correct.sel(rule="after", group="all")), 16))
    assert lower > 0.6
    assert float(after.sel(stat="estimate")) > float(before.sel(stat="estimate"))
    assert float(summary.present_accuracy.sel(rule="after", group="all", stat="estimate")) >= 0.75
    assert int(summary.confusion.sel(rule="after").sum()) == 16


def test_the_result_records_truth_and_labels(held_out):
    assert held_out.sizes == {"member": 16, "strategy": 3, "block_y": 12, "block_x": 12}
    np.testing.assert_allclose(held_out.true_share.sum("strategy"), 1.0)
    assert set(held_out.split.values) == {"held-out"}
    short = held_out.sel(member="sequential-q1-straight-w1-n2-s5")
    assert float(short.reach) < 3.5 and "local" in str(short.accepted.values).split("|")
    assert held_out.attrs["intervention"] == "zero" and held_out.attrs["threshold_present"] == 0.1


def test_ambiguous_members_are_reported_as_ambiguous(held_out):
    both = held_out.sel(member="local+sequential-r4-a2-q0.2-L-w1-n8-s5")
    assert (both.expected_present.values == 1.0).sum() == 2  # the construction has two strategies
    assert bool(both.ambiguous) and both.present.values.tolist() == [True, False, True]
    assert str(both.secondary.values) in ("local", "sequential")
    mixed = held_out.sel(member="local+global-r8-a2-g0.6-dark-s5")
    assert str(mixed.expected.values) == "mixed" and bool(mixed.ambiguous)
    for name in ("local-r2-a2-s5", "sequential-q1-straight-w1-n6-s5", "global-g0.5-dark-s5"):
        assert not bool(held_out.ambiguous.sel(member=name)), name


# -- the two failure cases of issue 17 ---------------------------------------------------------------------
def test_a_chain_of_weak_effects_next_to_a_strong_neighbourhood_is_seen():
    # A chain of -3 to -5.5 DSC points from the RoI to far blocks, next to near blocks of -10 to -35.
    weak = FamilyMember("local+sequential", radius=4, local_weight=8.0, sequential_weight=0.1, shape="L", length=8,
                        seed=8)
    # A chain whose effects fall away from the RoI: -100 and -33 next to it, -6 to -1 far away.
    falling = FamilyMember("sequential", sequential_weight=1.0, mode="length", decay=0.5, shape="straight", length=8,
                           seed=8)
    scene, _, ds = zero_map(weak)
    far = block_distance(ds.roi_block.values) >= 3
    chain = ds.ate.values[scene.path & far]
    assert ((chain <= -3) & (chain >= -5.5)).all() and len(chain) >= 4
    assert ds.ate.values[~far].min() < -25
    _, _, falling_map = zero_map(falling)
    old = legacy_classify([ds, falling_map], dim="image")
    new = classify([ds, falling_map], dim="image")
    assert old.label.values.tolist() == ["local", "local"]  # the failure
    assert float(old.share.sel(strategy="sequential").max()) == 0.0
    assert new.label.values.tolist() == ["local", "sequential"]
    assert bool(new.present.isel(image=0).sel(strategy="sequential")) and bool(new.ambiguous.isel(image=0))
    assert bool(new.is_path.all())
    assert float(new.confidence.isel(image=1)) > 0.5


def test_a_strong_global_term_is_global_not_mixed():
    # A weak local window (r = 2 px) and a whole-image mean that carries about 90% of the effect.
    member = FamilyMember("local+global", radius=2, local_weight=2.0, global_weight=0.2, seed=8)
    result = run_family([member], dev_seeds=())
    assert float(result.true_share.sel(strategy="global").item()) > 0.85  # by construction
    _, _, ds = zero_map(member)
    assert float(descriptors(ds).nonzero_fraction) >= 0.9  # effects on at least 90% of the blocks
    old, new = legacy_classify(ds), classify(ds)
    assert str(old.label.values) == "mixed" and float(old.confidence) < 0.2  # the failure
    assert str(new.label.values) == "global" and float(new.confidence) > 0.25
    truth = float(result.true_share.sel(strategy="global").item())
    assert abs(float(new.share.sel(strategy="global")) - truth) < abs(float(old.share.sel(strategy="global")) - truth)


# -- the new descriptors and thresholds --------------------------------------------------------------------
def effect_map(values: dict[tuple[int, int], float], roi=(5, 5, 2, 2)):
    ds = schema.empty_effects(grid=(12, 12), block=4)
    r, c, h, w = roi
    roi_block = np.zeros((12, 12), bool)
    roi_block[r : r + h, c : c + w] = True
    ate = np.zeros((12, 12))
    for key, value in values.items():
        ate[key] = value
    ate[roi_block] = 0.0
    return ds.assign(ate=(("block_y", "block_x"), ate), roi_block=(("block_y", "block_x"), roi_block))


def test_the_geometric_shares_sum_to_one_and_follow_their_definitions():
    ring = {(y, x): -20.0 for y in range(4, 8) for x in range(4, 8)}  # the blocks around the RoI
    chain = {(5, x): -3.0 for x in range(0, 4)}  # leading away to the left
    flat = {(y, x): -1.0 for y in range(12) for x in range(12)}
    out = descriptors([effect_map(ring | chain), effect_map(flat)], dim="image")
    parts = ["spread_share", "ring_near_share", "ring_far_share", "excess_near_share", "excess_far_share",
             "chain_share", "chain_route_share"]
    np.testing.assert_allclose(sum(out[p] for p in parts), 1.0)
    first, second = out.isel(image=0), out.isel(image=1)
    assert float(first.floor) == 0.0 and float(second.floor) == 1.0
    assert float(second.spread_share) == pytest.approx(1.0)  # a flat map is all spread
    assert float(first.chain_extent) == 5.0 and float(first.chain_linearity) == 1.0
    assert float(first.chain_share) == pytest.approx(3 * 3.0 / float(first.mass))  # (5, 0..2): d = 5, 4, 3
    assert float(first.ring_near_share) > 0.8  # the isotropic neighbourhood is its rings' level


def test_a_chain_too_short_to_lead_away_is_local():
    short = classify(effect_map({(5, x): -10.0 for x in range(2, 5)}))  # reaches d = 3 < 2.5 + 1
    assert not bool(short.is_path) and str(short.label.values) == "local"
    longer = classify(effect_map({(5, x): -10.0 for x in range(1, 5)}))  # reaches d = 4
    assert bool(longer.is_path) and str(longer.label.values) == "sequential"


def test_new_thresholds_are_checked_and_echoed():
    with pytest.raises(ValueError, match="present"):
        StrategyThresholds(present=1.5)
    with pytest.raises(ValueError, match="ring_blocks"):
        StrategyThresholds(ring_blocks=0)
    out = classify(effect_map({(5, 7): -1.0}), thresholds=StrategyThresholds(min_chain_length=2.0))
    assert out.attrs["threshold_min_chain_length"] == 2.0 and out.attrs["threshold_ring_blocks"] == 4.0
    assert {"present", "ambiguous", "is_path"} <= set(out.data_vars)


def test_wilson_interval_and_the_report(held_out):
    assert wilson_interval(0, 0) != wilson_interval(0, 0)  # NaN without trials
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and 0.69 < lo < 0.73
    text = format_family_report({"zero": held_out}, command="pytest", seconds=1.0)
    for heading in ("## The family", "## Accuracy, held out", "## Where the rule is still wrong",
                    "## Ambiguous maps", "## The rule's thresholds"):
        assert heading in text
    assert "`min_chain_length` | 1 |" in text and "Generated by `pytest`" in text


def test_the_legacy_rule_gives_the_old_labels_of_the_hand_made_maps():
    # The expectations tests/test_strategies.py held for classify before issue 17 (before the change,
    # legacy_classify gave the labels and shares of classify on all 306 maps of the family).
    maps = [
        effect_map({(4, 4): -3.0, (5, 7): -2.0, (7, 6): 1.0}),
        effect_map({(y, x): -0.5 for y in range(12) for x in range(12)}),
        effect_map({(5, x): -40.0 for x in range(7, 12)} | {(y, 11): -40.0 for y in range(0, 5)}),
        effect_map({(5, 7): -1.0, (0, 0): -1.0}),
        effect_map({}),
    ]
    out = legacy_classify(maps, dim="image")
    assert out.label.values.tolist() == ["local", "global", "sequential", "mixed", "no effect"]
    np.testing.assert_allclose(out.share.sel(image=1).values, [0.2, 0.8, 0.0], atol=0.05)
