"""Baselines against tiny models whose answer is known by construction, plus the shared contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pdcr_lab
from pdcr_lab.baselines import feature_layers, gradcam, misure, occlusion, random_scores, rise, rise_masks
from pdcr_lab.testing import (
    CenterSurroundModel,
    PlantedCauseModel,
    ThresholdedModel,
    TwoChannelLinear,
    assert_effects_equal,
)

ROI = (8, 8, 8, 8)


@pytest.fixture
def gray() -> torch.Tensor:
    return torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def planted():
    """PlantedCauseModel: the blob is segmented only while the marker block (0, 28) is bright."""
    image = torch.zeros(1, 32, 32)
    image[:, 8:24, 8:24] = 1.0
    image[:, 0:4, 28:32] = 1.0
    return PlantedCauseModel(marker=(0, 28, 4)), image


def test_gradcam_equals_hand_computed_linear_answer(gray):
    model = TwoChannelLinear(2.0, 0.5)
    expected = (2.0 - 0.5) * 64 / (32 * 32) * gray[0].double()
    for layer in ("features", "head", None):  # every layer of this model gives the same CAM
        ds = gradcam(model, gray, roi=ROI, layer=layer, activation="sigmoid", block=4)
        np.testing.assert_allclose(ds.cam_signed.values, expected.numpy(), rtol=1e-5)
    assert ds.attrs["layer"] == "head" and ds.attrs["score"] == "logit (output)"
    block_means = expected.reshape(8, 4, 8, 4).mean(dim=(1, 3)).numpy()
    np.testing.assert_allclose(ds.ate_raw.values, block_means, rtol=1e-5)
    np.testing.assert_allclose(ds.ate.values, np.where(ds.roi_block.values, 0.0, block_means), rtol=1e-5)
    assert ds.attrs["method"] == "gradcam" and ds.attrs["support_sign"] == 1


def test_gradcam_relu_and_signed_maps(gray):
    model = TwoChannelLinear(0.5, 2.0)  # the RoI score decreases with x: the signed CAM is negative
    relu = gradcam(model, gray, roi=ROI, activation="sigmoid", block=4)
    signed = gradcam(model, gray, roi=ROI, activation="sigmoid", block=4, relu=False)
    assert (relu.cam.values == 0).all() and (relu.ate.values == 0).all()
    assert (signed.cam_signed.values < 0).all() and (signed.ate.values[~signed.roi_block.values] < 0).all()
    assert signed.attrs["method"] == "gradcam_signed"


def test_gradcam_reads_logits_of_probability_models(gray):
    model = TwoChannelLinear(2.0, 0.5, probabilities=True)
    ds = gradcam(model, gray, roi=ROI, block=4)
    assert ds.attrs["score"] == "logit (model.logits)"
    np.testing.assert_allclose(ds.cam_signed.values, 1.5 * 64 / 1024 * gray[0].numpy(), rtol=1e-5)


def test_gradcam_bad_layer_lists_the_available_ones(gray):
    message = r"layer='nope' is not a module of the model; available layers .*'features', 'head'"
    with pytest.raises(ValueError, match=message):
        gradcam(TwoChannelLinear(1.0, 0.0), gray, roi=ROI, layer="nope", block=4)


def test_gradcam_layer_without_feature_map_output(gray):
    model = CenterSurroundModel(k=3)
    model.flat = nn.Flatten()  # registered but never called
    with pytest.raises(ValueError, match=r"layer='flat' does not output a \(B, C, h, w\) feature map"):
        gradcam(model, gray, roi=ROI, layer="flat", block=4)


def test_gradcam_refuses_a_non_differentiable_model(gray):
    with pytest.raises(ValueError, match=r"the model is not differentiable: its output carries no gradient"):
        gradcam(ThresholdedModel(), gray, roi=ROI, block=4)


def test_gradcam_leaves_the_model_as_it_found_it(gray):
    model = TwoChannelLinear(2.0, 0.5).train()
    gradcam(model, gray, roi=ROI, activation="sigmoid", block=4)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not model.features._forward_hooks and not model.head._forward_hooks


def test_feature_layers_in_forward_order(gray):
    assert feature_layers(TwoChannelLinear(1.0, 0.0), gray) == {"features": (2, 32, 32), "head": (1, 32, 32)}


def test_occlusion_finds_the_planted_marker(planted):
    model, image = planted
    ds = occlusion(model, image, roi=ROI, block=4)
    expected = np.zeros((8, 8))
    expected[0, 7] = -100.0  # only darkening the marker removes the RoI's segmentation
    np.testing.assert_allclose(ds.ate.values, expected, atol=1e-6)
    assert ds.attrs["method"] == "occlusion_zero" and ds.attrs["support_sign"] == -1


def test_occlusion_blur_stays_inside_the_receptive_field(gray):
    model = CenterSurroundModel(k=5)
    ds = occlusion(model, gray, roi=ROI, occluder="blur", block=4)
    # a 5x5 filter reaches 2 pixels: only blocks touching the RoI's 1-block ring can matter
    ring = np.zeros((8, 8), bool)
    ring[1:5, 1:5] = True
    assert not ds.ate.values[~ring].any()
    assert ds.attrs["method"] == "occlusion_blur"


def test_occlusion_rejects_an_unknown_occluder(gray):
    message = r"occluder='natural' is not supported; expected one of \['zero', 'blur', 'mean'\]"
    with pytest.raises(ValueError, match=message):
        occlusion(CenterSurroundModel(), gray, roi=ROI, occluder="natural", block=4)


def test_rise_ranks_the_planted_marker_first(planted):
    model, image = planted
    ds = rise(model, image, roi=ROI, n_masks=400, cell=8, block=4)
    scores = np.where(ds.roi_block.values, -np.inf, ds.ate.values)
    assert np.unravel_index(scores.argmax(), scores.shape) == (0, 7)
    assert ds.attrs["method"] == "rise" and ds.saliency.dims == ("y", "x")


def test_rise_is_independent_of_the_batch_size(planted):
    model, image = planted
    a = rise(model, image, roi=ROI, n_masks=50, cell=8, block=4, batch_size=7)
    b = rise(model, image, roi=ROI, n_masks=50, cell=8, block=4, batch_size=64)
    assert_effects_equal(a, b, variables=["ate"], rtol=1e-10, atol=0)


def test_rise_masks_follow_the_recipe():
    masks = rise_masks(2000, (32, 32), 8, 0.5, seed=0)
    assert masks.shape == (2000, 32, 32) and masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.5) < 0.02
    assert torch.equal(masks, rise_masks(2000, (32, 32), 8, 0.5, seed=0))


def test_misure_keeps_the_planted_marker(planted):
    model, image = planted
    ds = misure(model, image, roi=ROI, baseline="zero", block=4, steps=60)
    scores = np.where(ds.roi_block.values, -np.inf, ds.ate.values)
    assert np.unravel_index(scores.argmax(), scores.shape) == (0, 7)
    assert float(ds.final_dice) >= 0.9 and float(ds.sufficient_dice) >= 0.9
    assert ds.sufficient.values[0:4, 28:32].all(), "the sufficient region must reach the marker"
    others = ds.ate.values.copy()
    others[0, 7] = 0
    assert others.max() < 0.5 * ds.ate.values[0, 7]


def test_misure_sufficient_region_of_a_local_model_is_small(gray):
    image = (gray > 0.5).float()
    ds = misure(CenterSurroundModel(k=3), image, roi=ROI, baseline="zero", block=4, steps=0)
    assert float(ds.sufficient_radius) <= 4.0  # the 3x3 filter needs one pixel of context
    assert int(ds.segment) in (0, 1)


def test_misure_checks_its_hyper_parameters(gray):
    with pytest.raises(ValueError, match=r"sufficiency=1.5 must be in \(0, 1\]"):
        misure(CenterSurroundModel(), gray, roi=ROI, block=4, sufficiency=1.5)
    with pytest.raises(ValueError, match=r"stride=5 does not divide the 32x32 image"):
        misure(CenterSurroundModel(), gray, roi=ROI, block=4, stride=5)


BASELINES = {"gradcam": gradcam, "misure": misure, "occlusion": occlusion, "rise": rise, "random": random_scores}
EXPLAINERS = {"pdcr": pdcr_lab.explain, **BASELINES}
OPTIONS = {"pdcr": {"intervention": "zero"}, "misure": {"steps": 3}, "rise": {"n_masks": 20}}


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_one_signature_one_schema(name, tiny_net, image):
    explainer = EXPLAINERS[name]
    target = torch.zeros(32, 32, dtype=torch.bool)
    target[10:22, 10:22] = True
    ds = explainer(tiny_net, image, roi=ROI, target=target, seed=3, device="cpu", block=4, **OPTIONS.get(name, {}))
    pdcr_lab.validate(ds)
    assert ds.ate.dims == ("block_y", "block_x") and ds.attrs["seed"] == 3
    assert ds.attrs["method"].startswith(name if name != "occlusion" else "occlusion_")
    reference = pdcr_lab.explain(tiny_net, image, roi=ROI, target=target, intervention="zero", block=4)
    assert float(ds.m0) == pytest.approx(float(reference.m0))  # one outcome for every method
    many = explainer(tiny_net, image, roi=[ROI, (0, 0, 4, 4)], block=4, **OPTIONS.get(name, {}))
    assert many.ate.dims == ("roi", "block_y", "block_x") and many.sizes["roi"] == 2
    assert not tiny_net.training


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_bad_input_is_refused_at_the_boundary(name, tiny_net, image):
    with pytest.raises(ValueError, match=r"block=5 does not tile the 32x32 image"):
        BASELINES[name](tiny_net, image, roi=ROI, block=5)
    with pytest.raises(ValueError, match=r"roi=\(30, 30, 8, 8\).*out of bounds"):
        BASELINES[name](tiny_net, image, roi=(30, 30, 8, 8), block=4)
