"""The PdCR input-block engine: :func:`explain`.

For each candidate block p of the image, PdCR estimates
ATE(p) = E_B[ M(f(X with block p := B)) ] - M(f(X)) with B drawn from natural blocks, using the
paper's coarse-to-fine screening (docs/method.md sections 2-3). The work is batched: the perturbed
images of many (block, draw) pairs are composed on the device by indexing and run through the model
together; the outcome is reduced on the device and only one number per image leaves it.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .version import __version__
from .checks import as_image, as_mask, check_choice, check_float, check_int, describe
from .adapters import Activation, ModelAdapter
from .banks import PatchBank
from .defaults import PAPER
from .call import auto_batch_size, evaluation, progress_callback
from .estimator import Batcher, adaptive_ate, run_batched, screened_ate
from .interventions import block_grid, compose, make_intervention
from .outcomes import Outcome, get_outcome
from .rois import Roi, parse_rois
from .schema import effects_dataset, validate

__all__ = ["explain", "PrecisionWarning", "PRECISIONS", "MODES"]


class PrecisionWarning(UserWarning):
    """The fast path (mixed precision, compile, channels-last) moved outcomes beyond the tolerance."""


#: Autocast dtypes of ``precision``.
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES: tuple[str, ...] = ("paper", "adaptive")
#: Default largest |change| of one outcome difference M_b - M0 the fast path may cause, outcome
#: units. For the paper's Dice on a 16 x 16 RoI one flipped boundary pixel moves Dice by ~0.4-0.8
#: points, so the default tolerates a flipped pixel or two and reports anything larger.
PRECISION_TOLERANCE = 1.0
#: Adaptive-mode defaults (see :func:`explain`): target standard error in outcome units and the
#: largest number of draws per block, as a multiple of the paper's coarse + fine draws.
ADAPTIVE_TARGET_SE = 0.25
ADAPTIVE_MAX_DRAWS_FACTOR = 4
#: Jobs re-run in float32 by ``check_precision`` (the first draws of the blocks with the largest effects).
PRECISION_CHECK_JOBS = 32

_COMPILED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
# Batch sizes found fastest by tuning, per model and run configuration: later calls skip the tuning.
_TUNED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def _compiled(model: nn.Module) -> nn.Module:
    """One ``torch.compile`` wrapper per model (static shapes: the engine pads its batches)."""
    runner = _COMPILED.get(model)
    if runner is None:
        runner = torch.compile(model, dynamic=False)
        _COMPILED[model] = runner
    return runner


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _activation_bytes(model: nn.Module) -> tuple[list[Any], list[int]]:
    """Forward hooks that add up the bytes of every leaf module's output (an activation footprint)."""
    total = [0]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        stack = [output]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                total[0] += item.numel() * item.element_size()
            elif isinstance(item, (tuple, list)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    return [m.register_forward_hook(hook) for m in leaves], total


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
    mode: str = "paper",
    target_se: float | None = None,
    ci_level: float = 0.95,
    max_draws: int | None = None,
    band_stop: bool = True,
    memory_budget: int | None = None,
    precision: str = "float32",
    check_precision: bool = False,
    precision_tolerance: float = PRECISION_TOLERANCE,
    compile: bool = False,
    channels_last: bool = False,
    runtime: dict | None = None,
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
        Perturbed images per forward pass. None: the engine times the powers of two up to
        :func:`auto_batch_size` on its first jobs and keeps the fastest (no extra forwards, no
        effect on the result). Halved automatically on out-of-memory.
    output_key, activation, normalize
        How to read the model (:class:`pdcr_lab.adapters.ModelAdapter`).
    progress : bool or callable(done, total)
        Show a progress bar, or receive progress counts. An exception raised by the callback
        (KeyboardInterrupt included) aborts the call: nothing is returned, the model is restored.
    mode : {"paper", "adaptive"}
        ``"paper"`` (default): the paper's estimator exactly (S screening draws, then N fresh
        draws of the survivors). ``"adaptive"`` *(ours)*: per-block sequential sampling that stops
        a block when its estimate is settled and keeps the screening draws in the estimate
        (:func:`pdcr_lab.estimator.adaptive_ate`). Prefer it when every block's uncertainty must
        be known to a stated precision (``target_se``), when the budget is tight (it spends draws
        on the blocks whose effect is uncertain, not on all survivors alike), or for live
        exploration; keep paper mode to reproduce the paper's maps.
    target_se : float, optional
        Adaptive mode: stop a block once the standard error of its ATE is <= this (outcome units;
        default :data:`ADAPTIVE_TARGET_SE`).
    ci_level : float
        Level of the per-block confidence interval ``ci_low``/``ci_high`` (both modes) and of the
        adaptive decision rule.
    max_draws : int, optional
        Adaptive mode: most draws per block (default 4 x (coarse + fine)). The first coarse + fine
        columns of the draw table are paper mode's draws.
    band_stop : bool
        Adaptive mode: also stop a block as soon as its interval lies entirely outside the tau band
        (it matters, sign known) or entirely inside it (it does not).
    memory_budget : int, optional
        Bytes one batch may use; the batch size is capped from the model's measured activation
        footprint, and a batch that would exceed the budget is halved like an out-of-memory error.
    precision : {"float32", "bfloat16", "float16"}
        Autocast dtype of the forward passes; outcomes are always reduced in float32.
        bfloat16 is the fast choice on recent CPUs and GPUs, float16 on GPUs (slow on CPUs).
    check_precision : bool
        Also run the plain float32 eager model on the factual image and on the first draws of the
        blocks with the largest effects, and compare. A difference beyond `precision_tolerance` is
        reported with a :class:`PrecisionWarning` and ``attrs["precision_ok"] = 0``; the extra
        forwards are counted in ``forwards``.
    precision_tolerance : float
        Largest |change| of a per-draw effect M_b - M0 (outcome units) the fast path may cause.
    compile : bool
        Run the model through ``torch.compile`` (static shapes; batches are padded to a fixed
        size and batch-size tuning is off). Pays off on GPUs and for repeated calls on one model;
        the first call compiles (tens of seconds on a CPU). Falls back to eager with a warning
        where compilation fails.
    channels_last : bool
        Run the model and its inputs in channels-last layout (faster convolutions on GPUs and on
        CPUs with oneDNN); the model's layout is restored afterwards.
    runtime : dict, optional
        Filled with facts of this run that may vary between runs and machines and so stay out of
        the result: ``batch_size`` (finally used), ``batch_halvings``, ``tuned_seconds_per_job``,
        ``item_bytes`` (activation footprint of one image), ``peak_bytes`` (measured on CUDA, which
        resets the device's peak-memory counter; ``item_bytes x batch_size`` elsewhere),
        ``seconds``, ``forwards``, ``forwards_per_second``, ``rounds``, ``compiled``, ``device``.
        Filled only when the call returns.

    Returns
    -------
    xarray.Dataset
        The effects dataset (:mod:`pdcr_lab.schema`): ``ate`` over (block_y, block_x) in outcome
        units, negative where the block supports the RoI, with ``stderr``, ``ci_low``, ``ci_high``,
        ``n_draws``, ``screened``, ``roi_block``, ``m0`` and the run's parameters in attrs.

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
    began = time.perf_counter()
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
    mode = check_choice("mode", mode, MODES)
    ci_level = check_float("ci_level", ci_level, minimum=0.0)
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level={ci_level} must be between 0 and 1 (exclusive), e.g. 0.95")
    adaptive = mode == "adaptive"
    target_se = check_float("target_se", ADAPTIVE_TARGET_SE if target_se is None else target_se, minimum=0.0)
    first = max(coarse, 2)
    if max_draws is None:
        max_draws = max(first, ADAPTIVE_MAX_DRAWS_FACTOR * (coarse + fine))
    max_draws = check_int("max_draws", max_draws, minimum=1)
    if adaptive and max_draws < first:
        raise ValueError(f"max_draws={max_draws} is below the first round of {first} draws; use max_draws >= {first}")
    if memory_budget is not None:
        memory_budget = check_int("memory_budget", memory_budget, minimum=1)
    amp = PRECISIONS[check_choice("precision", precision, PRECISIONS)]
    precision_tolerance = check_float("precision_tolerance", precision_tolerance, minimum=0.0)
    if runtime is not None and not isinstance(runtime, dict):
        raise TypeError(f"runtime must be a dict to fill, or None, got {describe(runtime)}")
    outcome_fn = get_outcome(outcome)
    expected = adapter.expected_channels()
    if expected is not None and expected != c:
        raise ValueError(f"image has {c} channels but the model's first layer expects {expected}")
    rois, boxes, multi = parse_rois(roi, (h, w))
    target_mask = None if target is None else as_mask("target", target, (h, w))
    n_table = max(coarse + fine, max_draws) if adaptive else coarse + fine
    intervention_obj = make_intervention(
        intervention, image, block, bank=bank, seed=seed, n_draws=n_table, prefix=coarse + fine
    )
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
    layout = torch.channels_last if channels_last else torch.contiguous_format

    callback, bar = progress_callback(progress)
    facts: dict[str, Any] = {}
    try:
        with evaluation(model, device, channels_last=channels_last):
            image_dev = image.to(device)
            roi_crop = rois[:, y0:y1, x0:x1].to(device)
            runner = _compiled(model) if compile else None
            cap = batch_size or auto_batch_size((c, h, w), device)

            def outputs(images: torch.Tensor, fast: bool = True) -> torch.Tensor:
                """Model output cropped to the RoIs' box, float32; `fast` = precision/compile path."""
                with _autocast(device, amp if fast else None):
                    out = adapter.logits(images, model=runner if fast else None)
                return out[..., y0:y1, x0:x1].float()

            if runtime is not None and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                cuda_base = torch.cuda.memory_allocated(device)
            # Factual output, plain float32 eager, with hooks measuring the activation footprint.
            factual_in = image_dev.unsqueeze(0).contiguous(memory_format=layout)
            hooks, footprint = _activation_bytes(model)
            try:
                try:
                    full = adapter.logits(factual_in)
                except RuntimeError as exc:
                    raise ValueError(f"the model failed on the image of shape {tuple(image.shape)}: {exc}") from exc
            finally:
                for hook in hooks:
                    hook.remove()
            adapter.check_output(full, (h, w))
            if runner is None and amp is None:
                crop_out = full[..., y0:y1, x0:x1].float()
            else:
                # The fast path's own factual output, so M0 and the perturbed outcomes share numerics;
                # compiled: a full batch, so it runs the very graph the perturbed batches run.
                batch = factual_in if runner is None else factual_in.expand(cap, c, h, w).clone(memory_format=layout)
                try:
                    crop_out = outputs(batch)[:1]
                except Exception as exc:  # noqa: BLE001 - compile failures come in many types
                    if runner is None:
                        raise ValueError(f"precision={precision!r} failed on device {device}: {exc}") from exc
                    warnings.warn(f"torch.compile failed ({exc}); running the model eagerly", RuntimeWarning, stacklevel=2)
                    runner = None
                    crop_out = outputs(factual_in)[:1]
            item_bytes = footprint[0] + image_dev[None].nbytes if footprint[0] else None
            if target_mask is None:
                target_crop = adapter.binary(crop_out)[0]
            else:
                target_crop = target_mask[y0:y1, x0:x1].to(device, torch.float32)
            reduce = outcome_fn.needs

            def score(out: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
                ref = target_crop if reference is None else reference
                return outcome_fn(adapter.prediction(out, reduce), ref, roi_crop)

            m0 = score(crop_out)[0]
            treatment = intervention_obj.to(device)

            def evaluate(
                cells: torch.Tensor, draws: torch.Tensor, fast: bool = True, reference: torch.Tensor | None = None
            ) -> torch.Tensor:
                cells, draws = cells.to(device), draws.to(device)
                perturbed = compose(image_dev, cells, treatment.replacements(cells, draws), block, memory_format=layout)
                return score(outputs(perturbed, fast), reference)

            tuned_key = (tuple(image.shape), str(device), precision, channels_last, memory_budget, runner is not None)
            tuned = _TUNED.get(model, {}).get(tuned_key) if batch_size is None else None
            batcher = Batcher(
                tuned or cap,
                tune=batch_size is None and runner is None and tuned is None,
                memory_budget=memory_budget,
                item_bytes=item_bytes,
                pad=runner is not None,
                device=device,
                tune_from=32 if device.type == "cuda" else 8,
            )
            m0_np = m0.double().cpu().numpy()
            common = dict(tau=tau, batch_size=batcher, progress=callback, ci_level=ci_level)
            if adaptive:
                est = adaptive_ate(
                    evaluate, candidates, m0_np, first=first, max_draws=max_draws, target_se=target_se,
                    band_stop=band_stop, stochastic=intervention_obj.stochastic, **common,
                )
            else:
                est = screened_ate(
                    evaluate, candidates, m0_np, coarse=coarse, fine=fine,
                    stochastic=intervention_obj.stochastic, **common,
                )
            forwards = est.forwards + 1
            if batcher.timings and not batcher.tuning and batcher.halvings == 0:
                _TUNED.setdefault(model, {})[tuned_key] = batcher.size
            if check_precision:
                plain = outputs(image_dev.unsqueeze(0), fast=False)
                # Ground-truth-free mode: the float32 run would compare against its own prediction.
                reference = adapter.binary(plain)[0] if target_mask is None else None
                facts = _precision_check(evaluate, est, candidates, m0_np, score(plain, reference)[0], reference, batcher)
                forwards += facts.pop("forwards")
    finally:
        if bar is not None:
            bar.close()

    attrs = {
        "method": "pdcr",
        "pdcr_lab_version": __version__,
        "mode": mode,
        "block": block,
        "coarse": coarse,
        "fine": fine,
        "tau": tau,
        "ci_level": ci_level,
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
        "precision": precision,
        "compile": int(runner is not None),
        "channels_last": int(channels_last),
        "batch_size": batch_size if batch_size is not None else "auto",
        "memory_budget": memory_budget if memory_budget is not None else "none",
        "rounds": est.rounds,
    }
    if adaptive:
        attrs.update({"target_se": target_se, "max_draws": max_draws, "band_stop": int(band_stop)})
    if check_precision:
        ok = facts["precision_error"] <= precision_tolerance
        attrs.update({**facts, "precision_tolerance": precision_tolerance, "precision_ok": int(ok)})
        if not ok:
            warnings.warn(
                f"precision={precision!r}{' with compile' if runner is not None else ''}"
                f"{' and channels_last' if channels_last else ''} moved a per-draw effect by "
                f"{facts['precision_error']:.4g} {outcome_fn.units} (tolerance {precision_tolerance}); "
                "the map may differ from the float32 map: use precision='float32' for this model",
                PrecisionWarning,
                stacklevel=2,
            )
    grid = (len(rois), gy, gx)
    blocks = {
        "ate": est.ate.reshape(grid),
        "ate_raw": est.ate_raw.reshape(grid),
        "stderr": est.stderr.reshape(grid),
        "ci_low": est.ci_low.reshape(grid),
        "ci_high": est.ci_high.reshape(grid),
        "n_draws": est.n_draws.reshape(grid),
        "screened": est.screened.reshape(grid),
        "roi_block": roi_blocks.numpy(),
    }
    m0_values = m0_np
    masks = rois.numpy()
    if not multi:
        blocks = {k: v[0] for k, v in blocks.items()}
        m0_values, masks, boxes = m0_values[0], masks[0], boxes[0]
    ds = effects_dataset(
        blocks,
        m0=m0_values,
        forwards=forwards,
        roi_mask=masks,
        roi_box=boxes,
        attrs=attrs,
        roi_labels=list(range(len(rois))) if multi else None,
    )
    units = outcome_fn.units
    ds["ci_low"].attrs.update({"long_name": f"lower {ci_level:.0%} confidence bound of ate_raw", "units": units})
    ds["ci_high"].attrs.update({"long_name": f"upper {ci_level:.0%} confidence bound of ate_raw", "units": units})
    if runtime is not None:
        seconds = time.perf_counter() - began
        runtime.update(batcher.stats())
        runtime.update(
            {
                "seconds": seconds,
                "forwards": forwards,
                "forwards_per_second": forwards / seconds if seconds > 0 else float("inf"),
                "item_bytes": item_bytes,
                "rounds": est.rounds,
                "compiled": runner is not None,
                "device": str(device),
            }
        )
        if device.type == "cuda":
            runtime["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - cuda_base)
        elif item_bytes:
            runtime["peak_bytes"] = int(item_bytes * batcher.size)  # an estimate: CPUs have no allocator stats
    return validate(ds)


def _precision_check(evaluate, est, candidates, m0, m0_plain, reference, batcher) -> dict[str, Any]:
    """Compare the fast path with float32 eager on the factual image and the strongest blocks' first draws.

    The error is the largest change of M0 or of a per-draw effect M_b - M0 (outcome units).
    """
    m0_ref = m0_plain.double().cpu().numpy()
    strength = np.where(candidates, np.abs(est.ate_raw), -1.0).max(axis=0)
    order = [u for u in np.argsort(-strength, kind="stable") if strength[u] >= 0]
    per_unit = 2 if est.n_draws.max() >= 2 else 1
    units = np.asarray(order[: max(1, PRECISION_CHECK_JOBS // per_unit)], dtype=np.int64)
    u = torch.as_tensor(np.repeat(units, per_unit))
    d = torch.as_tensor(np.tile(np.arange(per_unit), len(units)))
    fast, _ = run_batched(evaluate, u, d, Batcher(batcher.size, pad=batcher.pad, device=batcher.device))
    slow, _ = run_batched(
        lambda a, b: evaluate(a, b, fast=False, reference=reference), u, d, Batcher(batcher.size, device=batcher.device)
    )
    effect_fast = fast.numpy() - m0[None, :]
    effect_slow = slow.numpy() - m0_ref[None, :]
    mask = candidates[:, u.numpy()].T  # effects only count where the unit is a candidate for the RoI
    m0_error = float(np.abs(m0 - m0_ref).max())
    effect_error = float(np.abs(effect_fast - effect_slow)[mask].max(initial=0.0))
    return {
        "precision_error": max(m0_error, effect_error),
        "precision_m0_error": m0_error,
        "precision_checked": int(len(u)),
        "forwards": 1 + 2 * int(len(u)),
    }
