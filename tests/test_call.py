"""The shared call layer (pdcr_lab.call): what every explainer checks before it computes anything.

Each test here is a case that once gave a plausible-looking but wrong map or an unreadable error
(issue 15): the value range of the image and of the bank, non-finite or wrong-sized model outputs,
channels-last images, fractional RoIs, a fractional class index, devices the model cannot use, and a
meaningless M0 (an RoI with nothing to segment, a class that contradicts the target).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pdcr_lab
from pdcr_lab import PatchBank
from pdcr_lab.call import OutcomeWarning, prepare, resolve_device, to_unit_range, unit_bank
from pdcr_lab.adapters import ModelAdapter
from pdcr_lab.explainers import get_explainer, list_explainers
from pdcr_lab.testing import CenterSurroundModel, assert_effects_equal

ROI = (4, 4, 4, 4)


@pytest.fixture()
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    img = 0.1 + 0.2 * torch.rand(1, 16, 16, generator=g)
    img[:, 5:13, 5:13] += 0.6
    return img


@pytest.fixture()
def bank() -> PatchBank:
    g = torch.Generator().manual_seed(1)
    return PatchBank(torch.rand(10, 1, 4, 4, generator=g))


def _explain(model, image, **kw):
    return pdcr_lab.explain(model, image, roi=ROI, block=4, fine=4, **kw)


# -- value ranges ------------------------------------------------------------------------------
def test_uint8_images_are_divided_by_255_and_give_the_float_map(image, bank):
    model = CenterSurroundModel(k=3)
    as_bytes = (image * 255).round().to(torch.uint8)
    from_bytes = _explain(model, as_bytes.numpy(), bank=bank)
    from_floats = _explain(model, as_bytes.float() / 255, bank=bank)
    assert_effects_equal(from_bytes, from_floats, check_attrs=False)
    assert from_bytes.attrs["value_conversion"] == "uint8 / 255"
    assert from_floats.attrs["value_conversion"] == "none"


def test_uint16_images_are_divided_by_their_dtype_range():
    pixels, how = to_unit_range("image", np.array([[[0, 65535, 4095]]], dtype=np.uint16))
    assert how == "uint16 / 65535"
    np.testing.assert_allclose(pixels.numpy().ravel(), [0.0, 1.0, 4095 / 65535], rtol=1e-6)


@pytest.mark.parametrize(
    "scale, offset, match",
    [
        (255.0, 0.0, r"image values span \[25.*, 2.*\] but pdcr_lab takes floats in \[0, 1\].*divide by 255, or pass value_range=\(0, 255\)"),
        (2.0, -1.0, r"image values span \[-0.7.*\].*normalised to \[-1, 1\]: pass value_range=\(-1, 1\)"),
        (1000.0, 0.0, r"image values span .* convert them to \[0, 1\] or pass value_range"),
        (1.3, -0.15, r"image values span \[-0.0.*\] .*overshoot \[0, 1\] slightly .*clamp them"),
    ],
    ids=["float-0-255", "float-minus1-1", "float-large", "float-overshoot"],
)
def test_float_images_outside_0_1_are_refused(image, bank, scale, offset, match):
    with pytest.raises(ValueError, match=match):
        _explain(CenterSurroundModel(k=3), image * scale + offset, bank=bank)


def test_signed_integer_images_need_a_value_range(image):
    with pytest.raises(ValueError, match=r"image has the signed integer dtype int16; pass value_range"):
        _explain(CenterSurroundModel(k=3), (image * 1000).to(torch.int16), intervention="zero")


def test_a_bank_in_0_255_is_refused_beside_a_0_1_image(image, bank):
    loud = PatchBank(bank.blocks * 255)
    with pytest.raises(ValueError, match=r"bank values span \[.*\] but pdcr_lab takes floats in \[0, 1\]"):
        _explain(CenterSurroundModel(k=3), image, bank=loud)


def test_value_range_rescales_image_and_bank_together(image, bank):
    model = CenterSurroundModel(k=3)
    scaled = _explain(model, image * 255, bank=PatchBank(bank.blocks * 255), value_range=(0, 255))
    plain = _explain(model, image, bank=bank)
    np.testing.assert_allclose(scaled.ate_raw.values, plain.ate_raw.values, atol=1e-9)
    assert scaled.attrs["value_conversion"] == "(image - 0) / (255 - 0)"
    with pytest.raises(ValueError, match=r"image values span \[.*\], outside value_range=\(0, 1\)"):
        _explain(model, image * 255, bank=bank, value_range=(0, 1))
    with pytest.raises(ValueError, match=r"value_range=\(1.0, 1.0\) must have low < high"):
        _explain(model, image, bank=bank, value_range=(1.0, 1.0))


def test_unit_bank_keeps_a_bank_that_is_already_on_0_1(bank):
    assert unit_bank(bank) is bank
    with pytest.raises(TypeError, match=r"bank must be a pdcr_lab.PatchBank"):
        unit_bank(bank.blocks)


# -- model outputs -----------------------------------------------------------------------------
class NaNWhenDark(nn.Module):
    """Probabilities of a smoothed image, but NaN for images whose block (0, 0) is dark (or always)."""

    def __init__(self, always: bool = False) -> None:
        super().__init__()
        self.inner, self.always = CenterSurroundModel(k=3), always

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        dark = (x[:, :, :4, :4].mean(dim=(1, 2, 3)) < 0.05) | self.always
        return torch.where(dark[:, None, None, None], torch.full_like(out, float("nan")), out)


def test_a_nan_factual_output_is_refused(image):
    with pytest.raises(ValueError, match=r"NaN or Inf for 1 of 1 images \(the unperturbed image\)"):
        _explain(NaNWhenDark(always=True), image, intervention="zero")


def test_nan_outputs_of_some_perturbed_images_name_the_blocks(image):
    with pytest.raises(ValueError, match=r"NaN or Inf for 1 of \d+ images \(block \(0, 0\) draw 0\); non-finite outputs are never counted"):
        _explain(NaNWhenDark(), image, intervention="zero", tau=0.0)


@pytest.mark.parametrize("name", [n for n in list_explainers() if n not in ("components", "random")])
def test_every_explainer_refuses_non_finite_outputs(name, image, bank):
    spec = get_explainer(name)
    opts = {"bank": bank} if "bank" in (spec.parameters or set()) else {}
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        spec.explain(NaNWhenDark(always=True), image, roi=ROI, block=4, **opts)


class BatchFolder(nn.Module):
    """Returns one output for every two images: a model that mixes the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.sigmoid(x.mean(dim=1, keepdim=True))
        return out.reshape(-1, 2, *out.shape[1:]).mean(dim=1) if x.shape[0] % 2 == 0 else out[:0]


