"""Testing helpers that ship with the package: a naive reference loop, a map comparison and toy models.

* :func:`reference_explain` follows the authors' reference implementation literally (a Python loop
  over blocks: one batch of S coarse draws, then one batch of N fine draws, Dice computed on the full
  image), so the batched engine can be checked against it and benchmarked against it;
  :func:`reference_effects` returns the same loop's result as an effects dataset.
* :func:`assert_effects_equal` compares two effects datasets and says where they differ.
* Toy models with answers known by construction: a local box filter (:class:`CenterSurroundModel`),
  a remote planted cause (:class:`PlantedCauseModel`), a random CNN with non-trivial effects
  (:class:`RandomConvNet`), models that exercise the ways a model's output is read (dict, tuple,
  logits, normalised input), models that fail on purpose, and small known-answer models of the
  baselines, component and faithfulness tests.

Every toy model is deterministic: random weights come from an explicit seed (the layers are created
first, in a fixed order, and then overwritten from a private generator).
"""

from __future__ import annotations

import itertools
import json

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .schema import SchemaError, effects_dataset, validate

__all__ = [
    "reference_explain",
    "reference_effects",
    "dice_points",
    "assert_effects_equal",
    "randomise_parameters",
    "RandomConvNet",
    "CenterSurroundModel",
    "PlantedCauseModel",
    "DictOutputModel",
    "TupleOutputModel",
    "NormalisedInputModel",
    "LogitModel",
    "AmbiguousDictModel",
    "FailingModel",
    "OutOfMemoryAbove",
    "TwoChannelLinear",
    "ThresholdedModel",
    "SkipNet",
    "BranchyModel",
    "ColumnsModel",
]


# -- the reference loop ----------------------------------------------------------------------------


