"""Component effects: consistency with the input engine, known zeros, discovery, bad input, stage labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import pdcr_lab
from pdcr_lab import PatchBank, explain
from pdcr_lab.components import explain_components, find_components, format_summary, list_components, stage_labels
from pdcr_lab.components._explain import _cell_mask, _span
from pdcr_lab.testing import BranchyModel as Branchy
from pdcr_lab.testing import SkipNet as Net
from pdcr_lab.testing import randomise_parameters

ROI = (12, 12, 8, 8)
LAYERS = ["enc", "down", "up"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def net() -> Net:
    return Net().eval()


@pytest.fixture
def donors() -> torch.Tensor:
    return torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))


# -- consistency checks --------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["module", "channels", "cells"])
def test_own_factual_activation_gives_exactly_zero(net, image, donors, unit):
    common = dict(roi=(8, 8, 8, 8), layers=LAYERS, unit=unit, block=8, groups=2, coarse=2, fine=3, tau=0.0)
    same = explain_components(net, image, donors=image[None], **common)
    assert np.all(same.ate.values == 0) and np.all(same.ate_raw.values == 0)
    other = explain_components(net, image, donors=donors, **common)
    assert np.abs(other.ate.values).max() > 1, "the test model must have real component effects"


def test_cells_of_identity_input_layer_reproduce_the_input_block_map(tiny_net, image):
    model = nn.Sequential(nn.Identity(), tiny_net).eval()
    bank = PatchBank(torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2)))
    donors = bank.blocks.repeat(1, 1, 4, 4)  # donor k = bank block k tiled: its every cell is block k
    kw = dict(roi=(8, 8, 8, 8), block=8, coarse=3, fine=20, seed=5, batch_size=64)
    blocks = explain(model, image, bank=bank, **kw)
    cells = explain_components(model, image, layers="0", unit="cells", donors=donors, **kw)
    assert np.abs(blocks.ate.values).max() > 0.5
    for name in ("ate", "ate_raw", "stderr", "n_draws", "screened"):
        np.testing.assert_array_equal(cells[name].sel(layer="0").values, blocks[name].values, err_msg=name)
    np.testing.assert_array_equal(cells.roi_block.values, blocks.roi_block.values)
    assert float(cells.m0) == float(blocks.m0)
    assert int(cells.forwards) == int(blocks.forwards) + len(donors)
    zero_blocks = explain(model, image, roi=(8, 8, 8, 8), block=8, intervention="zero")
    zero_cells = explain_components(model, image, roi=(8, 8, 8, 8), layers="0", unit="cells", block=8, intervention="zero")
    np.testing.assert_array_equal(zero_cells.ate.sel(layer="0").values, zero_blocks.ate.values)


@pytest.mark.parametrize("unit", ["module", "channels", "cells"])
def test_provably_unused_modules_get_zero(image, donors, unit):
    ds = explain_components(
        Branchy(), image, roi=ROI, layers=["main", "dead", "outside"], unit=unit, groups=1, donors=donors, block=4,
        coarse=2, fine=3, tau=0.0,
    )
    assert np.all(ds.ate.sel(layer=["dead", "outside"]).values == 0)
    assert np.all(ds.ate_raw.sel(layer=["dead", "outside"]).values == 0)
    assert np.abs(ds.ate.sel(layer="main").values).max() > 1


def test_mean_of_one_donor_equals_natural_with_that_donor(net, image, donors):
    kw = dict(roi=ROI, layers=LAYERS, donors=donors[:1], tau=0.0)
    mean = explain_components(net, image, intervention="mean", **kw)
    natural = explain_components(net, image, intervention="natural", coarse=2, fine=3, **kw)
    np.testing.assert_allclose(mean.ate.values, natural.ate.values, atol=1e-9)
    assert set(np.unique(mean.n_draws.values)) == {1}


def test_result_does_not_depend_on_the_batch_size(net, image, donors):
    kw = dict(roi=ROI, layers=LAYERS, unit="cells", donors=donors, block=8, coarse=2, fine=4, seed=2)
    counts = []
    one = explain_components(net, image, batch_size=5, progress=lambda done, total: counts.append((done, total)), **kw)
    many = explain_components(net, image, batch_size=64, **kw)
    np.testing.assert_allclose(one.ate_raw.values, many.ate_raw.values, atol=1e-9)
    assert counts[-1][0] == counts[-1][1] == int(one.forwards) - 1 - len(donors)


# -- result layout --------------------------------------------------------------------------------


def test_result_layout_for_each_unit(net, image, donors):
    module = explain_components(net, image, roi=ROI, layers=LAYERS, donors=donors, fine=4)
    assert module.ate.dims == ("layer",) and list(module.layer.values) == LAYERS
    assert module.attrs["method"] == "pdcr_components" and module.attrs["component_unit"] == "module"
    assert list(module.layer_role.values) == ["encoder", "encoder", "decoder"]
    assert list(module.layer_output.values) == ["(6, 32, 32)", "(8, 16, 16)", "(8, 32, 32)"]
    channels = explain_components(net, image, roi=ROI, layers=LAYERS, unit="channels", groups=3, donors=donors, fine=4)
    assert channels.ate.dims == ("layer", "unit") and channels.sizes["unit"] == 3
    assert channels.attrs["groups"].startswith('{"enc": [[0, 1], [2, 3], [4, 5]]')
    cells = explain_components(net, image, roi=[ROI, (0, 0, 8, 8)], layers=LAYERS, unit="cells", block=8,
                               intervention="zero")
    assert cells.ate.dims == ("roi", "layer", "block_y", "block_x") and cells.sizes["block_y"] == 4
    assert not cells.ate.where(cells.roi_block, 0).any()
    for ds in (module, channels, cells):
        assert pdcr_lab.validate(ds) is ds


def test_results_stack_and_round_trip(net, image, donors, tmp_path):
    a = explain_components(net, image, roi=ROI, layers=LAYERS, donors=donors, fine=4)
    b = explain_components(net, image.flip(-1), roi=ROI, layers=LAYERS, donors=donors, fine=4)
    both = pdcr_lab.stack([a, b], "image", labels=["a", "b"])
    assert both.ate.dims == ("image", "layer")
    back = pdcr_lab.load(pdcr_lab.save(both, tmp_path / "c.nc"))
    xr.testing.assert_allclose(back.ate, both.ate)


def test_cells_map_input_blocks_to_feature_cells_at_the_layer_stride():
    assert [_span(i, 4, 16, 32) for i in range(3)] == [(0, 2), (2, 4), (4, 6)]
    assert [_span(i, 8, 6, 96) for i in range(3)] == [(0, 1), (0, 1), (1, 2)]  # stride 16 > block 8: shared
    mask = _cell_mask(torch.zeros(1, 2, 16, 16), 4, (32, 32), "x")
    assert mask.shape == (64, 1, 16, 16) and int(mask[9].sum()) == 4 and bool(mask[9, 0, 2:4, 2:4].all())


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"layers": ["enc", "nope"]}, ValueError, r"layers: 'nope' is not a module of the model; its components are \['enc'"),
        ({"donors": torch.rand(2, 3, 16, 16)}, ValueError, r"donors must have shape \(N, 3, 32, 32\) like the image, got tensor of shape \(2, 3, 16, 16\)"),
        ({"donors": torch.rand(3, 32, 32)}, ValueError, r"donors must have shape \(N, 3, 32, 32\)"),
        ({"donors": None}, ValueError, r"intervention='natural' needs donors=\(N, C, H, W\) images"),
        ({"unit": "channels", "groups": [[0, 1], [7]]}, ValueError, r"groups\[1\] holds channel 7, out of range for layer 'enc' with 6 channels \(0..5\)"),
        ({"unit": "channels", "groups": 7}, ValueError, r"groups=7 is more than the 6 channels of layer 'enc'"),
        ({"unit": "channels", "groups": {"enc": 2}}, ValueError, r"groups has no entry for layer 'down'"),
        ({"unit": "channels", "groups": {"enc": 2, "down": 3, "up": 2}}, ValueError, r"same number of channel groups"),
        ({"unit": "cells", "block": 5}, ValueError, r"block=5 does not tile the 32x32 image"),
        ({"unit": "pixels"}, ValueError, r"unit='pixels' is not supported; expected one of \['module', 'channels', 'cells'\]"),
        ({"intervention": "blur"}, ValueError, r"intervention='blur' is not supported"),
        ({"layers": ["enc", "enc"]}, ValueError, r"layers has duplicates"),
        ({"layers": []}, ValueError, r"layers is empty; name module paths, e.g. from the model's components \['enc'"),
    ],
)
def test_bad_arguments(net, image, donors, kwargs, error, match):
    kw = {"roi": ROI, "layers": LAYERS, "donors": donors, "fine": 2, **kwargs}
    with pytest.raises(error, match=match):
        explain_components(net, image, **kw)


class Pair(nn.Module):
    def forward(self, x):
        return torch.tanh(x - 0.5), {"skip": x.mean(1, keepdim=True)}


class Silent(nn.Module):
    def forward(self, x):
        return None


class Folded(nn.Module):
    def forward(self, x):
        return x.flatten(0, 1)  # (B*C, H, W): not batch-major


class Odd(nn.Module):
    """Outputs through a tuple, a None, a folded tensor, tokens; holds a ModuleList never called."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()
        self.silent = Silent()
        self.folded = Folded()
        self.tokens = nn.Identity()
        self.blocks = nn.ModuleList([nn.Conv2d(4, 1, 1)])
        randomise_parameters(self, 4)

    def forward(self, x):
        a, extra = self.pair(x)
        self.silent(x)
        f = self.folded(x).reshape(x.shape)
        t = self.tokens(a.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(a.shape)
        y = torch.cat([t, extra["skip"]], 1) + 0 * f.sum()
        return torch.sigmoid(self.blocks[0](y))


def test_tuple_and_dict_outputs_are_replaced_whole(image, donors):
    ds = explain_components(Odd(), image, roi=ROI, layers="pair", donors=donors, fine=4)
    assert ds.layer_output.item() == "tuple[(3, 32, 32), (1, 32, 32)]"
    assert abs(float(ds.ate.sel(layer="pair"))) > 0
    same = explain_components(Odd(), image, roi=ROI, layers="pair", donors=image[None], fine=4)
    assert float(same.ate_raw.sel(layer="pair")) == 0
    cells = explain_components(Odd(), image, roi=ROI, layers="pair", unit="cells", block=8, intervention="zero")
    assert cells.ate.dims == ("layer", "block_y", "block_x")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"layers": "pair", "unit": "channels"}, TypeError, r"unit='channels' needs a layer that returns one tensor; layer 'pair' returns tuple"),
        ({"layers": "silent"}, TypeError, r"layer 'silent' returns NoneType\[\], which holds no tensor"),
        ({"layers": "folded"}, ValueError, r"layer 'folded' returns tensor of shape \(3, 32, 32\).*first dim is not the batch"),
        ({"layers": "blocks"}, ValueError, r"layer 'blocks' did not run in the model's forward pass"),
        ({"layers": "tokens", "unit": "cells"}, ValueError, r"unit='cells' needs \(B, C, h, w\) feature maps; layer 'tokens'"),
    ],
)
def test_outputs_that_cannot_be_treated_are_refused(image, donors, kwargs, error, match):
    with pytest.raises(error, match=match):
        explain_components(Odd(), image, roi=ROI, donors=donors, fine=2, **kwargs)


