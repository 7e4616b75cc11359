"""The random map: uniform random block scores, the control every faithfulness score must beat.

It ignores the model beyond recording ``m0``, so it must fail the model-randomisation check and
score like chance on deletion/insertion curves; a method that does no better than it explains
nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..call import RoiOutcome, evaluation, finish, prepare, shared_doc

__all__ = ["random_scores"]


@shared_doc
def random_scores(
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    bank: Any = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    **reading: Any,
) -> xr.Dataset:
    """Uniform random scores in [0, 1) per block (``attrs["method"] = "random"``, ``support_sign = +1``).

    The scores depend on the seed and the grid only, so every RoI of a call gets the same map.

    Parameters
    ----------
    model, image, roi, target
        As in :func:`pdcr_lab.explain`; the model only runs once, for ``m0``.
    bank : PatchBank, optional
        Ignored (accepted so that every explainer takes the same arguments).
    {shared}

    Returns
    -------
    xarray.Dataset
        The effects schema with ``ate`` uniform in [0, 1) outside the RoI blocks.

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.baselines import random_scores
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Sigmoid())
    >>> ds = random_scores(net, torch.rand(1, 8, 8), roi=(0, 0, 4, 4), block=4, seed=1)
    >>> ds.attrs["method"], ds.ate.shape, float(ds.ate[0, 0])
    ('random', (2, 2), 0.0)
    """
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="random_scores", **reading)
    with evaluation(model, call.device):
        state = RoiOutcome(call)
    # One map per image, the same for every RoI: a control must not depend on what is explained.
    values = np.broadcast_to(np.random.default_rng(call.seed).random(call.grid), (len(call.rois), *call.grid))
    return finish(call, method="random", block_map=values, m0=state.m0, forwards=state.forwards, support_sign=1,
                  units="random score")
