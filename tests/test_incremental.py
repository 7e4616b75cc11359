"""Exact incremental inference (pdcr_lab.incremental): equal to full forward passes, or a clear fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pdcr_lab
from pdcr_lab import zoo
from pdcr_lab.incremental import Ineligible, eligibility, plan
from pdcr_lab.interventions import compose
from pdcr_lab.testing import assert_effects_equal


def _full(fn, image, cells, blocks, block, box):
    y0, y1, x0, x1 = box
    with torch.no_grad():
        return fn(compose(image, cells, blocks, block))[..., y0:y1, x0:x1]


def assert_exact(model: nn.Module, image: torch.Tensor, box, block: int, *, fn=None, seed: int = 0) -> float:
    """The plan's outputs on every block equal full forward passes; returns the plan's FLOPs ratio."""
    fn = fn or model
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p = plan(model, fn, image, box=box, block=block)
        gy, gx = image.shape[1] // block, image.shape[2] // block
        cells = torch.arange(gy * gx)
        blocks = torch.rand(len(cells), image.shape[0], block, block, generator=generator)
        fast = p(cells, blocks)
    full = _full(fn, image, cells, blocks, block, box)
    scale = max(1.0, float(full.abs().max()))
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5 * scale)
    return p.flops_ratio


class Graph(nn.Module):
    """A hand-built graph from a function of (module, x), so each adversarial case is one line."""

    def __init__(self, forward, channels: int = 2, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(channels, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)
        self.s2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.dil = nn.Conv2d(width, width, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.up3 = nn.ConvTranspose2d(width, width, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.ln = nn.LayerNorm(width)
        self.head = nn.Conv2d(width, 1, 1)
        self.body = forward
        self.eval()

    def forward(self, x):
        return self.body(self, x)


GRAPHS = {
    "conv chain": lambda m, x: m.head(F.relu(m.b(F.relu(m.a(x))))),
    "residual skip": lambda m, x: m.head(m.a(x) + m.b(F.relu(m.a(x)))),
    "stride 2 and transposed": lambda m, x: m.head(m.up(F.relu(m.bn(m.s2(m.a(x)))))),
    "transposed k3 output_padding": lambda m, x: m.head(m.up3(m.s2(m.a(x)))),
    "dilation": lambda m, x: m.head(m.dil(m.dil(m.a(x)))),
    "u-net skip concat": lambda m, x: m.head(m.b(torch.cat([m.a(x), m.up(F.max_pool2d(m.a(x), 2))], 1)[:, ::2])),
    "max pool with padding": lambda m, x: m.head(F.interpolate(F.max_pool2d(m.a(x), 3, 2, 1), scale_factor=2)),
    "avg pool": lambda m, x: m.head(F.interpolate(F.avg_pool2d(m.a(x), 2), scale_factor=2, mode="bilinear")),
    "bilinear to size": lambda m, x: m.head(F.interpolate(m.s2(m.a(x)), size=x.shape[-2:], mode="bilinear")),
    "nearest x4": lambda m, x: m.head(F.interpolate(F.max_pool2d(m.a(x), 4), scale_factor=4, mode="nearest")),
    "replicate pad": lambda m, x: m.head(F.conv2d(F.pad(m.a(x), (1, 1, 1, 1), mode="replicate"), m.b.weight)),
    "reflect pad": lambda m, x: m.head(F.conv2d(F.pad(m.a(x), (2, 0, 1, 1), mode="reflect"), m.b.weight)),
    "constant pad and crop": lambda m, x: m.head(F.conv2d(F.pad(m.a(x), (2, 2, 2, 2), value=0.5), m.b.weight)[..., 1:-1, 1:-1]),
    "channels-last layernorm": lambda m, x: m.head(m.ln(m.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)),
    "channel statistics": lambda m, x: m.head(m.a(x) - m.a(x).mean(1, keepdim=True)),
    "softmax over channels": lambda m, x: m.head(torch.softmax(m.a(x), dim=1)),
    "chunk and swap": lambda m, x: m.head(torch.cat(m.b(m.a(x)).chunk(2, 1)[::-1], 1)),
    "broadcast constant": lambda m, x: m.head(m.a(x) * torch.linspace(0, 1, x.shape[-1])),
    "sigmoid gate": lambda m, x: m.head(m.a(x) * torch.sigmoid(m.b(m.a(x)))),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("size, box", [((32, 32), (12, 20, 12, 20)), ((24, 40), (0, 6, 34, 40)), ((40, 24), (33, 40, 0, 5))])
def test_hand_built_graphs_equal_full_forwards(name, size, box):
    model = Graph(GRAPHS[name])
    image = torch.rand(2, *size, generator=torch.Generator().manual_seed(1))
    ratio = assert_exact(model, image, box, block=4)
    assert 0 < ratio <= 1


@pytest.mark.parametrize("block", [3, 5])
def test_odd_blocks_and_odd_sizes(block):
    model = Graph(GRAPHS["stride 2 and transposed"])
    image = torch.rand(2, 6 * block, 4 * block)
    assert_exact(model, image, (block, 3 * block, 2, 2 + block), block=block)


ELIGIBLE_ZOO = {"unet_bn", "unetpp", "hrnet"}


@pytest.mark.parametrize("name", zoo.list())
def test_zoo_eligibility_and_exactness(name):
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(2))
    ok, reason = eligibility(model, image)
    assert ok == (name in ELIGIBLE_ZOO), reason
    if ok:
        assert_exact(model, image, (40, 56, 24, 40), block=8)
        assert_exact(model, image, (0, 16, 80, 96), block=16)
    else:
        assert "(node " in reason and ":" in reason  # names the op and says why


FALLBACKS = {
    "GroupNorm normalises": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Conv2d(4, 1, 1)),
    "over the whole image (InstanceNorm": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4),
                                                                  nn.Conv2d(4, 1, 1)),
    "global operation": lambda: _SqueezeExcite(),
    "circular shift": lambda: _Roll(),
    "merges or moves the spatial axes": lambda: _Attention(),
}


class _SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y * torch.sigmoid(y.mean((2, 3), keepdim=True)))


class _Roll(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.roll(x, 3, dims=-1))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        tokens = y.flatten(2).transpose(1, 2)
        tokens = self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(tokens.transpose(1, 2).reshape(b, c, h, w))


def _case(size: int = 32):
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(3, size, size, generator=generator)
    target = np.zeros((size, size), bool)
    target[8:24, 8:24] = True
    return image, target


@pytest.mark.parametrize("phrase", sorted(FALLBACKS))
def test_ineligible_models_fall_back_and_say_why(phrase):
    torch.manual_seed(0)
    model = FALLBACKS[phrase]().eval()
    image, target = _case()
    ds = pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="zero", block=4,
                          incremental="auto")
    assert ds.attrs["forward_path"] == "full"
    assert phrase in eligibility(model, image)[1]
    with pytest.raises(ValueError, match="incremental='on'.*" + phrase.split()[0]):
        pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="zero", block=4,
                         incremental="on")


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.ConvTranspose2d(8, 8, 2, stride=2), nn.Conv2d(8, 1, 3, padding=1))
    for module in net:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("options", [
    {"intervention": "zero"},
    {"intervention": "blur"},
    {"intervention": "natural", "coarse": 3, "fine": 6},
    {"intervention": "natural", "mode": "adaptive", "coarse": 3, "fine": 6, "max_draws": 12},
    {"intervention": "mean", "roi": [(8, 8, 8, 8), (0, 24, 8, 8)]},
])
def test_explain_maps_equal_on_both_paths(options, small_bank):
    model = _bn_net()
    image, target = _case()
    options = {"roi": (8, 8, 8, 8), "bank": small_bank, **options}
    off = pdcr_lab.explain(model, image, target=target, block=4, incremental="off", **options)
    on = pdcr_lab.explain(model, image, target=target, block=4, incremental="on", **options)
    assert off.attrs["forward_path"] == "full" and on.attrs["forward_path"] == "incremental"
    assert "eligible" in on.attrs["forward_path_reason"]
    assert_effects_equal(on, off, atol=1e-6)
    assert int(on.forwards) == int(off.forwards)


def test_changed_weights_are_traced_again():
    model = _bn_net()
    image, _ = _case()
    box = (8, 16, 8, 16)
    assert_exact(model, image, box, block=4)
    with torch.no_grad():
        model[0].weight.mul_(-2.0)  # in place: same tensor, new version
    assert_exact(model, image, box, block=4)


class _Branching(nn.Module):
    """Takes a different path when the input's mean is high: a trace of one input is wrong for others."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return -y if float(x.mean()) > 0.5 else y


