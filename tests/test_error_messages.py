"""Bad input gets a clear error naming the argument, the value and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdcr_lab import PatchBank, explain

ROI = (12, 12, 8, 8)


def call(model, image, **kw):
    kw.setdefault("roi", ROI)
    kw.setdefault("intervention", "zero")
    kw.setdefault("block", 4)
    return explain(model, image, **kw)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"roi": (30, 30, 8, 8)}, ValueError, r"roi=\(30, 30, 8, 8\).*out of bounds for an image of 32x32"),
        ({"roi": (-1, 0, 4, 4)}, ValueError, r"out of bounds"),
        ({"roi": (4, 4, 0, 4)}, ValueError, r"roi=\(4, 4, 0, 4\) is empty"),
        ({"roi": np.zeros((32, 32), bool)}, ValueError, r"roi is an empty mask: it covers no pixel"),
        ({"roi": np.ones((16, 16), bool)}, ValueError, r"roi must have shape \(32, 32\)"),
        ({"roi": "centre"}, ValueError, r"roi must be a \(row, col, height, width\) box"),
        ({"roi": (0, 0, 32, 32)}, ValueError, r"the RoI covers every block"),
        ({"target": np.zeros((16, 16))}, ValueError, r"target must have shape \(32, 32\)"),
        ({"target": np.full((32, 32), 3)}, ValueError, r"target must be binary"),
        ({"block": 5}, ValueError, r"block=5 does not tile the 32x32 image; use a block size in \[1, 2, 4, 8, 16, 32\]"),
        ({"block": 0}, ValueError, r"block=0 is too small"),
        ({"intervention": "natural"}, ValueError, r"intervention='natural' needs bank=PatchBank"),
        ({"intervention": "gaussian"}, ValueError, r"intervention='gaussian' is not supported; expected one of"),
        ({"outcome": "hausdorff"}, ValueError, r"outcome='hausdorff' is not supported"),
        ({"fine": 0}, ValueError, r"fine=0 is too small"),
        ({"tau": -1}, ValueError, r"tau=-1.0 is too small"),
        ({"tau": float("nan")}, ValueError, r"tau=nan must be finite"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer"),
        ({"batch_size": 0}, ValueError, r"batch_size=0 is too small"),
        ({"class_index": 3}, ValueError, r"class_index=3 is out of range for a one-channel output"),
        ({"activation": "relu"}, ValueError, r"activation='relu' is not supported"),
    ],
)
def test_bad_arguments(tiny_net, image, kwargs, error, match):
    with pytest.raises(error, match=match):
        call(tiny_net, image, **kwargs)


def test_wrong_image_rank(tiny_net, image):
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\), got tensor of shape \(1, 3, 32, 32\)"):
        call(tiny_net, image[None])


def test_wrong_channel_count(tiny_net, image):
    with pytest.raises(ValueError, match=r"image has 1 channels but the model's first layer expects 3"):
        call(tiny_net, image[:1])


def test_nan_in_image(tiny_net, image):
    image = image.clone()
    image[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"image contains 1 NaN or Inf values"):
        call(tiny_net, image)


def test_bank_block_size_and_channels(tiny_net, image):
    with pytest.raises(ValueError, match=r"bank holds 8x8 blocks but block=4"):
        call(tiny_net, image, intervention="natural", bank=PatchBank(torch.rand(3, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"bank blocks have 1 channels but the image has 3"):
        call(tiny_net, image, intervention="natural", bank=PatchBank(torch.rand(3, 1, 4, 4)))
    with pytest.raises(TypeError, match=r"bank must be a pdcr_lab.PatchBank"):
        call(tiny_net, image, intervention="natural", bank=torch.rand(3, 3, 4, 4))


def test_empty_bank():
    with pytest.raises(ValueError, match=r"blocks is empty"):
        PatchBank(torch.rand(0, 3, 4, 4))


def test_output_of_wrong_spatial_size(image):
    model = torch.nn.Conv2d(3, 1, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match=r"output has spatial size \(16, 16\) but the image is \(32, 32\)"):
        call(model, image)


def test_class_index_out_of_range_for_multichannel(image):
    model = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match=r"the model outputs 3 channels; pass class_index \(0..2\)"):
        call(model, image)
    with pytest.raises(ValueError, match=r"class_index=5 is out of range for 3 output channels"):
        call(model, image, class_index=5)


def test_output_not_a_tensor_and_ambiguous_dict(image):
    class Odd(torch.nn.Module):
        def forward(self, x):
            return {"a": x[:, :1], "b": x[:, :1]}

    with pytest.raises(ValueError, match=r"returns a dict with keys \['a', 'b'\]; pass output_key"):
        call(Odd(), image)
    with pytest.raises(KeyError, match=r"output_key='c' not in the model's output keys"):
        call(Odd(), image, output_key="c")


def test_model_failure_is_reported_with_the_image_shape(image):
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x.view(7, -1)

    with pytest.raises(ValueError, match=r"the model failed on the image of shape \(3, 32, 32\)"):
        call(Broken(), image)


def test_not_a_module(image):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        call(lambda x: x, image)
