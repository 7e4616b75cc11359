"""MiSuRe (Hasany et al., arXiv 2406.12173): the minimally sufficient region of an RoI's segmentation.

Two stages (docs/method.md section 6), on the image blended with a baseline B where a mask m is 0:
x(m) = m * X + (1 - m) * B.

1. *Sufficient region.* Keep-masks K_r = {pixels within Euclidean distance r of the RoI} are grown in
   steps of ``dilation`` pixels; all of them are evaluated in one batch, and the sufficient region S
   is the smallest K_r whose binarised prediction inside the RoI reproduces the factual one with
   DSC >= ``sufficiency`` (the full image always does).
2. *Minimally sufficient mask.* A continuous mask m = sigmoid(theta), theta on a grid ``stride`` times
   coarser than the image and upsampled bilinearly, is optimised inside S (m is 0 outside S, 1 on
   the RoI's blocks) with Adam on

       loss = (1 - softDSC_RoI(f(x(m)), factual)) + l1 * |m|_1 / |F| + tv * TV(m) / |F|

   where F is S without the RoI's blocks (the free pixels) and TV the anisotropic total variation.

The map is m (pixel variable ``mask``), averaged over each block on PdCR's grid. Large = the pixel is
needed to reproduce the RoI's segmentation (``support_sign = +1``). RoI blocks are kept (m = 1) and
0 in ``ate``, as in PdCR.

Hyper-parameters *(ours; the paper's values could not be read)*, each with its reason:

* ``baseline="mean"``: a removed pixel shows the mean colour (of `bank` when given, else of the
  image). It removes what a pixel carries, colour included, while staying at the data's average
  colour. Blur (the project's, sigma = b / 2) keeps a block's low frequencies, so a cause carried
  by colour survives it: on the planted ``gate`` task MiSuRe with blur finds no sufficient region
  beyond the RoI at all (AUROC 0.5), with the mean colour it finds the marker. Black (zero) is
  further off the training distribution.
* ``sufficiency=0.9``: DSC >= 0.9 with the factual prediction in the RoI counts as "reproduces the
  segmentation"; 1.0 would demand pixel-exact boundaries and almost always return the full image.
* ``dilation=4`` pixels: half a block, finer than the map's grid, so the sufficient region is not
  quantised coarser than the result; at 96 x 96 that is <= 25 radii, all run in one batch.
* ``stride=4``: mask parameters on a 4x coarser grid (24 x 24 at 96 x 96): smooth masks, few
  parameters, still 2 x 2 mask cells per 8 x 8 block.
* ``init=3.0``: m starts at sigmoid(3) = 0.95, i.e. at the sufficient region, and is shrunk from there.
* ``steps=150``, ``lr=0.1`` (Adam): the loss plateaus well before 150 steps on the embedded
  datasets; lr 0.1 moves theta by up to ~15 over the run, enough to switch any cell fully off or on.
* ``l1=0.05``: sparsity weight on the mean of m over F. Small against the Dice term (range 0..1),
  so a pixel is dropped only when removing it costs less than ~5% DSC per full free area: the mask
  keeps what matters instead of collapsing to the RoI.
* ``tv=0.02``: smoothness weight (per free pixel); enough to remove salt-and-pepper masks, small
  enough not to merge separate causes.
* ``eps=1e-6`` in the soft Dice; an RoI with no predicted foreground explains its background
  instead (recorded in the per-RoI variable ``segment``: 1 foreground, 0 background).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from scipy import ndimage
from torch import nn

from ..checks import check_choice, check_float, check_int
from ..call import auto_batch_size
from ..estimator import run_batched
from ..call import RoiOutcome, block_means, finish, gradients, prepare, replacement_image, shared_doc

__all__ = ["misure"]

_BASELINES = ("blur", "zero", "mean")


def _dice(pred: torch.Tensor, ref: torch.Tensor, roi: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B,) DSC in [0, 1] inside `roi` of (B, H, W) predictions against an (H, W) reference."""
    inter = (pred * ref * roi).sum(dim=(-1, -2))
    return 2 * inter / ((pred * roi).sum(dim=(-1, -2)) + (ref * roi).sum() + eps)


