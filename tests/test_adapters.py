"""pdcr_lab.adapters: how a model is read (output selection, activation, class, normalisation),
directly and through :func:`pdcr_lab.explain`, and the errors the adapter raises."""

from __future__ import annotations

import pytest
import torch

from pdcr_lab import explain
from pdcr_lab.adapters import ModelAdapter
from pdcr_lab.testing import (
    AmbiguousDictModel,
    DictOutputModel,
    LogitModel,
    NormalisedInputModel,
    TupleOutputModel,
    assert_effects_equal,
)

ROI = (12, 12, 8, 8)


def test_dict_and_tuple_outputs_and_normalisation(tiny_net, image):
    base = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    for model, kwargs in [
        (DictOutputModel(tiny_net), {}),
        (DictOutputModel(tiny_net, key="seg"), {"output_key": "seg"}),
        (TupleOutputModel(tiny_net), {}),
        (NormalisedInputModel(tiny_net), {"normalize": ([0.5] * 3, [0.25] * 3)}),
    ]:
        ds = explain(model, image, roi=ROI, intervention="zero", block=4, **kwargs)
        assert_effects_equal(ds, base, variables=["ate"], rtol=0, atol=1e-4)


def test_logit_model_with_sigmoid_activation(tiny_net, image):
    base = explain(tiny_net, image, roi=ROI, intervention="zero", block=4)
    ds = explain(LogitModel(tiny_net), image, roi=ROI, intervention="zero", block=4, activation="sigmoid")
    assert_effects_equal(ds, base, variables=["ate"], rtol=0, atol=1e-3)


def test_two_channels_default_to_class_one_with_softmax():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]]).reshape(1, 2, 1, 2)  # pixel 0: class 0, pixel 1: class 1
    adapter = ModelAdapter(torch.nn.Identity())
    adapter.check_output(logits, (1, 2))
    assert adapter.class_index == 1 and adapter.n_classes == 2
    assert adapter.binary(logits).tolist() == [[[0.0, 1.0]]]
    torch.testing.assert_close(adapter.probability(logits), torch.softmax(logits, dim=1)[:, 1])


def test_one_channel_threshold_and_activations():
    scores = torch.tensor([0.2, 0.6, 2.0]).reshape(1, 1, 1, 3)
    plain = ModelAdapter(torch.nn.Identity(), threshold=0.5)
    plain.check_output(scores, (1, 3))
    assert plain.binary(scores).tolist() == [[[0.0, 1.0, 1.0]]]
    torch.testing.assert_close(plain.prediction(scores, "probability"), scores[:, 0])
    logit = ModelAdapter(torch.nn.Identity(), activation="sigmoid", threshold=0.7)
    torch.testing.assert_close(logit.probability(scores), torch.sigmoid(scores[:, 0]))
    assert logit.binary(scores).tolist() == [[[0.0, 0.0, 1.0]]]  # sigmoid: 0.55, 0.65, 0.88


def test_normalisation_is_applied_before_the_model():
    adapter = ModelAdapter(torch.nn.Identity(), normalize=([0.5, 0.0], [0.25, 2.0]))
    seen = adapter.logits(torch.ones(1, 2, 2, 2))  # the identity shows what the model receives
    assert seen[0, 0].unique().tolist() == [2.0] and seen[0, 1].unique().tolist() == [0.5]


def test_expected_channels_reads_the_first_convolution():
    assert ModelAdapter(torch.nn.Sequential(torch.nn.Conv2d(5, 2, 1), torch.nn.Conv2d(2, 1, 1))).expected_channels() == 5
    assert ModelAdapter(torch.nn.Identity()).expected_channels() is None


# -- errors raised by the adapter ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_index": 3}, r"class_index=3 is out of range for a one-channel output"),
        ({"activation": "softmax"}, r"activation='softmax' needs an output with more than one channel"),
    ],
)
def test_bad_arguments_for_a_one_channel_model(tiny_net, image, quick_explain, kwargs, match):
    with pytest.raises(ValueError, match=match):
        quick_explain(tiny_net, image, **kwargs)


def test_output_of_wrong_spatial_size(image, quick_explain):
    model = torch.nn.Conv2d(3, 1, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match=r"output has spatial size \(16, 16\) but the image is \(32, 32\)"):
        quick_explain(model, image)


def test_class_index_out_of_range_for_multichannel(image, quick_explain):
    model = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match=r"the model outputs 3 channels; pass class_index \(0..2\)"):
        quick_explain(model, image)
    with pytest.raises(ValueError, match=r"class_index=5 is out of range for 3 output channels"):
        quick_explain(model, image, class_index=5)


def test_output_not_a_tensor_and_ambiguous_dict(image, quick_explain):
    with pytest.raises(ValueError, match=r"returns a dict with keys \['a', 'b'\]; pass output_key"):
        quick_explain(AmbiguousDictModel(), image)
    with pytest.raises(KeyError, match=r"output_key='c' not in the model's output keys"):
        quick_explain(AmbiguousDictModel(), image, output_key="c")


def test_tuple_output_key_out_of_range_and_output_of_wrong_rank(image):
    with pytest.raises(ValueError, match=r"output_key=2 does not select an element of the model's tuple of length 2"):
        ModelAdapter(TupleOutputModel(torch.nn.Identity()), output_key=2).logits(image[None])
    with pytest.raises(ValueError, match=r"the model's output must have shape \(B, K, H, W\)"):
        ModelAdapter(torch.nn.Flatten()).logits(image[None])
    with pytest.raises(ValueError, match=r"the model's output must have shape \(B, K, H, W\)"):
        ModelAdapter(DictOutputModel(torch.nn.Identity()), output_key="aux").logits(image[None])  # a scalar


def test_normalize_must_be_a_pair_with_positive_std():
    with pytest.raises(ValueError, match=r"normalize must be a \(mean, std\) pair"):
        ModelAdapter(torch.nn.Identity(), normalize=(0.5,))
    with pytest.raises(ValueError, match=r"normalize std must be positive"):
        ModelAdapter(torch.nn.Identity(), normalize=([0.5], [0.0]))


def test_not_a_module(image, quick_explain):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        quick_explain(lambda x: x, image)
