"""Tests of the zoo's input channel count: every architecture builds for C = 1..4 channels."""

from __future__ import annotations

import functools
import re

import pytest
import torch

import pdcr_lab
from pdcr_lab import zoo
from pdcr_lab.banks import PatchBank

NAMES = zoo.list()
CHANNELS = (1, 2, 3, 4)


def _build(name: str, c: int) -> zoo.ZooModel:
    """A C-channel model with distinct per-channel normalisation (so a mix-up of channels would show)."""
    torch.manual_seed(0)
    # re-wrapped: the model zoo.build returns normalises with ZooModel's 3-channel default
    net = zoo.build(name, in_channels=c).net
    return zoo.ZooModel(net, name=name, mean=torch.linspace(0.4, 0.6, c).tolist(), std=[0.25] * c)


@functools.cache
def _default_stages(name: str) -> tuple[str, ...]:
    return tuple(zoo.build(name).stages())


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_every_architecture_runs_on_c_channels(name, c):
    model = _build(name, c)
    assert model.channels == c
    x = torch.rand(2, c, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = model(x)
    assert y.shape == (2, 1, 64, 64)
    assert float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    y.mean().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)  # the input layer is wired to the output
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(g.isfinite().all()) for g in grads)
    # the channel count changes the input layer only: same stages, same order
    assert tuple(model.stages()) == _default_stages(name)
    for path in model.stages():
        model.get_submodule(path)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_channel_count_names_the_expected_one(name, c):
    model = _build(name, c)
    plural = "" if c == 1 else "s"
    message = rf"{name}: input must be a \(B, {c}, H, W\) tensor, got \(2, {c + 1}, 64, 64\) " \
              rf"\(this model takes {c} channel{plural}\)"
    with pytest.raises(ValueError, match=message):
        model(torch.rand(2, c + 1, 64, 64))


@pytest.mark.parametrize("name", NAMES)
def test_only_the_input_layer_depends_on_the_channel_count(name):
    torch.manual_seed(0)
    default = zoo.build(name).state_dict()
    torch.manual_seed(0)
    rgb = zoo.build(name, in_channels=3).state_dict()
    # C = 3 is today's model exactly (the shipped checkpoints load into it), initialisation included
    assert list(rgb) == list(default)
    for key, value in default.items():
        assert torch.equal(rgb[key], value), key
    default_shapes = _shapes(zoo.build(name))
    for c in (1, 2, 4):
        shapes = _shapes(zoo.build(name, in_channels=c))
        assert list(shapes) == list(default_shapes)
        changed = {k for k in shapes if shapes[k] != default_shapes[k]}
        assert changed, f"{name}: no layer takes the {c} input channels"
        for k in changed:  # input weights (cout, cin, kh, kw): only cin differs
            assert shapes[k][:1] + shapes[k][2:] == default_shapes[k][:1] + default_shapes[k][2:], k
            assert (shapes[k][1], default_shapes[k][1]) == (c, 3), k


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
@pytest.mark.parametrize("name", NAMES)
def test_invalid_in_channels_are_refused(name, bad):
    with pytest.raises(ValueError, match=re.escape(f"in_channels={bad!r} is not valid; expected a positive integer")):
        zoo.build(name, in_channels=bad)


def test_zoo_model_channels_come_from_the_normalisation():
    net = torch.nn.Conv2d(1, 1, 1)
    rgb = zoo.ZooModel(torch.nn.Conv2d(3, 1, 1), name="rgb")
    assert rgb.channels == 3 and rgb.mean.flatten().tolist() == [0.5] * 3 and rgb.std.flatten().tolist() == [0.25] * 3
    gray = zoo.ZooModel(net, name="gray", channels=1)
    assert gray.channels == 1 and gray.mean.shape == gray.std.shape == (1, 1, 1, 1)
    assert (float(gray.mean), float(gray.std)) == (0.5, 0.25)
    assert zoo.ZooModel(net, name="gray", mean=[0.3], std=[0.2], channels=1).channels == 1
    assert zoo.ZooModel(net, name="gray", mean=[0.3]).std.flatten().tolist() == [0.25]  # std defaults per channel
    with pytest.raises(AttributeError):
        gray.channels = 3
    with pytest.raises(ValueError, match="mean has 1 entries and std 3"):
        zoo.ZooModel(net, name="gray", mean=[0.5], std=[0.25] * 3)
    with pytest.raises(ValueError, match="channels=2 disagrees with the 1 per-channel entries of mean and std"):
        zoo.ZooModel(net, name="gray", mean=[0.5], std=[0.25], channels=2)
    with pytest.raises(ValueError, match="channels=0 is not valid; expected a positive integer"):
        zoo.ZooModel(net, name="gray", channels=0)
    with pytest.raises(ValueError, match="mean must be a non-empty sequence"):
        zoo.ZooModel(net, name="gray", mean=[])


def test_state_dict_carries_the_channel_count():
    gray = _build("segnet", 1)
    again = zoo.ZooModel(zoo.build("segnet", in_channels=1).net, name="segnet", channels=1)
    again.load_state_dict(gray.state_dict())
    assert torch.equal(again.mean, gray.mean)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a 1-channel checkpoint does not fit an RGB model
        zoo.build("segnet").load_state_dict(gray.state_dict())


@pytest.mark.parametrize("intervention", ["natural", "zero"])
def test_a_one_channel_model_is_explained(intervention):
    model = _build("unet_bn", 1).eval()
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 64, 64, generator=g)
    bank = PatchBank.from_images(torch.rand(4, 1, 64, 64, generator=g), block=8, per_image=10)
    ds = pdcr_lab.explain(model, image, roi=(16, 16, 16, 16), bank=bank, intervention=intervention,
                          coarse=1, fine=2)
    assert ds["ate"].shape == (8, 8)
    assert bool(torch.from_numpy(ds["ate"].values).isfinite().all())