def test_outputs_of_the_wrong_batch_size_are_named_as_such(image):
    with pytest.raises(ValueError, match=r"the model returned 0 outputs for a batch of 1 images; it must return one output per input image"):
        _explain(BatchFolder(), image, intervention="zero")


# -- arguments ---------------------------------------------------------------------------------
def test_a_fractional_class_index_is_refused():
    with pytest.raises(TypeError, match=r"class_index must be an integer, got 1.5"):
        ModelAdapter(nn.Conv2d(1, 2, 1), class_index=1.5)


def test_a_channels_last_image_is_named_as_such(image):
    hwc = image.permute(1, 2, 0).expand(16, 16, 3).contiguous()
    with pytest.raises(ValueError, match=r"looks channels-last \(H, W, C\); .*permute\(2, 0, 1\)"):
        _explain(CenterSurroundModel(k=3, channels=3), hwc, intervention="zero")


def test_fractional_roi_coordinates_are_named_as_such(image):
    with pytest.raises(ValueError, match=r"roi=\(4.5, 4, 4, 4\) has non-integer coordinates"):
        pdcr_lab.explain(CenterSurroundModel(k=3), image, roi=(4.5, 4, 4, 4), block=4, intervention="zero")


def test_a_wrong_channel_count_is_explained_by_the_first_layer(image):
    model = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.Sigmoid())
    with pytest.raises(ValueError, match=r"image has 1 channels but the model's first layer expects 3"):
        _explain(model, image, intervention="zero")