def test_value_dependent_control_flow_is_caught_by_the_check():
    torch.manual_seed(0)
    model = _Branching().eval()
    image = torch.full((3, 32, 32), 0.499)  # one block of ones lifts the mean above 0.5: the other branch
    target = np.zeros((32, 32), bool)
    target[8:24, 8:24] = True
    with pytest.raises(ValueError, match="differ from full forward passes|could not be traced"):
        pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="natural",
                         bank=pdcr_lab.PatchBank(torch.ones(4, 3, 4, 4)), coarse=2, fine=2, block=4,
                         incremental="on")


def test_auto_traces_only_jobs_worth_it(monkeypatch):
    from pdcr_lab import engine

    model = _bn_net()
    image, target = _case()
    kwargs = dict(roi=(8, 8, 8, 8), target=target, intervention="zero", block=4)
    monkeypatch.setattr(engine, "AUTO_MIN_MACS", 1e15)
    ds = pdcr_lab.explain(model, image, **kwargs)
    assert ds.attrs["forward_path"] == "full" and "a job this small" in ds.attrs["forward_path_reason"]
    monkeypatch.setattr(engine, "AUTO_MIN_MACS", 0)
    monkeypatch.setattr(engine, "AUTO_MAX_FLOPS_RATIO", 0.0)
    ds = pdcr_lab.explain(model, image, **kwargs)
    assert ds.attrs["forward_path"] == "full" and "gathers cost more" in ds.attrs["forward_path_reason"]
    monkeypatch.setattr(engine, "AUTO_MAX_FLOPS_RATIO", 1.0)
    runtime: dict = {}
    ds = pdcr_lab.explain(model, image, runtime=runtime, **kwargs)
    assert ds.attrs["forward_path"] == "incremental" and 0 < runtime["incremental_flops_ratio"] < 1