def test_a_module_called_twice_has_every_call_replaced(image, donors):
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Conv2d(3, 3, 3, padding=1)
            randomise_parameters(self, 6)

        def forward(self, x):
            return torch.sigmoid(self.shared(torch.tanh(self.shared(x - 0.5))).mean(1, keepdim=True) * 4)

    kw = dict(roi=ROI, layers="shared", fine=4, tau=0.0)
    assert float(explain_components(Twice(), image, donors=image[None], **kw).ate_raw.item()) == 0
    assert abs(float(explain_components(Twice(), image, donors=donors, **kw).ate.item())) > 1


def test_token_outputs_take_channel_groups_on_the_last_dim(image, donors):
    ds = explain_components(Odd(), image, roi=ROI, layers="tokens", unit="channels", groups=[[0], [1, 2]], donors=donors, fine=4)
    assert ds.sizes["unit"] == 2


def test_training_mode_is_restored_and_eval_used(image, donors):
    seen = []

    class Spy(Net):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    model = Spy().train()
    explain_components(model, image, roi=ROI, layers=LAYERS, donors=donors, fine=2)
    assert model.training and all(m.training for m in model.modules())
    assert seen and not any(seen)


def test_hooks_are_removed_when_the_model_raises(image, donors):
    class Fragile(Net):
        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("boom")
            return super().forward(x)

    model = Fragile().train()
    with pytest.raises(RuntimeError, match="boom"):
        explain_components(model, image, roi=ROI, layers=LAYERS, donors=donors[:1], intervention="mean", batch_size=4)
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training


