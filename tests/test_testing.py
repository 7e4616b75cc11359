"""pdcr_lab.testing itself: the map comparison fails where it must, the reference loop computes what
the paper says, and the toy models have the answers their docstrings promise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdcr_lab import explain, stack
from pdcr_lab.schema import empty_effects
from pdcr_lab.testing import (
    AmbiguousDictModel,
    BranchyModel,
    CenterSurroundModel,
    ColumnsModel,
    DictOutputModel,
    FailingModel,
    LogitModel,
    NormalisedInputModel,
    OutOfMemoryAbove,
    PlantedCauseModel,
    RandomConvNet,
    SkipNet,
    ThresholdedModel,
    TupleOutputModel,
    TwoChannelLinear,
    assert_effects_equal,
    dice_points,
    randomise_parameters,
    reference_effects,
    reference_explain,
)


@pytest.fixture
def effects():
    ds = empty_effects(grid=(3, 4), block=4, seed=1)
    ds["ate"] = ds.ate.copy(data=np.arange(12.0).reshape(3, 4) - 5)
    ds["n_draws"] = ds.n_draws.copy(data=np.full((3, 4), 5, dtype=np.int32))
    return ds


# -- assert_effects_equal ----------------------------------------------------------------------


def test_equal_maps_pass_and_tolerances_apply(effects):
    assert_effects_equal(effects, effects.copy(deep=True))
    nudged = effects.assign(ate=effects.ate + 1e-6)
    with pytest.raises(AssertionError):
        assert_effects_equal(nudged, effects, rtol=0, atol=1e-7)
    assert_effects_equal(nudged, effects, rtol=0, atol=1e-5)
    assert_effects_equal(effects.assign(ate=effects.ate * (1 + 1e-7)), effects)  # default rtol 1e-5


def test_a_changed_value_is_named_with_its_block(effects):
    changed = effects.copy(deep=True)
    changed["ate"][2, 1] = 9.5  # was 4.0
    changed["ate"][0, 3] = -1.9  # was -2.0
    with pytest.raises(AssertionError) as info:
        assert_effects_equal(changed, effects)
    message = str(info.value)
    assert "'ate': 2 of 12 blocks differ" in message
    assert "largest difference 5.5 at block_y=2, block_x=1 (actual 9.5, expected 4.0)" in message
    assert "n_draws" not in message  # only what differs is listed


def test_counts_and_flags_must_match_exactly(effects):
    other = effects.copy(deep=True)
    other["n_draws"][1, 1] = 6
    with pytest.raises(AssertionError, match=r"'n_draws': 1 of 12 blocks differ \(exactly\); .* at block_y=1, block_x=1"):
        assert_effects_equal(other, effects, rtol=1.0, atol=10.0)


def test_a_missing_variable_fails(effects):
    with pytest.raises(AssertionError, match=r"'ate_raw': missing from actual"):
        assert_effects_equal(effects.drop_vars("ate_raw"), effects, variables=["ate", "ate_raw"])
    with pytest.raises(AssertionError, match=r"'ate_raw': missing from expected"):
        assert_effects_equal(effects, effects.drop_vars("ate_raw"))


def test_a_different_shape_fails(effects):
    smaller = empty_effects(grid=(2, 4), block=4, seed=1)
    with pytest.raises(AssertionError, match=r"'ate': different shape: actual has dims \('block_y', 'block_x'\) and shape \(2, 4\)"):
        assert_effects_equal(smaller, effects, variables=["ate"])
    stacked = stack({"a": effects, "b": effects}, dim="model")
    with pytest.raises(AssertionError, match=r"'ate': different shape"):
        assert_effects_equal(stacked, effects, variables=["ate"])


def test_stacked_maps_report_their_label(effects):
    a = stack({"unet": effects, "segnet": effects}, dim="model")
    b = a.copy(deep=True)
    b["ate"][1, 0, 2] = 100.0
    with pytest.raises(AssertionError, match=r"at model=segnet, block_y=0, block_x=2"):
        assert_effects_equal(b, a)
    relabelled = a.assign_coords(model=["unet", "vm_unet"])
    with pytest.raises(AssertionError, match=r"different 'model' labels"):
        assert_effects_equal(relabelled, a, variables=["ate"])


def test_nan_equals_nan_but_not_a_number(effects):
    a = effects.copy(deep=True)
    a["stderr"][0, 0] = np.nan
    assert_effects_equal(a, a.copy(deep=True))
    with pytest.raises(AssertionError, match=r"'stderr': 1 of 12 blocks differ .* largest difference inf"):
        assert_effects_equal(a, effects)


def test_attrs_are_compared_only_when_asked(effects):
    other = effects.copy()
    other.attrs = {**effects.attrs, "seed": 2, "batch_size": 7}
    assert_effects_equal(other, effects)
    with pytest.raises(AssertionError) as info:
        assert_effects_equal(other, effects, check_attrs=True)
    assert "attr 'seed': actual 2, expected 1" in str(info.value)
    assert "attr 'batch_size': missing from expected" in str(info.value)


def test_invalid_datasets_are_refused(effects):
    with pytest.raises(AssertionError, match=r"actual is not an effects dataset: .*missing attrs \['seed'\]"):
        bad = effects.copy()
        del bad.attrs["seed"]
        assert_effects_equal(bad, effects)


# -- the reference loop ----------------------------------------------------------------------------


def test_dice_points_by_hand():
    pred = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(dice_points(pred, target, torch.ones(2, 2))) == pytest.approx(50.0)
    assert float(dice_points(pred, target, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))) == pytest.approx(100.0)
    assert float(dice_points(pred * 0, target * 0, torch.ones(2, 2))) == 0.0  # empty: 0, not NaN


def test_reference_loop_on_a_planted_cause():
    image = torch.zeros(1, 16, 16)
    image[:, 4:8, 4:8] = 1.0
    image[:, 12:16, 12:16] = 1.0  # the marker
    model = PlantedCauseModel(marker=(12, 12, 4))
    ate, forwards = reference_explain(model, image, (4, 4, 4, 4), block=4)
    expected = np.zeros((4, 4))
    expected[3, 3] = -100.0
    np.testing.assert_allclose(ate, expected, atol=1e-3)
    assert forwards == 1 + 15
    ds = reference_effects(model, image, (4, 4, 4, 4), block=4)
    np.testing.assert_array_equal(ds.ate.values, ate)
    assert int(ds.forwards) == forwards and float(ds.m0) == pytest.approx(100.0)
    assert ds.roi_block.values.sum() == 1 and ds.roi_block.values[1, 1]


def test_reference_loop_screens_with_the_coarse_draws_and_estimates_with_fresh_ones():
    image = torch.zeros(1, 8, 8)
    image[:, :4, :4] = 1.0
    model = PlantedCauseModel(marker=(0, 4, 4), sharpness=30.0)
    image[:, :4, 4:] = 1.0  # marker bright
    bank = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])  # dark block: closes the gate
    table = np.array([[1, 1, 0, 0, 0, 1]] * 4)  # coarse draws 0-1, fine draws 2-5
    ds = reference_effects(model, image, (0, 0, 4, 4), bank_blocks=bank, table=table, block=4, coarse=2, fine=4)
    assert ds.screened.values.tolist() == [[False, True], [True, True]]  # coarse draws bright: no change
    assert ds.ate.values[0, 1] == 0.0 and ds.n_draws.values[0, 1] == 2
    table[1, :2] = [0, 1]  # the marker's coarse draws: one dark -> it survives to the fine stage
    ds = reference_effects(model, image, (0, 0, 4, 4), bank_blocks=bank, table=table, block=4, coarse=2, fine=4)
    assert not ds.screened.values[0, 1] and ds.n_draws.values[0, 1] == 4
    assert ds.ate.values[0, 1] == pytest.approx(-75.0, abs=1e-3)  # 3 of the 4 fresh draws are dark
    assert ds.stderr.values[0, 1] == pytest.approx(np.std([-100, -100, -100, 0], ddof=1) / 2, abs=1e-3)
    assert int(ds.forwards) == 1 + 3 * 2 + 4
    no_screen = reference_effects(model, image, (0, 0, 4, 4), bank_blocks=bank, table=table, block=4, coarse=0, fine=2)
    assert not no_screen.screened.any() and no_screen.n_draws.values[0, 1] == 2  # S = 0: no screening stage


# -- toy models ------------------------------------------------------------------------------------


def test_random_conv_net_is_fixed_by_its_seed_and_hovers_around_one_half():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)  # the global generator does not matter
    a = RandomConvNet(seed=4)(x)
    torch.manual_seed(456)
    b = RandomConvNet(seed=4)(x)
    assert torch.equal(a, b) and not torch.equal(a, RandomConvNet(seed=5)(x))
    assert 0.05 < float((a > 0.5).float().mean()) < 0.95
    shifted = RandomConvNet(seed=4, offset=10.0)(x)
    assert bool((shifted > a).all())


def test_randomise_parameters_is_seeded_and_scaled():
    layer = randomise_parameters(torch.nn.Linear(50, 40), seed=3, scale=2.0)
    again = randomise_parameters(torch.nn.Linear(50, 40), seed=3, scale=2.0)
    assert torch.equal(layer.weight, again.weight)
    assert 1.8 < float(layer.weight.detach().std()) < 2.2


def test_center_surround_has_a_k_by_k_receptive_field():
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 100.0  # one very bright pixel
    out = CenterSurroundModel(k=5)(x)[0, 0] > 0.5
    rows, cols = torch.nonzero(out, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 9, 5, 9)


def test_output_wrappers_give_the_wrapped_segmentation(tiny_net, image):
    x = image[None]
    expected = tiny_net(x)
    assert torch.equal(DictOutputModel(tiny_net)(x)["out"], expected)
    assert torch.equal(TupleOutputModel(tiny_net)(x)[0], expected)
    torch.testing.assert_close(NormalisedInputModel(tiny_net, 0.5, 0.25)((x - 0.5) / 0.25), expected)
    torch.testing.assert_close(torch.sigmoid(LogitModel(tiny_net)(x)), expected, atol=1e-5, rtol=0)
    assert set(AmbiguousDictModel()(x)) == {"a", "b"}


def test_failing_and_out_of_memory_models_fail_as_announced(tiny_net, image):
    with pytest.raises(RuntimeError, match="^boom$"):
        FailingModel("boom")(image[None])
    after = OutOfMemoryAbove(tiny_net, limit=0, free_calls=2)
    after(image[None])
    after(image[None].repeat(3, 1, 1, 1))
    with pytest.raises(torch.OutOfMemoryError):
        after(image[None])
    assert after.calls == 3
    above = OutOfMemoryAbove(tiny_net, limit=2)
    above(image[None].repeat(2, 1, 1, 1))
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        above(image[None].repeat(3, 1, 1, 1))
    assert above.largest == 2


def test_two_channel_linear_logit_is_a_minus_b_times_x():
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(TwoChannelLinear(2.0, 0.5)(x), 1.5 * x)
    torch.testing.assert_close(TwoChannelLinear(2.0, 0.5, probabilities=True)(x), torch.sigmoid(1.5 * x))


def test_thresholded_model_has_no_gradient():
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    out = ThresholdedModel()(x)
    assert set(out.unique().tolist()) <= {0.0, 1.0} and not out.requires_grad


def test_skip_net_and_branchy_model_shapes_and_the_dead_branch():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert tuple(SkipNet()(x).shape) == (2, 1, 16, 16)
    model = BranchyModel()
    before = model(x)
    torch.nn.init.normal_(model.dead.weight)  # the dead branch is multiplied by zero
    assert torch.equal(before, model(x))
    torch.nn.init.normal_(model.outside.weight)  # the outside branch only reaches rows 0-9
    after = model(x)
    assert torch.equal(before[..., 10:, :], after[..., 10:, :]) and not torch.equal(before, after)


def test_columns_model_dice_is_2p_over_p_plus_4():
    image = torch.zeros(1, 4, 20)
    image[:, :, 4:12] = 1.0  # blocks 1 and 2 bright: all four RoI columns are foreground
    roi = np.zeros((4, 20), bool)
    roi[:, :4] = True
    target = torch.from_numpy(roi)
    ds = explain(ColumnsModel(), image, roi=torch.from_numpy(roi), target=target, intervention="zero", block=4)
    assert float(ds.m0) == pytest.approx(100.0)
    # Zeroing block 1 leaves p = 1 column: DSC = 2 / 5; zeroing block 2 leaves p = 3: DSC = 6 / 7.
    np.testing.assert_allclose(ds.ate.values[0], [0.0, 40.0 - 100.0, 600 / 7 - 100.0, 0.0, 0.0], atol=1e-3)
