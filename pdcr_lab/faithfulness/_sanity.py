"""Model-parameter randomisation check (Adebayo et al., NeurIPS 2018): the map must change.

Definition *(ours)*. The explainer is run on the model and on a copy whose weights are
re-initialised (every module with ``reset_parameters`` is reset under a fixed seed; any other
parameter is redrawn from a normal distribution with its own mean and standard deviation; buffers
such as normalisation statistics are kept). Over the candidate (non-RoI) blocks, with the support
scores s = support_sign * ate of :func:`~pdcr_lab.faithfulness.support_scores`:

* ``spearman``: Spearman rank correlation of s before vs after; ``spearman_abs`` the same on |ate|.
* Convention for constant maps (a rank correlation is undefined there): 1 if the two maps are
  equal, else 0 (they carry no common ordering).
* ``passed``: |spearman| < ``max_correlation`` (default 0.5): the explanation depends on what the
  model learned (a map that stays the same, e.g. an edge detector, fails).
* ``constant_after``: the map of the randomised model is constant (typically all zero, when the
  random model's RoI outcome does not react to any block). Such a map passes by the convention
  above; report it, because it passes for a weaker reason than a map that changed its ordering.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy import stats
from torch import nn

from ..checks import check_float, check_int, describe
from ._curves import support_scores

__all__ = ["randomize_weights", "rank_correlation", "randomization_check"]


def randomize_weights(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A deep copy of `model` with re-initialised weights (the global RNG state is left untouched).

    Parameters
    ----------
    model : torch.nn.Module
        The trained model; it is not modified.
    seed : int
        Seed of the re-initialisation.

    Examples
    --------
    >>> net = torch.nn.Conv2d(1, 1, 3)
    >>> torch.nn.init.zeros_(net.weight)
    Parameter containing:
    ...
    >>> copy = randomize_weights(net, seed=0)
    >>> bool(net.weight.abs().sum() == 0), bool(copy.weight.abs().sum() > 0)
    (True, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    seed = check_int("seed", seed, minimum=0)
    clone = copy.deepcopy(model)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            own = list(module.parameters(recurse=False))
            if own and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
        with torch.no_grad():
            for p in clone.parameters():
                if id(p) not in reset:
                    spread = float(p.std()) if p.numel() > 1 else 1.0
                    p.copy_(torch.randn_like(p) * (spread or 1.0) + float(p.mean()))
    return clone


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two score vectors; 1 if equal and constant, 0 if one is constant otherwise.

    Parameters
    ----------
    a, b : array
        Scores of the same blocks (flattened).

    Examples
    --------
    >>> rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]))
    0.5
    >>> rank_correlation(np.zeros(3), np.zeros(3)), rank_correlation(np.zeros(3), np.arange(3))
    (1.0, 0.0)
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {a.size} and {b.size} blocks")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(stats.spearmanr(a, b).statistic)


def randomization_check(
    explainer: Callable[..., xr.Dataset],
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    seed: int = 0,
    max_correlation: float = 0.5,
    **options: Any,
) -> xr.Dataset:
    """Run `explainer` on `model` and on its weight-randomised copy; compare the two maps.

    Parameters
    ----------
    explainer : callable
        Any explainer with the one signature (:func:`pdcr_lab.explain`, a baseline).
    model, image, roi, target
        Passed to the explainer (one RoI).
    seed : int
        Seed of the explainer (both runs) and of the re-initialisation.
    max_correlation : float
        The check passes when the rank correlation of the support scores is below this in magnitude.
    **options
        Further keyword arguments of the explainer (``bank=``, ``layer=``, ...).

    Returns
    -------
    xarray.Dataset
        ``before``/``after`` support scores (block_y, block_x), scalars ``spearman``,
        ``spearman_abs``, ``passed`` and ``constant_after``; attrs ``method`` and the definitions used.
    """
    max_correlation = check_float("max_correlation", max_correlation, minimum=0.0)
    original = explainer(model, image, roi=roi, target=target, seed=seed, **options)
    randomized = explainer(randomize_weights(model, seed=seed), image, roi=roi, target=target, seed=seed, **options)
    if "roi" in original["ate"].dims:
        raise ValueError("randomization_check compares maps of one RoI; pass a single roi")
    keep = ~np.asarray(original["roi_block"].values, dtype=bool)
    before, after = support_scores(original), support_scores(randomized)
    rho = rank_correlation(before[keep], after[keep])
    rho_abs = rank_correlation(np.abs(before[keep]), np.abs(after[keep]))
    passed = abs(rho) < max_correlation
    grid = ("block_y", "block_x")
    return xr.Dataset(
        {
            "before": (grid, before, {"long_name": "support score, trained model"}),
            "after": (grid, after, {"long_name": "support score, randomised weights"}),
            "spearman": ((), rho),
            "spearman_abs": ((), rho_abs),
            "passed": ((), bool(passed)),
            "constant_after": ((), bool(np.ptp(after[keep]) == 0)),
        },
        coords={"block_y": original["block_y"].values, "block_x": original["block_x"].values},
        attrs={"method": str(original.attrs.get("method", "unknown")), "seed": seed, "max_correlation": max_correlation,
               "randomisation": "reset_parameters under the seed; other parameters ~ N(mean, std)"},
    )