# -- devices -----------------------------------------------------------------------------------
def test_meta_device_is_refused_and_the_model_keeps_its_weights(image):
    model = CenterSurroundModel(k=3)
    before = model.conv.weight.detach().clone()
    with pytest.raises(ValueError, match=r"device='meta' holds no data"):
        _explain(model, image, intervention="zero", device="meta")
    assert model.conv.weight.device.type == "cpu"
    assert torch.equal(model.conv.weight, before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_cuda_device_says_so(image):
    with pytest.raises(ValueError, match=r"device='cuda': no CUDA device is available"):
        _explain(CenterSurroundModel(k=3), image, intervention="zero", device="cuda")


@pytest.mark.parametrize("device, error, match", [
    ("banana", ValueError, r"device='banana' is not a device torch knows"),
    (3, TypeError, r"device must be a string such as 'cpu'"),
])
def test_unknown_devices_are_refused(device, error, match):
    with pytest.raises(error, match=match):
        resolve_device(device, ModelAdapter(nn.Conv2d(1, 1, 1)))


def test_prepare_records_the_conversion_and_the_bank(image, bank):
    call = prepare(CenterSurroundModel(k=3), (image * 255).round().to(torch.uint8), roi=ROI, caller="demo",
                   bank=bank, block=4)
    assert call.conversion == "uint8 / 255" and call.bank is bank
    assert call.attrs("demo")["value_conversion"] == "uint8 / 255"


# -- a meaningless M0 ----------------------------------------------------------------------------
SQUARE = (slice(8, 24), slice(8, 24))


@pytest.fixture()
def square() -> tuple[torch.Tensor, torch.Tensor]:
    """A 32 x 32 image with a bright 16 x 16 square in the middle, and the square's mask."""
    img = torch.full((1, 32, 32), 0.1)
    img[:, SQUARE[0], SQUARE[1]] = 0.9
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[SQUARE] = True
    return img, mask


class TwoClassBrightness(nn.Module):
    """Two-class logits (background, foreground) = (0.5 - x, x - 0.5) x 10: class 1 is the bright pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 10.0 * (x.mean(dim=1, keepdim=True) - 0.5)
        return torch.cat([-z, z], dim=1)


def _zero(model, image, roi, **kw):
    return pdcr_lab.explain(model, image, roi=roi, block=8, intervention="zero", **kw)


def test_an_empty_roi_warns_that_m0_is_zero_by_construction(square):
    img, mask = square
    with pytest.warns(OutcomeWarning, match=r"M0 = 0 DSC points with outcome='dice'. In RoI 0 at \(row, col, height, "
                      r"width\) = \(0, 0, 8, 8\) neither the model's factual prediction .* nor the prediction has a "
                      r"foreground pixel, so there is nothing to segment.*boundary_roi\(mask\)") as record:
        ds = _zero(CenterSurroundModel(k=3), img, (0, 0, 8, 8))
    assert float(ds.m0) == 0.0 and (ds.ate.values == 0).all()
    assert [w.filename for w in record if w.category is OutcomeWarning] == [__file__]  # points at the call
    # The result keeps the warning, so the views that show it later (stored, reloaded) say it too.
    (warning,) = [w for w in record if w.category is OutcomeWarning]
    assert ds.attrs["outcome_warning"] == str(warning.message)
    with pytest.warns(OutcomeWarning, match=r"neither the ground truth nor the prediction"):
        _zero(CenterSurroundModel(k=3), img, (0, 0, 8, 8), target=mask)


def test_the_views_show_the_warning_of_a_stored_map(square, tmp_path):
    pytest.importorskip("panel")
    from pdcr_lab.widgets import statistics_html

    img, _ = square
    with pytest.warns(OutcomeWarning):
        ds = _zero(CenterSurroundModel(k=3), img, (0, 0, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reloading warns about nothing: the warning is data now
        again = pdcr_lab.load(pdcr_lab.save(ds, tmp_path / "empty.nc"))
    shown = statistics_html(again, title="model")
    assert "data-warning" in shown and "nothing to segment" in shown and "boundary_roi" in shown
    fine = _zero(CenterSurroundModel(k=3), img, (8, 8, 16, 16))
    assert "outcome_warning" not in fine.attrs and "data-warning" not in statistics_html(fine)


def test_one_warning_lists_every_empty_roi(square):
    img, _ = square
    rois = [(0, 0, 8, 8), (4, 4, 8, 8), (24, 24, 8, 8)]  # the middle one is on the square's corner
    with pytest.warns(OutcomeWarning, match=r"RoI 0 at .* = \(0, 0, 8, 8\); RoI 2 at .* = \(24, 24, 8, 8\) neither") as record:
        _zero(CenterSurroundModel(k=3), img, rois)
    (warning,) = [w for w in record if w.category is OutcomeWarning]
    assert "RoI 1 " not in str(warning.message)


def test_a_ground_truth_without_foreground_in_the_roi_warns_about_false_positives(square):
    img, mask = square
    with pytest.warns(OutcomeWarning, match=r"RoI 0 .* the ground truth has no foreground pixel \(the prediction's "
                      r"foreground there is a false positive iou cannot score\)"):
        _zero(CenterSurroundModel(k=3), img, (8, 8, 8, 8), target=torch.zeros_like(mask), outcome="iou")


@pytest.mark.parametrize("kw", [{}, {"outcome": "soft_dice"}, {"target": "mask"}, {"outcome": "probability"}],
                         ids=["gt-free", "soft-dice", "ground-truth", "probability-empty-roi"])
def test_no_warning_for_a_boundary_roi_or_the_probability_outcome(square, kw):
    img, mask = square
    kw = {k: mask if v == "mask" else v for k, v in kw.items()}
    roi = (0, 0, 8, 8) if kw.get("outcome") == "probability" else pdcr_lab.rois.boundary_roi(mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutcomeWarning)
        ds = _zero(CenterSurroundModel(k=3), img, roi, **kw)
    assert float(ds.m0) > 0


def test_a_class_that_contradicts_the_target_warns_about_polarity(square):
    img, mask = square
    roi = (4, 4, 8, 8)  # a quarter on the square: M0 = 0 for the background class, 100 for its complement
    with pytest.warns(OutcomeWarning, match=r"M0 < 10 DSC points with outcome='dice' in RoI 0 at \(row, col, height, "
                      r"width\) = \(4, 4, 8, 8\) \(M0 = 0.00, complement 100.00\) although the ground truth has "
                      r"foreground there.*whole image the prediction matches the target.s background \(DSC 100.00\): "
                      r"the explained class \(class_index=0\).*target=~mask"):
        ds = _zero(TwoClassBrightness(), img, roi, target=mask, class_index=0)
    assert float(ds.m0) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutcomeWarning)
        right = _zero(TwoClassBrightness(), img, roi, target=mask, class_index=1)
        background = _zero(TwoClassBrightness(), img, roi, target=~mask, class_index=0)
    assert float(right.m0) == pytest.approx(100.0) and float(background.m0) == pytest.approx(100.0)


def test_a_model_that_merely_misses_the_structure_is_not_a_polarity_error(square):
    img, mask = square
    dim = img * 0.5  # the box filter never reaches 0.5: an empty prediction, M0 = 0 on the square
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutcomeWarning)
        ds = _zero(CenterSurroundModel(k=3), dim, (8, 8, 8, 8), target=mask)
    assert float(ds.m0) == 0.0
