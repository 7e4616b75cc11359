"""The explainer contract, run on every registered explainer (pdcr_lab.explainers).

Each entry of the registry goes through the same checks: the result is the effects schema with its
method and sign; several RoIs in one call equal one call per RoI where the entry claims it; a
deterministic entry ignores the seed and every entry repeats itself for one seed; afterwards the
model is exactly as it was (parameters, every submodule's mode, requires_grad, device) and no hook
is left on it, also when the call fails or is interrupted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from pdcr_lab import PatchBank
from pdcr_lab.explainers import (
    Explainer,
    ExplainerSpec,
    explainers_table,
    get_explainer,
    list_explainers,
    register_explainer,
)
from pdcr_lab.schema import validate

ROI = (4, 4, 4, 4)
ROIS = [(4, 4, 4, 4), (8, 8, 4, 4)]
#: Small budgets per explainer, so the contract runs in seconds (the contract does not depend on them).
FAST = {
    "pdcr": {"fine": 3},
    "zero": {},
    "rise": {"n_masks": 24},
    "misure": {"steps": 3},
    "components": {"layers": ["0", "3"], "fine": 3},
}


class Net(nn.Sequential):
    """Conv + BatchNorm + Dropout + sigmoid: modes matter; layers "0" and "3" are convolutions."""

    def __init__(self) -> None:
        torch.manual_seed(3)
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.Dropout(0.5), nn.Conv2d(4, 1, 1))
        with torch.no_grad():  # a smoothed threshold of the image, so blocks near the edge matter
            for index, fan_in in ((0, 9), (3, 36), (5, 4)):
                self[index].weight.uniform_(0.8 / fan_in, 1.2 / fan_in)
                self[index].bias.zero_()
            self[5].bias.fill_(-0.1)
            self[1].running_mean.uniform_(-0.02, 0.02)
            self[1].running_var.uniform_(0.8, 1.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(4 * super().forward(x - 0.4))


@pytest.fixture()
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    img = 0.2 + 0.1 * torch.rand(1, 16, 16, generator=g)
    img[:, 6:14, 6:14] += 0.6  # the structure's edge runs through the RoI blocks
    return img.clamp(0, 1)


@pytest.fixture()
def bank() -> PatchBank:
    g = torch.Generator().manual_seed(1)
    return PatchBank(torch.rand(12, 1, 4, 4, generator=g))


def _options(spec: ExplainerSpec, bank: PatchBank, image: torch.Tensor) -> dict:
    opts = dict(FAST.get(spec.name, {}))
    named = spec.parameters or set()  # what the signature names (a **reading catch-all takes only its own)
    if "bank" in named:
        opts["bank"] = bank
    if "donors" in named:
        opts["donors"] = torch.stack([image.roll(s, dims=-1) for s in (3, 6, 9)])
    opts["block"] = 4
    return opts


def _snapshot(model: nn.Module) -> dict:
    hooks = sum(len(getattr(m, attr)) for m in model.modules()
                for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "devices": {p.device for p in model.parameters()},
        "hooks": hooks,
    }


def _assert_restored(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["modes"] == before["modes"], "a submodule's train/eval mode changed"
    assert after["grad"] == before["grad"], "requires_grad of a parameter changed"
    assert after["devices"] == before["devices"]
    assert after["hooks"] == before["hooks"], "a hook was left on the model"
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"{key} changed"


def _model_in_mixed_modes() -> nn.Module:
    model = Net().train()
    model.get_submodule("1").eval()  # a BatchNorm frozen on purpose, the rest training
    return model


NAMES = list_explainers()


def test_registry_lists_every_builtin_once_with_its_properties():
    assert {"pdcr", "zero", "occlusion", "gradcam", "gradcam_signed", "misure", "rise", "random", "components"} <= set(NAMES)
    for name in NAMES:
        spec = get_explainer(name)
        assert isinstance(spec.func, Explainer)
        assert spec.support_sign in (-1, 1)
        assert spec.perturbs != "unknown"
    assert explainers_table().count("\n| `") == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_result_is_the_schema_with_method_and_sign(name, image, bank):
    spec = get_explainer(name)
    model = _model_in_mixed_modes()
    before = _snapshot(model)
    ds = spec.explain(model, image, roi=ROI, seed=0, **_options(spec, bank, image))
    validate(ds)
    assert isinstance(ds.attrs["method"], str) and ds.attrs["method"]
    assert int(ds.attrs["support_sign"]) == spec.support_sign
    assert np.isfinite(float(ds.m0))
    if spec.on_grid:
        assert ds.ate.dims == ("block_y", "block_x")
        assert float(np.abs(ds.ate.where(ds.roi_block, 0)).max()) == 0, "RoI blocks must be 0 in ate"
    else:
        assert "layer" in ds.ate.dims
    _assert_restored(model, before)


@pytest.mark.parametrize("name", [n for n in NAMES if get_explainer(n).multi_roi])
def test_several_rois_in_one_call_equal_one_call_each(name, image, bank):
    spec = get_explainer(name)
    model = Net().eval()
    opts = _options(spec, bank, image)
    together = spec.explain(model, image, roi=ROIS, seed=0, **opts)
    assert together.sizes["roi"] == len(ROIS)
    for index, roi in enumerate(ROIS):
        alone = spec.explain(model, image, roi=roi, seed=0, **opts)
        np.testing.assert_allclose(together.ate.isel(roi=index).values, alone.ate.values, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: RoI {roi} differs when explained together with others")
        np.testing.assert_allclose(float(together.m0.isel(roi=index)), float(alone.m0), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_map_and_deterministic_entries_ignore_the_seed(name, image, bank):
    spec = get_explainer(name)
    model = Net().eval()
    opts = _options(spec, bank, image)
    first = spec.explain(model, image, roi=ROI, seed=5, **opts)
    again = spec.explain(model, image, roi=ROI, seed=5, **opts)
    xr.testing.assert_equal(first.ate, again.ate)
    other = spec.explain(model, image, roi=ROI, seed=6, **opts)
    if spec.deterministic:
        xr.testing.assert_allclose(first.ate, other.ate)
    else:
        assert not np.allclose(first.ate_raw.values, other.ate_raw.values), f"{name} claims randomness but ignores the seed"


class Interrupting(nn.Module):
    """Runs the wrapped model, then raises `error` from its forward pass number `at`."""

    def __init__(self, inner: nn.Module, at: int, error: BaseException) -> None:
        super().__init__()
        self.inner, self.at, self.error, self.calls = inner, at, error, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.inner(x)


@pytest.mark.parametrize("at", [1, 3], ids=["factual-pass", "third-pass"])
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "interrupt"])
@pytest.mark.parametrize("name", NAMES)
def test_model_is_restored_after_a_failure_or_interrupt(name, error, at, image, bank):
    spec = get_explainer(name)
    model = Interrupting(_model_in_mixed_modes(), at=at, error=error)
    before = _snapshot(model)
    opts = _options(spec, bank, image)
    if "layers" in opts:
        opts["layers"] = [f"inner.{p}" for p in opts["layers"]]
    try:
        spec.explain(model, image, roi=ROI, seed=0, **opts)
    except (type(error), ValueError) as exc:
        assert isinstance(exc, type(error)) or "boom" in str(exc)
    else:
        assert model.calls < at, f"{name} swallowed an exception raised by the model"
    _assert_restored(model, before)


def test_a_registered_explainer_is_one_entry_and_its_sign_is_checked(image):
    def flat(model, image, *, roi, target=None, seed=0, device=None, block=4):
        ds = get_explainer("random").explain(model, image, roi=roi, seed=seed, block=block)
        return ds.assign_attrs(method="flat", support_sign=1)

    spec = register_explainer("flat_test", flat, support_sign=-1, perturbs="nothing")
    try:
        assert "flat_test" in list_explainers()
        with pytest.raises(ValueError, match="registered with support_sign=-1 but its result records support_sign=1"):
            spec.explain(Net().eval(), image, roi=ROI)
    finally:
        from pdcr_lab import explainers

        explainers._REGISTRY.pop("flat_test")  # noqa: SLF001 - the test cleans up its own entry


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"support_sign": 2}, ValueError, r"support_sign=2 must be -1, 1 or 0"),
        ({"support_sign": -1, "seed": 3}, ValueError, r"defaults \['seed'\] are supplied by every caller"),
        ({"support_sign": -1, "nonsense": 3}, TypeError, r"defaults \['nonsense'\] are not parameters"),
    ],
)
def test_bad_registrations_are_refused(kwargs, error, match):
    from pdcr_lab import explain

    with pytest.raises(error, match=match):
        register_explainer("bad_entry", explain, **kwargs)


def test_unknown_names_and_import_paths():
    with pytest.raises(KeyError, match=r"unknown explainer 'nope'; registered: \["):
        get_explainer("nope")
    spec = get_explainer("pdcr_lab.baselines:rise")
    assert spec.func is get_explainer("rise").func and spec.support_sign == 0


@pytest.mark.parametrize(
    "name, options, error, match",
    [
        ("pdcr", {"fine": -5}, ValueError, r"fine=-5 is too small; expected an integer >= 1"),
        ("pdcr", {"fine": "6"}, TypeError, r"fine"),
        ("pdcr", {"tau": float("nan")}, ValueError, r"tau"),
        ("pdcr", {"device": "banana"}, ValueError, r"device='banana'"),
        ("pdcr", {"mode": "fast"}, ValueError, r"mode='fast' is not supported"),
        ("rise", {"n_masks": 1.5}, TypeError, r"n_masks"),
        ("gradcam", {"outcome": "dcie"}, ValueError, r"outcome='dcie' is not supported"),
        ("components", {"value_range": (1, 0)}, ValueError, r"value_range=\(1, 0\) must have low < high"),
    ],
)
def test_options_are_checked_without_running_anything(name, options, error, match):
    with pytest.raises(error, match=match):
        get_explainer(name).check_options(options)


def test_good_options_pass_the_checks():
    for name in list_explainers():
        get_explainer(name).check_options({"block": 4})
    get_explainer("pdcr").check_options({"fine": 6, "tau": 0.0, "mode": "adaptive", "device": "cpu"})