@shared_doc
def misure(
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    baseline: str = "mean",
    sufficiency: float = 0.9,
    dilation: int = 4,
    stride: int = 4,
    steps: int = 150,
    lr: float = 0.1,
    l1: float = 0.05,
    tv: float = 0.02,
    init: float = 3.0,
    bank: Any = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    **reading: Any,
) -> xr.Dataset:
    """MiSuRe map of the RoI: the minimally sufficient mask, averaged on PdCR's block grid.

    Parameters
    ----------
    model, image, roi, target
        As in :func:`pdcr_lab.explain`; MiSuRe explains the model's factual prediction in the RoI,
        so `target` only changes the recorded ``m0``. Several RoIs are explained one after another.
    baseline : {"mean", "blur", "zero"}
        What a removed pixel shows (B); see the module notes for this and every value below.
    sufficiency : float in (0, 1]
        DSC with the factual prediction that the sufficient region must reach.
    dilation : int
        Growth step of the sufficient region, in pixels.
    stride : int
        The mask is optimised on a grid `stride` times coarser than the image (must divide H, W).
    steps, lr : int, float
        Adam iterations and learning rate of the mask optimisation.
    l1, tv : float
        Weights of the sparsity and total-variation terms.
    init : float
        Initial mask logit (sigmoid(init) is the starting mask inside S).
    bank : PatchBank, optional
        Mean colour for ``baseline="mean"``.
    batch_size : int, optional
        Images per forward pass in the dilation stage; does not change the result.
    {shared}

    Returns
    -------
    xarray.Dataset
        The effects schema with ``ate`` = block means of m in [0, 1], ``support_sign = +1``; pixel
        maps ``mask`` and ``sufficient``; per-RoI ``sufficient_radius``, ``sufficient_dice``,
        ``final_dice`` (DSC in [0, 1] of the binarised prediction on x(m) vs the factual one) and
        ``segment``.

    References
    ----------
    Hasany, Petitjean and Mériaudeau, "MiSuRe is all you need to explain your image segmentation",
    arXiv 2406.12173 (2024).
    """
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="misure", bank=bank, **reading)
    check_choice("baseline", baseline, _BASELINES)
    sufficiency = check_float("sufficiency", sufficiency, minimum=0.0)
    if not 0.0 < sufficiency <= 1.0:
        raise ValueError(f"sufficiency={sufficiency} must be in (0, 1]")
    dilation = check_int("dilation", dilation, minimum=1)
    stride = check_int("stride", stride, minimum=1)
    steps = check_int("steps", steps, minimum=0)
    lr, l1, tv = (check_float(n, v, minimum=0.0) for n, v in (("lr", lr), ("l1", l1), ("tv", tv)))
    init = check_float("init", init)
    h, w = call.image.shape[1:]
    if h % stride or w % stride:
        raise ValueError(f"stride={stride} does not divide the {h}x{w} image")
    fill = replacement_image(baseline, call.image, call.block, bank=call.bank, seed=call.seed)
    kept_blocks = torch.from_numpy(call.roi_blocks)
    kept = kept_blocks.repeat_interleave(call.block, 1).repeat_interleave(call.block, 2).float()  # (R, H, W)
    size = batch_size or auto_batch_size(tuple(call.image.shape), call.device)
    forwards = 0
    masks, regions, scalars = [], [], {"sufficient_radius": [], "sufficient_dice": [], "final_dice": [], "segment": []}
    with gradients(model, call.device):
        state = RoiOutcome(call)
        forwards += state.forwards
        dev = call.device
        x0, b0 = state.image, fill.to(dev)
        for r in range(len(call.rois)):
            roi_r = state.rois[r].to(x0.dtype)
            foreground = bool((state.prediction * roi_r).sum() > 0)
            ref = state.prediction if foreground else 1 - state.prediction

            def soft(images: torch.Tensor, fg: bool = foreground) -> torch.Tensor:
                p = call.adapter.probability(call.adapter.logits(images))
                return p if fg else 1 - p

            # stage 1: the sufficient region, every radius in one batched pass
            distance = torch.from_numpy(ndimage.distance_transform_edt(~call.rois[r].numpy())).to(dev)
            radii = torch.arange(0, float(distance.max()) + dilation, dilation, device=dev)
            kept_r = kept[r].to(dev)
            region_masks = torch.maximum((distance[None] <= radii[:, None, None]).to(x0.dtype), kept_r)

            def evaluate(index: torch.Tensor, _draws: torch.Tensor) -> torch.Tensor:
                m = region_masks[index.to(dev)].unsqueeze(1)
                with torch.no_grad():
                    pred = (soft(m * x0 + (1 - m) * b0) > call.adapter.threshold).to(x0.dtype)
                return _dice(pred, ref, roi_r)[:, None]

            index = torch.arange(len(radii))
            dice, _ = run_batched(evaluate, index, index, size)
            forwards += len(radii)
            enough = np.flatnonzero(dice[:, 0].numpy() >= sufficiency - 1e-9)
            pick = int(enough[0]) if len(enough) else len(radii) - 1
            region = region_masks[pick]
            free = region * (1 - kept_r)
            n_free = float(free.sum())

            # stage 2: the minimally sufficient mask inside the region
            theta = torch.full((1, 1, h // stride, w // stride), init, device=dev, requires_grad=True)
            optimiser = torch.optim.Adam([theta], lr=lr)

            def mask_of(t: torch.Tensor) -> torch.Tensor:
                up = F.interpolate(torch.sigmoid(t), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
                return kept_r + free * up

            for _ in range(steps if n_free > 0 else 0):
                m = mask_of(theta)
                p = soft((m * x0 + (1 - m) * b0).unsqueeze(0))
                fit = 1 - _dice(p, ref, roi_r)[0]
                sparsity = (m * free).sum() / n_free
                variation = ((m[1:] - m[:-1]).abs().sum() + (m[:, 1:] - m[:, :-1]).abs().sum()) / n_free
                loss = fit + l1 * sparsity + tv * variation
                (grad,) = torch.autograd.grad(loss, theta)
                theta.grad = grad
                optimiser.step()
            forwards += steps if n_free > 0 else 0
            with torch.no_grad():
                final = mask_of(theta) if n_free > 0 else region
                pred = (soft((final * x0 + (1 - final) * b0).unsqueeze(0)) > call.adapter.threshold).to(x0.dtype)
                forwards += 1
            masks.append(final.detach().double().cpu())
            regions.append(region.bool().cpu().numpy())
            scalars["sufficient_radius"].append(float(radii[pick]))
            scalars["sufficient_dice"].append(float(dice[pick, 0]))
            scalars["final_dice"].append(float(_dice(pred, ref, roi_r)[0]))
            scalars["segment"].append(int(foreground))
        m0 = state.m0
    mask = torch.stack(masks)
    return finish(
        call,
        method="misure",
        block_map=block_means(mask, call.block),
        m0=m0,
        forwards=forwards,
        support_sign=1,
        units="mask value in [0, 1]",
        pixel_maps={"mask": mask.numpy(), "sufficient": np.stack(regions)},
        scalars={k: np.asarray(v) for k, v in scalars.items()},
        attrs={
            "baseline": baseline, "sufficiency": sufficiency, "dilation": dilation, "stride": stride,
            "steps": steps, "lr": lr, "l1": l1, "tv": tv, "init": init,
        },
    )
