"""Occlusion on PdCR's block grid: each block replaced by a fixed occluder, one forward per block.

This is the paper's "zero" ablation (docs/method.md section 5) without screening or tau-zeroing: the map
is M(f(X with block p := occluder)) - M0 for every non-RoI block, in outcome units. It runs
:func:`pdcr_lab.explain` with a deterministic intervention and ``tau = 0`` (nothing is screened out
or zeroed), so it shares the engine's batching and checks. Negative = the block SUPPORTS the RoI
(``support_sign = -1``, as PdCR): the faithfulness ranking is "most negative first".
"""

from __future__ import annotations

from typing import Any

import torch
import xarray as xr
from torch import nn

from ..checks import check_choice
from ..engine import explain
from ..schema import validate
from ..call import check_reading, shared_doc

__all__ = ["occlusion", "OCCLUDERS"]

#: Deterministic interventions an occluder can be (``natural`` is PdCR itself).
OCCLUDERS: tuple[str, ...] = ("zero", "blur", "mean")


@shared_doc
def occlusion(
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    occluder: str = "zero",
    bank: Any = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    **reading: Any,
) -> xr.Dataset:
    """Occlusion map: the change of the RoI outcome when one block is replaced by an occluder.

    Parameters
    ----------
    model, image, roi, target
        As in :func:`pdcr_lab.explain`.
    occluder : {"zero", "blur", "mean"}
        What replaces a block (:mod:`pdcr_lab.interventions`): black (the paper's ablation), the
        same block of a Gaussian-blurred copy (sigma = b / 2), or the mean colour (of `bank` if given).
    bank : PatchBank, optional
        Only used by ``occluder="mean"``.
    batch_size : int, optional
        Perturbed images per forward pass (does not change the result).
    {shared}

    Returns
    -------
    xarray.Dataset
        The effects schema, ``attrs["method"] = "occlusion_<occluder>"``, ``support_sign = -1``.
    """
    check_choice("occluder", occluder, OCCLUDERS)
    reading = check_reading("occlusion", reading)
    ds = explain(model, image, roi=roi, target=target, bank=bank, intervention=occluder, coarse=1, fine=1, tau=0.0,
                 seed=seed, device=device, batch_size=batch_size, **reading)
    ds.attrs.update(method=f"occlusion_{occluder}", support_sign=-1, occluder=occluder, outcome_units=ds.attrs["units"])
    return validate(ds)