def dice_points(pred: torch.Tensor, target: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """100 x DSC inside `roi`, written out as in the reference (full-image masks, no cropping).

    Parameters
    ----------
    pred : Tensor of shape (..., H, W)
        Binary (0/1) predictions, float.
    target : Tensor of shape (H, W)
        Reference mask, float 0/1.
    roi : Tensor of shape (H, W)
        RoI mask, float 0/1.

    Examples
    --------
    >>> roi = torch.ones(4, 4)
    >>> pred = torch.zeros(4, 4); pred[:2] = 1      # 8 predicted pixels
    >>> target = torch.zeros(4, 4); target[:1] = 1  # 4 target pixels, all predicted
    >>> round(float(dice_points(pred, target, roi)), 4)   # 2 * 4 / (8 + 4)
    66.6667
    """
    p = pred * roi
    g = target * roi
    axes = tuple(range(-roi.dim(), 0))  # (H, W), or (D, H, W) for a volume
    return 100.0 * 2.0 * (p * g).sum(dim=axes) / (p.sum(dim=axes) + g.sum(dim=axes) + 1e-10)


def reference_effects(
    model: nn.Module,
    image: torch.Tensor,
    roi: tuple[int, int, int, int],
    *,
    target: torch.Tensor | None = None,
    bank_blocks: torch.Tensor | None = None,
    table: np.ndarray | None = None,
    block: int = 8,
    coarse: int = 3,
    fine: int = 50,
    tau: float = 0.02,
    threshold: float = 0.5,
) -> xr.Dataset:
    """The reference loop's result as an effects dataset (:mod:`pdcr_lab.schema`).

    Holds ``ate``, ``ate_raw``, ``stderr``, ``n_draws``, ``screened``, ``roi_block``, ``m0`` and
    ``forwards`` with the engine's meaning of each (a screened block keeps the mean and standard
    error of its S draws; the zero intervention counts one draw per block), so it can be compared
    with :func:`pdcr_lab.explain`'s result by :func:`assert_effects_equal`.

    Parameters
    ----------
    model : torch.nn.Module
        One-channel segmenter returning (B, 1, H, W) scores ((B, 1, D, H, W) for volumes).
    image : Tensor of shape (C, H, W), or a volume (C, D, H, W)
        The explained image.
    roi : (row, col, height, width), or (z, row, col, depth, height, width) in a volume
        The RoI box.
    target : Tensor of shape (H, W) (or (D, H, W)), optional
        Ground truth; None: the model's factual prediction.
    bank_blocks : Tensor of shape (N, C, b, b) (or (N, C, b, b, b)), optional
        Natural blocks drawn through `table`; None: the zero intervention.
    table : int array of shape (cells, S + N), optional
        Bank index of every (cell, draw).
    block : int
        Block side b (cubes in a volume).
    coarse : int
        S, screening draws per block (0: no screening stage).
    fine : int
        N, estimation draws of the surviving blocks.
    tau : float
        Screening and zeroing threshold (DSC points).
    threshold : float
        Binarisation of the model's score.

    Examples
    --------
    >>> image = torch.zeros(1, 8, 8); image[:, :4, :4] = 1.0; image[:, 4:, 4:] = 1.0
    >>> ds = reference_effects(PlantedCauseModel(marker=(4, 4, 4)), image, (0, 0, 4, 4), block=4)
    >>> ds.ate.values.round(3).tolist()        # darkening the marker block removes the RoI's segment
    [[0.0, 0.0], [0.0, -100.0]]
    """
    model.eval()
    spatial = tuple(image.shape[1:])
    k = len(spatial)
    roi_mask = torch.zeros(spatial)
    roi_mask[tuple(slice(s, s + e) for s, e in zip(roi[:k], roi[k:]))] = 1
    grid = tuple(n // block for n in spatial)

    def outcome(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pred = (model(batch)[:, 0] > threshold).float()
        return dice_points(pred, ref, roi_mask)

    def moments(deltas: torch.Tensor) -> tuple[float, float]:
        values = deltas.double()
        se = float(values.std() / np.sqrt(len(values))) if len(values) > 1 else 0.0
        return float(values.mean()), se

    with torch.no_grad():
        factual = (model(image[None])[:, 0] > threshold).float()[0]
    ref = factual if target is None else target.float()
    m0 = float(outcome(image[None])[0])
    forwards = 1
    ate, ate_raw, stderr = np.zeros(grid), np.zeros(grid), np.zeros(grid)
    n_draws, screened, roi_block = np.zeros(grid, dtype=np.int32), np.zeros(grid, bool), np.zeros(grid, bool)
    for cell, at in enumerate(itertools.product(*(range(g) for g in grid))):  # row-major, like the engine's cells
        where = tuple(slice(i * block, (i + 1) * block) for i in at)
        if roi_mask[where].any():
            roi_block[at] = True
            continue

        def perturbed(draws: Any) -> torch.Tensor:
            batch = image[None].repeat(len(draws), *([1] * image.dim()))
            for i, d in enumerate(draws):
                batch[(i, slice(None), *where)] = 0 if bank_blocks is None else bank_blocks[d]
            return batch

        if bank_blocks is None:
            delta = float(outcome(perturbed([0]))[0]) - m0
            forwards += 1
            ate_raw[at], n_draws[at] = delta, 1
            screened[at] = abs(delta) < tau
            ate[at] = 0.0 if abs(delta) < tau else delta
            continue
        if coarse > 0:  # no screening stage at all when S = 0
            coarse_m = outcome(perturbed(table[cell, :coarse])) - m0
            forwards += coarse
            if bool((coarse_m.abs() < tau).all()):
                ate_raw[at], stderr[at] = moments(coarse_m)
                n_draws[at], screened[at] = coarse, True
                continue
        fine_m = outcome(perturbed(table[cell, coarse : coarse + fine])) - m0
        forwards += fine
        value, se = moments(fine_m)
        ate_raw[at], stderr[at], n_draws[at] = value, se, fine
        ate[at] = 0.0 if abs(value) < tau else value
    attrs = {
        "method": "pdcr_reference",
        "block": block,
        "coarse": coarse,
        "fine": fine,
        "tau": tau,
        "outcome": "dice",
        "units": "DSC points",
        "seed": 0,
        "intervention": "zero" if bank_blocks is None else "natural",
    }
    blocks = {"ate": ate, "ate_raw": ate_raw, "stderr": stderr, "n_draws": n_draws, "screened": screened,
              "roi_block": roi_block}
    if k == 3:
        attrs["block_shape"] = json.dumps([block] * 3)
    ds = effects_dataset(blocks, m0=m0, forwards=forwards, roi_mask=roi_mask.bool().numpy(), roi_box=roi, attrs=attrs)
    return validate(ds)


def reference_explain(
    model: nn.Module, image: torch.Tensor, roi: tuple[int, int, int, int], **options: Any
) -> tuple[np.ndarray, int]:
    """PdCR map by a plain per-block loop (the reference's structure); returns (map, forwards).

    The loop of :func:`reference_effects`, returning only the ``ate`` array and the forward count.

    Parameters
    ----------
    model : torch.nn.Module
        One-channel segmenter returning (B, 1, H, W) scores.
    image : Tensor of shape (C, H, W)
        The explained image.
    roi : (row, col, height, width)
        The RoI box.
    **options
        ``target``, ``bank_blocks``, ``table``, ``block``, ``coarse``, ``fine``, ``tau``,
        ``threshold``: as in :func:`reference_effects`.

    Examples
    --------
    >>> image = torch.zeros(1, 8, 8); image[:, :4, :4] = 1.0
    >>> ate, forwards = reference_explain(CenterSurroundModel(k=1), image, (0, 0, 4, 4), block=4)
    >>> ate.tolist(), forwards        # k = 1: no block outside the RoI matters
    ([[0.0, 0.0], [0.0, 0.0]], 4)
    """
    ds = reference_effects(model, image, roi, **options)
    return ds["ate"].values, int(ds["forwards"])


# -- comparing maps --------------------------------------------------------------------------------


def _where(var: xr.DataArray, flat_index: int) -> str:
    """'dim=coord, ...' of one element of `var` (positions for dims without coordinates)."""
    if var.ndim == 0:
        return "the scalar"
    position = np.unravel_index(flat_index, var.shape)
    parts = []
    for dim, i in zip(var.dims, position):
        label = var[dim].values[i] if dim in var.coords else i
        parts.append(f"{dim}={label.item() if isinstance(label, np.generic) else label}")
    return ", ".join(parts)


def _compare(name: str, actual: xr.DataArray, expected: xr.DataArray, rtol: float, atol: float) -> str | None:
    """None when the variables agree, else one readable line that says how they differ."""
    if actual.dims != expected.dims or actual.shape != expected.shape:
        return (
            f"{name!r}: different shape: actual has dims {actual.dims} and shape {actual.shape}, "
            f"expected {expected.dims} and shape {expected.shape}"
        )
    for dim in expected.dims:
        if dim in expected.coords and dim in actual.coords and not np.array_equal(actual[dim].values, expected[dim].values):
            return f"{name!r}: different {dim!r} labels: {actual[dim].values.tolist()} != {expected[dim].values.tolist()}"
    a, e = np.asarray(actual.values), np.asarray(expected.values)
    kinds = {a.dtype.kind, e.dtype.kind}
    if kinds <= {"b", "i", "u"}:  # flags and counts must match exactly
        diff = np.abs(a.astype(np.int64) - e.astype(np.int64)).astype(np.float64)
        bad = diff > 0
        tolerance = "exactly"
    elif kinds <= {"f", "i", "u", "b"}:
        a, e = a.astype(np.float64), e.astype(np.float64)
        bad = ~np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        with np.errstate(invalid="ignore"):
            diff = np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN against a number
        tolerance = f"beyond rtol={rtol:g}, atol={atol:g}"
    else:
        bad = a != e
        diff = bad.astype(np.float64)
        tolerance = "exactly"
    bad = np.asarray(bad)
    if not bad.any():
        return None
    unit = "blocks" if {"block_y", "block_x"} <= set(expected.dims) else "values"
    worst = int(np.argmax(np.where(bad, diff, -1.0)))
    return (
        f"{name!r}: {int(bad.sum())} of {bad.size} {unit} differ ({tolerance}); largest difference "
        f"{diff.reshape(-1)[worst]:.6g} at {_where(expected, worst)} "
        f"(actual {a.reshape(-1)[worst].item()!r}, expected {e.reshape(-1)[worst].item()!r})"
    )


def assert_effects_equal(
    actual: xr.Dataset,
    expected: xr.Dataset,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    variables: Iterable[str] | None = None,
    check_attrs: bool = False,
) -> None:
    """Assert that two effects datasets hold the same maps; say where they do not.

    Both datasets are validated against the schema first. Floating variables are compared with
    ``numpy.isclose(actual, expected, rtol, atol)`` (NaN equals NaN); flags and counts (``screened``,
    ``roi_block``, ``n_draws``, ``forwards``) must match exactly. The failure lists every variable
    that differs, with the number of mismatching blocks and the largest difference with its block
    coordinates (and its RoI, model, ... label on stacked results).

    Parameters
    ----------
    actual, expected : xarray.Dataset
        Effects datasets (:mod:`pdcr_lab.schema`).
    rtol, atol : float
        Relative and absolute tolerance of floating variables.
    variables : iterable of str, optional
        The variables (or coordinates) to compare; each must be in both datasets. None: every data
        variable and coordinate of either dataset (one missing from the other fails).
    check_attrs : bool
        Also require equal attrs (the run's parameters); off by default since two runs that must
        give one map often differ in settings such as the batch size.

    Raises
    ------
    AssertionError
        When a dataset is not an effects dataset, or the compared content differs.

    Examples
    --------
    >>> from pdcr_lab.schema import empty_effects
    >>> a = empty_effects(grid=(2, 2), block=4)
    >>> assert_effects_equal(a, a.copy(deep=True))
    >>> b = a.copy(deep=True); b["ate"][1, 0] = 0.5
    >>> assert_effects_equal(a, b)
    Traceback (most recent call last):
    ...
    AssertionError: effects differ:
      'ate': 1 of 4 blocks differ (beyond rtol=1e-05, atol=1e-08); largest difference 0.5 at block_y=1, block_x=0 (actual 0.0, expected 0.5)
    """
    for label, ds in (("actual", actual), ("expected", expected)):
        try:
            validate(ds)
        except SchemaError as exc:
            raise AssertionError(f"{label} is not an effects dataset: {exc}") from exc
    if variables is None:
        names = list(dict.fromkeys([*expected.data_vars, *actual.data_vars, *expected.coords, *actual.coords]))
    else:
        names = [variables] if isinstance(variables, str) else list(variables)
    problems = []
    for name in names:
        missing = [label for label, ds in (("actual", actual), ("expected", expected)) if name not in ds.variables]
        if missing:
            problems.append(f"{name!r}: missing from {' and '.join(missing)}")
            continue
        line = _compare(name, actual[name], expected[name], rtol, atol)
        if line:
            problems.append(line)
    if check_attrs:
        problems.extend(_attr_differences(actual.attrs, expected.attrs))
    if problems:
        raise AssertionError("effects differ:\n  " + "\n  ".join(problems))


def _attr_differences(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    lines = []
    for key in dict.fromkeys([*expected, *actual]):
        if key not in actual or key not in expected:
            lines.append(f"attr {key!r}: missing from {'actual' if key not in actual else 'expected'}")
        elif not np.array_equal(np.asarray(actual[key]), np.asarray(expected[key])):
            lines.append(f"attr {key!r}: actual {actual[key]!r}, expected {expected[key]!r}")
    return lines


# -- toy models ------------------------------------------------------------------------------------


def randomise_parameters(module: nn.Module, seed: int, scale: float = 0.4) -> nn.Module:
    """Overwrite every parameter of `module` with N(0, scale^2) draws of a generator seeded by `seed`.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose parameters are replaced, in ``module.parameters()`` order.
    seed : int
        Seed of the private generator (the global torch generator is not used).
    scale : float
        Standard deviation of the draws.

    Returns
    -------
    torch.nn.Module
        `module` itself.
    """
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g) * scale
    return module


class RandomConvNet(nn.Module):
    """A random two-layer CNN whose sigmoid output hovers around 0.5, so block effects are non-trivial.

    ``sigmoid(b(tanh(a(x - 0.5))) + offset)`` with ``a`` a dilated (dilation 2) ``kernel`` x ``kernel``
    convolution to `hidden` channels and ``b`` a 5 x 5 convolution to one channel, both "same"
    padded. Its receptive field is ``2 * kernel + 3`` pixels wide.

    Parameters
    ----------
    channels : int
        Input channels.
    hidden : int
        Channels of the hidden layer.
    kernel : int
        Side of the first (dilated) convolution; odd.
    seed : int
        Seed of the weights (:func:`randomise_parameters`).
    scale : float
        Standard deviation of the weights.
    offset : float
        Added to the output logit (shifts how much of the image is foreground).
    spatial_dims : {2, 3}
        3: the same net with 3-D convolutions, for (B, C, D, H, W) volumes.

    Examples
    --------
    >>> tuple(RandomConvNet(channels=1, spatial_dims=3)(torch.rand(1, 1, 8, 8, 8)).shape)
    (1, 1, 8, 8, 8)
    >>> net = RandomConvNet(channels=1, hidden=2, seed=3)
    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> y = net(x)
    >>> tuple(y.shape), bool(((y > 0) & (y < 1)).all())
    ((2, 1, 8, 8), True)
    >>> torch.equal(y, RandomConvNet(channels=1, hidden=2, seed=3)(x))   # the seed fixes the weights
    True
    """

    def __init__(
        self, channels: int = 3, hidden: int = 6, kernel: int = 3, seed: int = 0, scale: float = 0.4, offset: float = 0.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.a = conv(channels, hidden, kernel, padding=kernel - 1, dilation=2)
        self.b = conv(hidden, 1, 5, padding=2)
        self.offset = offset
        randomise_parameters(self, seed, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, shape (B, 1, H, W) ((B, 1, D, H, W) for volumes).

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W) or (B, C, D, H, W)
            Images in [0, 1].
        """
        logit = self.b(torch.tanh(self.a(x - 0.5)))
        return torch.sigmoid(logit + self.offset if self.offset else logit)


class CenterSurroundModel(nn.Module):
    """One-channel toy segmenter: foreground where the local mean (k x k box filter) exceeds 0.5.

    Its receptive field is exactly k x k, so blocks farther than k // 2 pixels from the RoI
    provably have no effect: a local model with a known answer. The comparison with 0.5 runs in
    float32 whatever the precision of the convolution, so that under autocast only the filter's
    rounding can move a pixel (with a large `sharpness`, pixels a hair from 0.5 then flip).

    Parameters
    ----------
    k : int
        Side of the box filter; odd.
    channels : int
        Input channels; the filter averages over all of them.
    sharpness : float
        Slope of the sigmoid around 0.5.

    Examples
    --------
    >>> image = torch.zeros(1, 1, 6, 6); image[..., :3, :] = 1.0
    >>> (CenterSurroundModel(k=3)(image)[0, 0, :, 3] > 0.5).tolist()   # a column across the edge
    [True, True, True, False, False, False]
    """

    def __init__(self, k: int = 5, channels: int = 1, sharpness: float = 20.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, k, padding=k // 2, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / (k * k * channels))
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, shape (B, 1, H, W), float32.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images in [0, 1].
        """
        return torch.sigmoid(self.sharpness * (self.conv(x).float() - 0.5))


class PlantedCauseModel(nn.Module):
    """Segments bright pixels only when a marker block far away is bright: a planted remote cause.

    Output = sigmoid(s * (x - 0.5)) * gate, gate = sigmoid(s * (mean of the marker block - 0.5)).
    Replacing the marker block with dark content removes the whole segmentation: the marker
    supports every RoI (negative ATE), and no other block outside the RoI matters.

    Parameters
    ----------
    marker : (row, col, size), or (z, row, col, size) for volumes
        First pixel (voxel) and side of the marker block (cube).
    sharpness : float
        Slope s of both sigmoids.

    Examples
    --------
    >>> volume = torch.zeros(1, 1, 4, 4, 4); volume[..., 2:, 2:, 2:] = 1.0
    >>> int((PlantedCauseModel(marker=(0, 0, 0, 2))(volume) > 0.5).sum())   # marker dark: nothing
    0
    >>> image = torch.zeros(1, 1, 8, 8); image[..., 4:, 4:] = 1.0; image[..., :2, :2] = 1.0
    >>> model = PlantedCauseModel(marker=(0, 0, 2))
    >>> int((model(image) > 0.5).sum())          # the 4 x 4 object and the marker itself
    20
    >>> image[..., :2, :2] = 0.0                 # darken the marker: nothing is segmented
    >>> int((model(image) > 0.5).sum())
    0
    """

    def __init__(self, marker: tuple[int, ...], sharpness: float = 30.0) -> None:
        super().__init__()
        self.marker = marker  # (row, col, size) or (z, row, col, size)
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, shape (B, 1, H, W) (or (B, 1, D, H, W)): bright pixels, gated by the marker.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W), or (B, C, D, H, W) when the marker has a z
            Images (volumes) in [0, 1].
        """
        *start, s = self.marker
        region = x[(slice(None), slice(None), *(slice(p, p + s) for p in start))]
        gate = torch.sigmoid(self.sharpness * (region.mean(dim=tuple(range(1, region.dim()))) - 0.5))
        pixel = torch.sigmoid(self.sharpness * (x.mean(dim=1, keepdim=True) - 0.5))
        return pixel * gate.reshape(-1, *([1] * (x.dim() - 1)))


class DictOutputModel(nn.Module):
    """Returns ``{"aux": <a scalar>, key: net(x)}``: the segmentation inside a dict output.

    Parameters
    ----------
    net : torch.nn.Module
        The wrapped segmenter.
    key : str
        Key of the segmentation (the adapter finds ``"out"`` by itself; others need ``output_key``).
    """

    def __init__(self, net: nn.Module, key: str = "out") -> None:
        super().__init__()
        self.net, self.key = net, key

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"aux": mean of x, key: net(x)}``.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images for `net`.
        """
        return {"aux": x.mean(), self.key: self.net(x)}


class TupleOutputModel(nn.Module):
    """Returns ``(net(x), x)``: the segmentation first in a tuple output.

    Parameters
    ----------
    net : torch.nn.Module
        The wrapped segmenter.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(net(x), x)``.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images for `net`.
        """
        return self.net(x), x


class NormalisedInputModel(nn.Module):
    """Expects normalised input ``(x - mean) / std`` and runs `net` on the [0, 1] image it stands for.

    Explained with ``normalize=([mean] * C, [std] * C)`` it gives `net`'s map exactly.

    Parameters
    ----------
    net : torch.nn.Module
        The wrapped segmenter (on [0, 1] images).
    mean, std : float
        The normalisation the model expects.
    """

    def __init__(self, net: nn.Module, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`net` on the images that `x` is the normalisation of.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Normalised images, ``(image - mean) / std``.
        """
        return self.net(x * self.std + self.mean)


class LogitModel(nn.Module):
    """Returns the logit of `net`'s probability: explained with ``activation="sigmoid"`` it gives `net`'s map.

    Parameters
    ----------
    net : torch.nn.Module
        A segmenter with probabilities in [0, 1].
    eps : float
        Clamping of the probabilities before the logit.
    """

    def __init__(self, net: nn.Module, eps: float = 1e-6) -> None:
        super().__init__()
        self.net, self.eps = net, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``logit(net(x))``, shape (B, 1, H, W).

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images for `net`.
        """
        return torch.logit(self.net(x), eps=self.eps)


class AmbiguousDictModel(nn.Module):
    """Returns a dict of two equally plausible tensors, ``{"a": ..., "b": ...}``: output_key is required.

    Parameters
    ----------
    keys : tuple of str
        The dict's keys; each maps to the first input channel.
    """

    def __init__(self, keys: tuple[str, ...] = ("a", "b")) -> None:
        super().__init__()
        self.keys = tuple(keys)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{key: x[:, :1] for each key}``.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images.
        """
        return {k: x[:, :1] for k in self.keys}


class FailingModel(nn.Module):
    """Raises ``RuntimeError(message)`` on every call: a model that breaks.

    Parameters
    ----------
    message : str
        The error's message.
    """

    def __init__(self, message: str = "the model exploded") -> None:
        super().__init__()
        self.message = message

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Never returns: raises ``RuntimeError(message)``.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images (unused).
        """
        raise RuntimeError(self.message)


class OutOfMemoryAbove(nn.Module):
    """Wraps `net` and raises ``torch.OutOfMemoryError`` for batches larger than `limit`, like a device
    whose memory is full; ``largest`` records the largest batch that ran, ``calls`` counts the calls.

    Parameters
    ----------
    net : torch.nn.Module
        The model that runs when the batch fits.
    limit : int
        Largest batch that fits (0: none does).
    message : str
        The error's message.
    free_calls : int
        The first calls run whatever their batch size (the memory fills up afterwards), e.g. 1 to
        let the factual forward of an explanation pass.

    Examples
    --------
    >>> fussy = OutOfMemoryAbove(nn.Identity(), limit=2)
    >>> fussy(torch.zeros(2, 1)).shape[0], fussy.largest
    (2, 2)
    >>> fussy(torch.zeros(3, 1))
    Traceback (most recent call last):
    ...
    torch.OutOfMemoryError: out of memory (simulated)
    """

    def __init__(
        self, net: nn.Module, limit: int, message: str = "out of memory (simulated)", *, free_calls: int = 0
    ) -> None:
        super().__init__()
        self.net, self.limit, self.message, self.free_calls = net, limit, message, free_calls
        self.largest = self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`net`'s output, or ``torch.OutOfMemoryError`` when the batch exceeds `limit`.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images for `net`.
        """
        self.calls += 1
        if x.shape[0] > self.limit and self.calls > self.free_calls:
            raise torch.OutOfMemoryError(self.message)
        self.largest = max(self.largest, x.shape[0])
        return self.net(x)


class TwoChannelLinear(nn.Module):
    """features = [x, -x] (1x1 conv), logit z = a * A1 + b * A2 = (a - b) x: Grad-CAM is known exactly.

    S = sum over the RoI of z, so dS/dA1 = a and dS/dA2 = b on RoI pixels, 0 elsewhere:
    alpha = (a, b) * |RoI| / (H W) and cam = (a - b) |RoI| / (H W) * x. One input channel.

    Parameters
    ----------
    a, b : float
        Head weights of the two feature channels.
    probabilities : bool
        Return sigmoid probabilities (the logits stay available through :meth:`logits`) instead of
        the logits.
    """

    def __init__(self, a: float, b: float, probabilities: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1, bias=False)
        self.head = nn.Conv2d(2, 1, 1, bias=False)
        self.features.weight.data = torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1)
        self.head.weight.data = torch.tensor([a, b]).reshape(1, 2, 1, 1)
        self.probabilities = probabilities

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logit z = (a - b) x, shape (B, 1, H, W).

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            One-channel images.
        """
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logit (a - b) x, or its sigmoid when `probabilities`.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            One-channel images.
        """
        z = self.logits(x)
        return torch.sigmoid(z) if self.probabilities else z


class ThresholdedModel(nn.Module):
    """A 3 x 3 convolution whose output is thresholded at 0: a hard mask with no gradient.

    The convolution keeps torch's default (random, global-generator) initialisation.

    Parameters
    ----------
    channels : int
        Input channels.
    """

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The hard mask ``conv(x) > 0`` as float 0/1 (no gradient).

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Images.
        """
        return (self.conv(x) > 0).float()


class SkipNet(nn.Module):
    """A tiny random encoder-decoder with a skip connection: effects of every stage are non-trivial.

    ``enc`` (3 -> 6) -> ``down`` (stride 2, 6 -> 8) -> ``up`` (x2) -> ``dec`` on [up, enc] (14 -> 1),
    sigmoid output. Needs even H and W and three input channels.

    Parameters
    ----------
    seed : int
        Seed of the weights (:func:`randomise_parameters`, scale 0.4).
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 6, 3, padding=1)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.dec = nn.Conv2d(14, 1, 3, padding=1)
        randomise_parameters(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, shape (B, 1, H, W).

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Three-channel images, even H and W.
        """
        e = torch.tanh(self.enc(x - 0.5))
        u = self.up(torch.tanh(self.down(e)))
        return torch.sigmoid(self.dec(torch.cat([u, e], 1)))


class BranchyModel(nn.Module):
    """Three branches with known component effects, for three-channel images.

    ``main`` drives the output; ``dead`` is multiplied by zero (provably no effect anywhere);
    ``outside`` only reaches output rows 0-9 (its map rows 0-7 spread by the 5 x 5 ``post``
    filter), so it cannot affect an RoI below row 9.

    Parameters
    ----------
    seed : int
        Seed of the weights (:func:`randomise_parameters`, scale 0.4).
    """

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        self.main = nn.Conv2d(3, 1, 3, padding=1)
        self.dead = nn.Conv2d(3, 4, 3, padding=1)
        self.outside = nn.Conv2d(3, 1, 3, padding=1)
        self.post = nn.Conv2d(1, 1, 5, padding=2)
        randomise_parameters(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities, shape (B, 1, H, W).

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W)
            Three-channel images.
        """
        rows = torch.zeros(1, 1, x.shape[-2], 1, device=x.device, dtype=x.dtype)
        rows[..., :8, :] = 1
        y = self.main(x - 0.5) + 0 * self.dead(x).sum(1, keepdim=True) + rows * self.outside(x)
        return torch.sigmoid(4 * self.post(y))


class ColumnsModel(nn.Module):
    """Image (1, 4, 20), block 4: a 1 x 5 grid whose block 0 is the RoI.

    RoI columns 0-2 are foreground iff block 1 is bright, column 3 iff block 2 is; blocks 3 and 4
    do nothing. With the target = the whole RoI and p foreground columns, DSC = 2p / (p + 4).

    Examples
    --------
    >>> image = torch.zeros(1, 4, 20); image[:, :, 4:8] = 1.0      # block 1 bright, block 2 dark
    >>> (ColumnsModel()(image[None])[0, 0, 0, :5] > 0.5).tolist()
    [True, True, True, False, False]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of shape (B, 1, 4, 20) (module example: the RoI's columns follow blocks 1 and 2).

        Parameters
        ----------
        x : Tensor of shape (B, 1, 4, 20)
            Images of shape (B, 1, 4, 20).
        """
        b1 = x[:, 0, :, 4:8].mean(dim=(1, 2))
        b2 = x[:, 0, :, 8:12].mean(dim=(1, 2))
        out = torch.zeros(x.shape[0], 1, 4, 20, device=x.device)
        out[:, 0, :, 0:3] = torch.sigmoid(50 * (b1 - 0.5))[:, None, None]
        out[:, 0, :, 3] = torch.sigmoid(50 * (b2 - 0.5))[:, None]
        return out