# -- discovery ---------------------------------------------------------------------------------------


def test_structural_discovery_finds_stages_and_roles(net):
    comps = find_components(net, (3, 32, 32))
    assert [(c.path, c.role) for c in comps] == [("enc", "encoder"), ("down", "encoder"), ("up", "decoder"), ("dec", "decoder")]
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 2, 1), nn.Upsample(scale_factor=2),
                        nn.Conv2d(4, 1, 1), nn.Sigmoid())
    roles = {c.path: c.role for c in find_components(nn.Sequential(seq), (3, 32, 32))}  # a wrapper is descended
    assert roles == {"0.0": "encoder", "0.1": "bottleneck", "0.2": "decoder", "0.3": "decoder", "0.4": "head"}
    assert list_components(nn.Sequential(seq), (3, 32, 32), main=True) == ["0.0", "0.1", "0.2", "0.3"]


class SelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 1, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        return x + self.attn(t, t, t)[0].transpose(1, 2).reshape(b, c, h, w)


class Declared(nn.Module):
    """Declares its stages; `decoder` is a ModuleList (never called) and `outer` contains `inner`."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, 1, 1)
        self.stage = nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), SelfAttention(4))
        self.outer = nn.Sequential(nn.Identity(), nn.Conv2d(4, 4, 1))
        self.decoder = nn.ModuleList([nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)])
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        x = self.outer(self.stage(self.stem(x)))
        for layer in self.decoder:
            x = layer(x)
        return torch.sigmoid(self.head(x))

    def stages(self):
        return {"stem": "stem", "stage": "encoder", "stage.1": "attention", "outer": "skip", "outer.1": "decoder",
                "decoder": "decoder", "head": "head", "missing": "encoder"}


def test_declared_stages_are_preferred_and_main_ones_selected(image, donors):
    comps = {c.path: c for c in find_components(Declared(), image)}
    assert list(comps) == ["stem", "stage.1", "stage", "outer.1", "outer", "decoder.0", "decoder.1", "head"]
    assert comps["decoder.1"].role == "decoder" and comps["stage.1"].role == "attention"
    main = [p for p, c in comps.items() if c.main]
    assert main == ["stem", "stage", "outer.1", "decoder.0", "decoder.1"]  # no head, no nested block, no container
    ds = explain_components(Declared(), image, roi=ROI, donors=donors, fine=2)
    assert list(ds.layer.values) == main


def test_attention_blocks_are_found_structurally():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Sequential(nn.Conv2d(4, 4, 1), SelfAttention(4)),
                          nn.Upsample(scale_factor=2), nn.Conv2d(4, 1, 1))
    comps = {c.path: c for c in find_components(model, (3, 32, 32))}
    assert comps["1.1"].role == "attention" and not comps["1.1"].main
    assert "1.1.attn" not in comps  # only the outermost block


# -- stage labels ------------------------------------------------------------------------------------


class TinyStages(nn.Module):
    def __init__(self, extra: bool) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.bottleneck = nn.Conv2d(4, 4, 3, 2, 1)
        self.extra = nn.Conv2d(4, 4, 1) if extra else nn.Identity()
        self.dec1 = nn.Upsample(scale_factor=4)
        self.head = nn.Conv2d(4, 1, 1)
        randomise_parameters(self, 5)

    def forward(self, x):
        return torch.sigmoid(self.head(self.dec1(self.extra(self.bottleneck(self.enc1(x - 0.5))))))

    def stages(self):
        roles = {"enc1": "encoder", "bottleneck": "bottleneck", "dec1": "decoder", "head": "head"}
        return roles | ({"extra": "decoder"} if isinstance(self.extra, nn.Conv2d) else {})


def test_stage_labels_number_repeated_roles_in_execution_order():
    comps = find_components(TinyStages(extra=True), (3, 32, 32))
    assert stage_labels(comps) == {"enc1": "encoder1", "bottleneck": "bottleneck", "extra": "decoder1",
                                   "dec1": "decoder2", "head": "head"}


def test_summary_table_names_the_top_stage():
    row = {"model": "m", "dataset": "d", "stages": 2, "m0": 50.0, "top": "encoder1", "path": "enc1", "ate": -3.0,
           "share": 0.75, "second": "decoder1"}
    text = format_summary([row])
    assert "top stage" in text.splitlines()[0] and "encoder1" in text and "75%" in text
