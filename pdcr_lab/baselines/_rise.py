"""RISE (Petsiuk, Das and Saenko, BMVC 2018) adapted to segmentation: masks weighted by the RoI outcome.

N random smooth masks m_i in [0, 1] are drawn as in RISE: a coarse s x s grid of cells kept with
probability p, upsampled bilinearly to (s + 1) x cell pixels and cropped at a random shift of less
than one cell. The model sees x_i = m_i * X + (1 - m_i) * F (F: the fill image, black in RISE) and
the score of mask i is the RoI outcome M_i = M(f(x_i)) (100 x DSC in the RoI by default, the quantity
PdCR explains). The saliency of pixel u is the expected outcome when u is kept,

    S(u) = sum_i M_i m_i(u) / sum_i m_i(u)

and the block map is the mean of S over each block. Large = the block's content SUPPORTS the RoI
(``support_sign = +1``).

Adaptations *(ours)*:

* RISE divides by N p, the *expected* coverage; we divide by the actual coverage sum_i m_i(u). Both
  estimate the same quantity, but with N p the map of a model whose outcome barely varies is
  proportional to the random coverage of the masks, i.e. mask noise that does not depend on the
  model (on the zoo's U-Net that noise alone made the maps before and after re-initialising the
  weights rank-correlate at 0.99).
* By default the RoI's own blocks are never masked (``keep_roi=True``), as PdCR never perturbs
  them; the outcome then varies only with the blocks that are being ranked.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from ..checks import check_choice, check_float, check_int, describe
from ..call import auto_batch_size, evaluation
from ..estimator import run_batched
from ..interventions import INTERVENTIONS
from ..call import RoiOutcome, block_means, finish, prepare, replacement_image, shared_doc

__all__ = ["rise", "rise_masks"]


def rise_masks(n: int, shape: tuple[int, int], cell: int, p_keep: float, seed: int) -> torch.Tensor:
    """The RISE masks, (n, H, W) float in [0, 1]; fixed by the seed, independent of batching.

    Parameters
    ----------
    n : int
        Number of masks.
    shape : (H, W)
        Image size.
    cell : int
        Side of a mask cell in pixels (a coarse grid upsampled bilinearly and shifted at random).
    p_keep : float
        Probability that a cell is kept.
    seed : int
        Seed of the masks.

    Examples
    --------
    >>> from pdcr_lab.baselines import rise_masks
    >>> masks = rise_masks(4, (8, 8), cell=4, p_keep=0.5, seed=0)
    >>> tuple(masks.shape), bool(masks.min() >= 0 and masks.max() <= 1)
    ((4, 8, 8), True)
    """
    h, w = shape
    sy, sx = math.ceil(h / cell), math.ceil(w / cell)
    g = torch.Generator().manual_seed(seed)
    grids = (torch.rand(n, 1, sy, sx, generator=g) < p_keep).float()
    shifts = torch.randint(0, cell, (n, 2), generator=g)
    up = F.interpolate(grids, size=((sy + 1) * cell, (sx + 1) * cell), mode="bilinear", align_corners=False)
    rows = shifts[:, 0, None] + torch.arange(h)  # (n, H)
    cols = shifts[:, 1, None] + torch.arange(w)  # (n, W)
    index = torch.arange(n)[:, None, None]
    return up[:, 0][index, rows[:, :, None], cols[:, None, :]].clamp(0.0, 1.0)


@shared_doc
def rise(
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    n_masks: int = 1000,
    cell: int = 16,
    p_keep: float = 0.5,
    fill: str = "zero",
    keep_roi: bool = True,
    bank: Any = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    **reading: Any,
) -> xr.Dataset:
    """RISE saliency of the RoI outcome, averaged on PdCR's block grid.

    Parameters
    ----------
    model, image, roi, target
        As in :func:`pdcr_lab.explain`; several RoIs share the masked forward passes.
    n_masks : int
        N, random masks (RISE used 4000-8000 at 224 x 224; 1000 keeps 96 x 96 maps stable to a few
        percent at CPU cost).
    cell : int
        Side of a mask cell in pixels (RISE: 224 / 7 = 32 at 224 x 224; 16 at 96 x 96 keeps the
        same cells-per-image order while staying coarser than a block).
    p_keep : float
        Probability that a cell is kept (RISE: 0.5).
    fill : {"zero", "blur", "mean", "natural"}
        F, what a masked pixel shows (RISE: zero); see :mod:`pdcr_lab.interventions`.
    keep_roi : bool
        Never mask the RoI's blocks (see the module notes). With several RoIs the blocks of all of
        them are kept, so each RoI's map then differs from its single-RoI map at the other RoIs'
        blocks (the registry explains one RoI per call for this reason).
    bank : PatchBank, optional
        Needed by ``fill="natural"``.
    batch_size : int, optional
        Masked images per forward pass; does not change the result.
    {shared}

    Returns
    -------
    xarray.Dataset
        The effects schema with ``ate`` = block means of S (outcome units), ``support_sign = +1``,
        and the pixel map ``saliency``.

    References
    ----------
    Petsiuk, Das and Saenko, "RISE: Randomized input sampling for explanation of black-box models",
    BMVC 2018.
    """
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="rise", bank=bank, **reading)
    n_masks = check_int("n_masks", n_masks, minimum=1)
    cell = check_int("cell", cell, minimum=1)
    p_keep = check_float("p_keep", p_keep, minimum=0.0)
    if not 0.0 < p_keep <= 1.0:
        raise ValueError(f"p_keep={p_keep} must be in (0, 1]")
    check_choice("fill", fill, INTERVENTIONS)
    if not isinstance(keep_roi, bool):
        raise TypeError(f"keep_roi must be True or False, got {describe(keep_roi)}")
    h, w = call.image.shape[1:]
    masks = rise_masks(n_masks, (h, w), cell, p_keep, call.seed)
    filler = replacement_image(fill, call.image, call.block, bank=call.bank, seed=call.seed)
    if keep_roi:
        # pixels of every block that overlaps any RoI stay visible
        kept = torch.from_numpy(call.roi_blocks.any(axis=0))
        kept = kept.repeat_interleave(call.block, 0).repeat_interleave(call.block, 1)
        masks = torch.where(kept, torch.ones(()), masks)
    size = batch_size or auto_batch_size(tuple(call.image.shape), call.device)
    with evaluation(model, call.device):
        state = RoiOutcome(call)
        fill_dev, masks_dev = filler.to(call.device), masks.to(call.device)

        def evaluate(index: torch.Tensor, _draws: torch.Tensor) -> torch.Tensor:
            m = masks_dev[index.to(call.device)].unsqueeze(1)
            return state(m * state.image + (1 - m) * fill_dev)

        index = torch.arange(n_masks)
        scores, _ = run_batched(evaluate, index, index, size)  # (N, R) float64
        m0 = state.m0
    coverage = masks.double().sum(dim=0).clamp(min=1e-12)
    saliency = torch.einsum("nr,nhw->rhw", scores, masks.double()) / coverage
    return finish(
        call,
        method="rise",
        block_map=block_means(saliency, call.block),
        m0=m0,
        forwards=state.forwards + n_masks,
        support_sign=1,
        units=f"{call.outcome.units} (expected outcome when kept)",
        pixel_maps={"saliency": saliency.numpy()},
        attrs={"n_masks": n_masks, "cell": cell, "p_keep": p_keep, "fill": fill, "keep_roi": keep_roi},
    )
