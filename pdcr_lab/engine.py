"""The PdCR input-block engine: :func:`explain`.

For each candidate block p of the image, PdCR estimates
ATE(p) = E_B[ M(f(X with block p := B)) ] - M(f(X)) with B drawn from natural blocks, using the
paper's coarse-to-fine screening (METHOD.md sections 2-3). The work is batched: the perturbed
images of many (block, draw) pairs are composed on the device by indexing and run through the model
together; the outcome is reduced on the device and only one number per image leaves it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from ._version import __version__
from ._checks import as_image, as_mask, check_float, check_int, describe
from .adapters import Activation, ModelAdapter
from .banks import PatchBank
from .defaults import PAPER
from .estimator import screened_ate
from .interventions import block_grid, compose, make_intervention
from .outcomes import Outcome, get_outcome
from .schema import effects_dataset, validate

__all__ = ["explain", "parse_rois", "auto_batch_size"]

Roi = Any  # (row, col, height, width) | bool (H, W) mask | a sequence of those | (R, H, W) masks


def parse_rois(roi: Roi, shape: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray, bool]:
    """RoI argument -> (R, H, W) bool masks, (R, 4) bounding boxes, and whether several were given.

    A box is ``(row, col, height, width)`` in pixels and must lie inside the image.
    """
    h, w = shape
    if _is_box(roi):
        items, multi = [roi], False
    elif isinstance(roi, (np.ndarray, torch.Tensor)) and np.ndim(roi) == 2:
        items, multi = [roi], False
    elif isinstance(roi, (np.ndarray, torch.Tensor)) and np.ndim(roi) == 3:
        items, multi = list(roi), True
    elif isinstance(roi, Sequence) and not isinstance(roi, str) and len(roi) > 0:
        items, multi = list(roi), True
    else:
        raise ValueError(
            f"roi must be a (row, col, height, width) box, a boolean (H, W) mask or a list of them, got {describe(roi)}"
        )
    masks, boxes = [], []
    for i, item in enumerate(items):
        name = f"roi[{i}]" if multi else "roi"
        if _is_box(item):
            r, c, bh, bw = (int(v) for v in item)
            if bh < 1 or bw < 1:
                raise ValueError(f"{name}={tuple(item)} is empty; height and width must be >= 1")
            if r < 0 or c < 0 or r + bh > h or c + bw > w:
                raise ValueError(
                    f"{name}={tuple(item)} (row, col, height, width) is out of bounds for an image of {h}x{w}"
                )
            mask = torch.zeros(h, w, dtype=torch.bool)
            mask[r : r + bh, c : c + bw] = True
        else:
            try:
                mask = as_mask(name, item, (h, w))
            except TypeError:
                raise ValueError(
                    f"{name} must be a (row, col, height, width) box or a boolean (H, W) mask, got {describe(item)}"
                ) from None
            if not mask.any():
                raise ValueError(f"{name} is an empty mask: it covers no pixel of the {h}x{w} image")
        rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
        boxes.append((int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)))
        masks.append(mask)
    return torch.stack(masks), np.asarray(boxes, dtype=np.int64), multi


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 4
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    )


def auto_batch_size(image_shape: tuple[int, int, int], device: torch.device) -> int:
    """A batch size that keeps memory bounded: about 16 MB of input on a CPU, free-memory based on CUDA."""
    pixels = int(np.prod(image_shape))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Activations of small segmentation nets take roughly 100-300 floats per input value.
        size = int(free * 0.5 / (pixels * 4 * 300))
        return int(max(1, min(1024, 2 ** int(np.log2(max(size, 1))))))
    size = max(1, (4 * 1024 * 1024) // pixels)
    return int(min(64, 2 ** int(np.log2(size))))


@contextlib.contextmanager
def _evaluation(model: nn.Module, device: torch.device | None) -> Iterator[None]:
    """Eval mode and the requested device for the explanation; the model is restored afterwards."""
    training = model.training
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    original = first.device if first is not None else None
    try:
        model.eval()
        if device is not None and original is not None and original != device:
            model.to(device)
        with torch.inference_mode():
            yield
    finally:
        if device is not None and original is not None and original != device:
            model.to(original)
        model.train(training)


def _progress_callback(progress: bool | Callable[[int, int], None]) -> tuple[Callable[[int, int], None] | None, Any]:
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=0, unit="fwd", desc="PdCR", dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar


def explain(
    model: nn.Module,
    image: Any,
    *,
    roi: Roi,
    target: Any = None,
    bank: PatchBank | None = None,
    intervention: str = "natural",
    block: int = PAPER.block,
    coarse: int = PAPER.coarse,
    fine: int = PAPER.fine,
    tau: float = PAPER.tau,
    outcome: str | Outcome = "dice",
    threshold: float = PAPER.threshold,
    class_index: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    output_key: str | int | None = None,
    activation: Activation = "auto",
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> xr.Dataset:
    """PdCR map of the causal effect of every image block on the segmentation quality in an RoI.

    Parameters
    ----------
    model : torch.nn.Module
        Takes (B, C, H, W) and returns (B, K, H, W) scores, or a dict/tuple holding them; see
        :mod:`pdcr_lab.adapters` for how the output, the activation and the class are chosen.
    image : Tensor or array of shape (C, H, W)
        Float pixel values in [0, 1] (the bank's scale); finite.
    roi : (row, col, height, width) box, boolean (H, W) mask, or a list of them
        Output pixels whose segmentation quality is explained. A list explains several RoIs in
        one call sharing all forward passes; the result then has a ``roi`` dim.
    target : array (H, W), optional
        Ground-truth mask (bool, 0/1 or 0/255). None: the model's own factual prediction is the
        reference (ground-truth-free mode).
    bank : PatchBank, optional
        Natural blocks; required for ``intervention="natural"``; ``"mean"`` uses its mean colour.
    intervention : {"natural", "zero", "mean", "blur"}
        What replaces a block (:mod:`pdcr_lab.interventions`).
    block : int
        Block side b in pixels. It must divide H and W: images that do not tile are refused
        (padding would feed the model an image it was never shown).
    coarse, fine : int
        S screening draws and N fresh estimation draws per block (paper: 3 and 50).
    tau : float
        Screening and zeroing threshold in outcome units (paper: 0.02).
    outcome : {"dice", "soft_dice", "iou"} or Outcome
        The RoI state M (paper: 100 x Dice of the binarised prediction in the RoI).
    threshold : float
        Binarisation of a one-channel output (score > threshold).
    class_index : int, optional
        Explained class of a multi-channel output (default 1 for two channels).
    seed : int
        Seed of the bank draws; recorded in the result. Same seed, inputs and device: same map.
    device : str or torch.device, optional
        Where to run. None: the model's device. The model is moved there for the call and back.
    batch_size : int, optional
        Perturbed images per forward pass; None picks one from the image size and free memory.
        Halved automatically on out-of-memory.
    output_key, activation, normalize
        How to read the model (:class:`pdcr_lab.adapters.ModelAdapter`).
    progress : bool or callable(done, total)
        Show a progress bar, or receive progress counts.

    Returns
    -------
    xarray.Dataset
        The effects dataset (:mod:`pdcr_lab.schema`): ``ate`` over (block_y, block_x) in outcome
        units, negative where the block supports the RoI, with ``stderr``, ``n_draws``,
        ``screened``, ``roi_block``, ``m0`` and the run's parameters in attrs.

    References
    ----------
    Jiang, Xie, Yang et al., "Leveraging Causal Reasoning Method for Explaining Medical Image
    Segmentation Models", arXiv 2602.20511 (2026).

    Examples
    --------
    >>> import torch, pdcr_lab
    >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)   # any (B, C, H, W) -> (B, K, H, W) model
    >>> torch.nn.init.constant_(model.weight, 1 / 9); torch.nn.init.zeros_(model.bias)
    Parameter containing:
    ...
    >>> image = torch.zeros(1, 16, 16); image[:, 4:12, 4:12] = 1.0
    >>> ds = pdcr_lab.explain(model, image, roi=(4, 4, 4, 4), intervention="zero", block=4)
    >>> ds.ate.shape, float(ds.m0)
    ((4, 4), 100.0)
    """
    # -- arguments ----------------------------------------------------------------------------
    adapter = ModelAdapter(model, output_key, activation, class_index, check_float("threshold", threshold), normalize)
    image = as_image("image", image)
    c, h, w = image.shape
    block = check_int("block", block, minimum=1)
    if h % block or w % block:
        sizes = [b for b in range(1, min(h, w) + 1) if h % b == 0 and w % b == 0]
        raise ValueError(f"block={block} does not tile the {h}x{w} image; use a block size in {sizes}, or resize the image")
    coarse = check_int("coarse", coarse, minimum=0)
    fine = check_int("fine", fine, minimum=1)
    tau = check_float("tau", tau, minimum=0.0)
    seed = check_int("seed", seed, minimum=0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    outcome_fn = get_outcome(outcome)
    expected = adapter.expected_channels()
    if expected is not None and expected != c:
        raise ValueError(f"image has {c} channels but the model's first layer expects {expected}")
    rois, boxes, multi = parse_rois(roi, (h, w))
    target_mask = None if target is None else as_mask("target", target, (h, w))
    intervention_obj = make_intervention(intervention, image, block, bank=bank, seed=seed, n_draws=coarse + fine)
    device = torch.device(device) if device is not None else adapter.device()

    # RoI blocks: any block that overlaps the RoI is never perturbed for that RoI.
    gy, gx = h // block, w // block
    roi_blocks = block_grid(rois.float().unsqueeze(1), block).amax(dim=(-1, -2, -3)) > 0  # (R, Gy, Gx)
    candidates = ~roi_blocks.reshape(len(rois), -1).numpy()
    if not candidates.any():
        raise ValueError("the RoI covers every block of the image: there is nothing to intervene on")

    # Crop everything the outcome needs to the RoIs' bounding box: reductions stay small.
    y0, x0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    y1, x1 = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())

    callback, bar = _progress_callback(progress)
    try:
        with _evaluation(model, device):
            image_dev = image.to(device)
            roi_crop = rois[:, y0:y1, x0:x1].to(device)
            try:
                factual = adapter.logits(image_dev.unsqueeze(0))
            except RuntimeError as exc:
                raise ValueError(f"the model failed on the image of shape {tuple(image.shape)}: {exc}") from exc
            adapter.check_output(factual, (h, w))
            crop_out = factual[..., y0:y1, x0:x1]
            if target_mask is None:
                target_crop = adapter.binary(crop_out)[0]
            else:
                target_crop = target_mask[y0:y1, x0:x1].to(device, factual.dtype)
            m0 = outcome_fn(adapter.prediction(crop_out, outcome_fn.needs), target_crop, roi_crop)[0]
            treatment = intervention_obj.to(device)

            def evaluate(cells: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
                cells, draws = cells.to(device), draws.to(device)
                perturbed = compose(image_dev, cells, treatment.replacements(cells, draws), block)
                out = adapter.logits(perturbed)[..., y0:y1, x0:x1]
                return outcome_fn(adapter.prediction(out, outcome_fn.needs), target_crop, roi_crop)

            size = batch_size or auto_batch_size((c, h, w), device)
            est = screened_ate(
                evaluate,
                candidates,
                m0.double().cpu().numpy(),
                coarse=coarse,
                fine=fine,
                tau=tau,
                stochastic=intervention_obj.stochastic,
                batch_size=size,
                progress=callback,
            )
    finally:
        if bar is not None:
            bar.close()

    attrs = {
        "method": "pdcr",
        "pdcr_lab_version": __version__,
        "block": block,
        "coarse": coarse,
        "fine": fine,
        "tau": tau,
        "outcome": outcome_fn.name,
        "units": outcome_fn.units,
        "intervention": intervention,
        "threshold": adapter.threshold,
        "class_index": int(adapter.class_index or 0),
        "activation": activation,
        "seed": seed,
        "bank_id": bank.id if bank is not None else "none",
        "bank_size": len(bank) if bank is not None else 0,
        "bank_provenance": json.dumps(bank.provenance, sort_keys=True, default=str) if bank is not None else "{}",
        "target_source": "prediction" if target is None else "ground_truth",
        "image_height": h,
        "image_width": w,
        "image_channels": c,
        "device": str(device),
    }
    grid = (len(rois), gy, gx)
    blocks = {
        "ate": est.ate.reshape(grid),
        "ate_raw": est.ate_raw.reshape(grid),
        "stderr": est.stderr.reshape(grid),
        "n_draws": est.n_draws.reshape(grid),
        "screened": est.screened.reshape(grid),
        "roi_block": roi_blocks.numpy(),
    }
    m0_values = m0.double().cpu().numpy()
    masks = rois.numpy()
    if not multi:
        blocks = {k: v[0] for k, v in blocks.items()}
        m0_values, masks, boxes = m0_values[0], masks[0], boxes[0]
    ds = effects_dataset(
        blocks,
        m0=m0_values,
        forwards=est.forwards + 1,
        roi_mask=masks,
        roi_box=boxes,
        attrs=attrs,
        roi_labels=list(range(len(rois))) if multi else None,
    )
    return validate(ds)