def test_fast_paths_and_off_say_so():
    model = _bn_net()
    image, target = _case()
    ds = pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="zero", block=4,
                          precision="bfloat16", incremental="auto")
    assert ds.attrs["forward_path"] == "full" and "precision='bfloat16'" in ds.attrs["forward_path_reason"]
    ds = pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="zero", block=4,
                          incremental="off")
    assert ds.attrs["forward_path_reason"] == "incremental='off'"


def test_bad_incremental_option_is_refused():
    model = _bn_net()
    image, target = _case()
    with pytest.raises(ValueError, match="incremental"):
        pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="zero", block=4,
                         incremental="yes")


def test_plan_refuses_a_box_outside_the_output():
    model = Graph(GRAPHS["conv chain"])
    with pytest.raises(ValueError, match="box"):
        plan(model, model, torch.rand(2, 16, 16), box=(0, 4, 10, 20), block=4)


def test_plan_refuses_an_ineligible_model_with_the_reason():
    model = FALLBACKS["GroupNorm normalises"]().eval()
    with pytest.raises(Ineligible, match="GroupNorm"):
        plan(model, model, torch.rand(3, 16, 16), box=(0, 4, 0, 4), block=4)


def test_auto_names_a_nonlocal_module_without_tracing():
    from pdcr_lab.incremental import traced

    model = FALLBACKS["GroupNorm normalises"]().eval()
    image, target = _case()
    ds = pdcr_lab.explain(model, image, roi=(8, 8, 8, 8), target=target, intervention="zero", block=4)
    assert ds.attrs["forward_path_reason"] == "module 1 (GroupNorm): GroupNorm normalises over the whole image"
    assert not traced(model, image.float())


def test_float64_model_gets_float64_images_on_both_paths():
    model = _bn_net().double()
    image, target = _case()
    kwargs = dict(roi=(8, 8, 8, 8), target=target, intervention="blur", block=4)
    off = pdcr_lab.explain(model, image, incremental="off", **kwargs)
    on = pdcr_lab.explain(model, image, incremental="on", **kwargs)
    assert on.attrs["forward_path"] == "incremental"
    assert_effects_equal(on, off, atol=1e-9)
    assert next(model.parameters()).dtype == torch.float64  # the model is left as it was
