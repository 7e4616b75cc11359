"""The PdCR input-block engine: :func:`explain`.

For each candidate block p of the image, PdCR estimates
ATE(p) = E_B[ M(f(X with block p := B)) ] - M(f(X)) with B drawn from natural blocks, using the
paper's coarse-to-fine screening (docs/method.md sections 2-3). The work is batched: the perturbed
images of many (block, draw) pairs are composed on the device by indexing and run through the model
together; the outcome is reduced on the device and only one number per image leaves it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .adapters import Activation
from .banks import PatchBank
from .call import (
    Call,
    RoiOutcome,
    auto_batch_size,
    check_batch,
    check_shared_options,
    evaluation,
    prepare,
    reporting,
    result,
)
from .checks import check_float, check_int, describe
from .defaults import PAPER, Incremental, Intervention, Mode, Precision, check_literal, choices
from .estimator import Batcher, adaptive_ate, run_batched, screened_ate
from .grids import cell_coords
from .incremental import IncrementalPlan, Ineligible
from .incremental import plan as incremental_plan
from .incremental import known_ineligible, nonlocal_module, traced
from .interventions import compose, make_intervention
from .outcomes import Outcome
from .rois import Roi

__all__ = ["explain", "check_options", "PrecisionWarning", "PRECISIONS", "MODES", "PRECISION_TOLERANCE",
           "volume_memory_budget"]


class PrecisionWarning(UserWarning):
    """The fast path (mixed precision, compile, channels-last) moved outcomes beyond the tolerance."""


#: Autocast dtypes of ``precision``.
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES: tuple[str, ...] = choices(Mode)
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
#: Blocks whose incremental outputs are compared with full forward passes before the incremental path is used.
INCREMENTAL_CHECK_BLOCKS = 4
#: Largest |difference| of an incremental output from the full forward's, relative to the output's scale.
INCREMENTAL_TOLERANCE = 1e-4

_COMPILED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
# Batch-size tuning state per model and run configuration: later calls resume it, or use its result.
_TUNED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, dict]] = weakref.WeakKeyDictionary()
#: ``incremental="auto"`` traces a model only when its screening stage alone needs at least this many
#: multiply-accumulates in full forward passes (a few seconds on two CPU cores, where tracing and the
#: check take about a second; a traced model is reused by later calls on the same image).
AUTO_MIN_MACS = 2e11
#: ``incremental="auto"`` keeps full forward passes when the incremental path still needs more than this
#: share of the full convolution work (its gathers and small ops would eat the saving).
AUTO_MAX_FLOPS_RATIO = 0.3


#: Volumes without ``memory_budget``: a batch may use this share of the machine's memory (CPU) or of
#: the device's free memory (CUDA), at most :data:`VOLUME_BUDGET_CAP` bytes. A batch of perturbed
#: volumes holds hundreds of times its input in activations; without a cap the batch tuning would try
#: sizes that swap or fail.
VOLUME_BUDGET_SHARE = 0.25
VOLUME_BUDGET_CAP = 4 * 1024**3


def volume_memory_budget(device: torch.device) -> int:
    """Default bytes one batch of perturbed volumes may use on `device` (see :data:`VOLUME_BUDGET_SHARE`).

    Parameters
    ----------
    device : torch.device
        Where the model runs.

    Examples
    --------
    >>> 0 < volume_memory_budget(torch.device("cpu")) <= VOLUME_BUDGET_CAP
    True
    """
    if device.type == "cuda":
        total, _ = torch.cuda.mem_get_info(device)  # the free bytes
    else:
        try:
            total = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
            total = 4 * 1024**3
    return int(min(VOLUME_BUDGET_CAP, VOLUME_BUDGET_SHARE * total))


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
    """Forward hooks that add up the bytes of every leaf module's output (an activation footprint) and the
    multiply-accumulates of its convolutions and linear layers: ``[bytes, macs]``."""
    total = [0, 0]

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        stack = [output]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                total[0] += item.numel() * item.element_size()
            elif isinstance(item, (tuple, list)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
        weight = getattr(module, "weight", None)
        if isinstance(output, torch.Tensor) and isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            # Each output value of a convolution / linear layer costs (weight size / output channels) MACs.
            out_channels = weight.shape[1] if isinstance(module, nn.modules.conv._ConvTransposeNd) else weight.shape[0]
            total[1] += output.numel() * weight.numel() // max(1, out_channels)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    return [m.register_forward_hook(hook) for m in leaves], total


@dataclass(frozen=True)
class _Estimation:
    """The estimator settings of one :func:`explain` call, checked (see :func:`explain` for each)."""

    coarse: int
    fine: int
    tau: float
    mode: str
    target_se: float
    ci_level: float
    max_draws: int
    band_stop: bool

    @classmethod
    def check(cls, *, coarse: Any, fine: Any, tau: Any, mode: Any, target_se: Any, ci_level: Any, max_draws: Any,
              band_stop: Any) -> _Estimation:
        """Validate the estimator options at the boundary; every message names the argument."""
        coarse = check_int("coarse", coarse, minimum=0)
        fine = check_int("fine", fine, minimum=1)
        mode = check_literal("mode", mode, Mode)
        ci_level = check_float("ci_level", ci_level, minimum=0.0)
        if not 0.0 < ci_level < 1.0:
            raise ValueError(f"ci_level={ci_level} must be between 0 and 1 (exclusive), e.g. 0.95")
        first = max(coarse, 2)
        if max_draws is None:
            max_draws = max(first, ADAPTIVE_MAX_DRAWS_FACTOR * (coarse + fine))
        max_draws = check_int("max_draws", max_draws, minimum=1)
        if mode == "adaptive" and max_draws < first:
            raise ValueError(f"max_draws={max_draws} is below the first round of {first} draws; use max_draws >= {first}")
        if not isinstance(band_stop, bool):
            raise TypeError(f"band_stop must be True or False, got {describe(band_stop)}")
        return cls(coarse, fine, check_float("tau", tau, minimum=0.0), mode,
                   check_float("target_se", ADAPTIVE_TARGET_SE if target_se is None else target_se, minimum=0.0),
                   ci_level, max_draws, band_stop)

    @property
    def adaptive(self) -> bool:
        return self.mode == "adaptive"

    @property
    def table(self) -> int:
        """Columns of the draw table: paper mode's S + N, or adaptive mode's most draws."""
        return max(self.coarse + self.fine, self.max_draws) if self.adaptive else self.coarse + self.fine

    def attrs(self) -> dict[str, Any]:
        out = {"mode": self.mode, "coarse": self.coarse, "fine": self.fine, "tau": self.tau, "ci_level": self.ci_level}
        if self.adaptive:
            out.update(target_se=self.target_se, max_draws=self.max_draws, band_stop=int(self.band_stop))
        return out


@dataclass(frozen=True)
class _Execution:
    """How the forward passes run: batch size, memory budget and the fast path (see :func:`explain`)."""

    batch_size: int | None
    memory_budget: int | None
    precision: str
    check_precision: bool
    precision_tolerance: float
    compile: bool
    channels_last: bool
    incremental: str = "auto"

    @classmethod
    def check(cls, *, batch_size: Any, memory_budget: Any, precision: Any, check_precision: Any,
              precision_tolerance: Any, compile: Any, channels_last: Any, incremental: Any = "auto") -> _Execution:
        """Validate the execution options at the boundary."""
        for name, flag in (("check_precision", check_precision), ("compile", compile), ("channels_last", channels_last)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {describe(flag)}")
        return cls(
            None if batch_size is None else check_int("batch_size", batch_size, minimum=1),
            None if memory_budget is None else check_int("memory_budget", memory_budget, minimum=1),
            check_literal("precision", precision, Precision),
            check_precision,
            check_float("precision_tolerance", precision_tolerance, minimum=0.0),
            compile,
            channels_last,
            check_literal("incremental", incremental, Incremental),
        )

    @property
    def amp(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @property
    def layout(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def attrs(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "channels_last": int(self.channels_last),
            "batch_size": self.batch_size if self.batch_size is not None else "auto",
            "memory_budget": self.memory_budget if self.memory_budget is not None else "none",
        }


class _Forwards:
    """The model's forward passes of one explanation: the fast path, the factual pass and the outcome."""

    def __init__(self, model: nn.Module, call: Call, run: _Execution) -> None:
        self.model, self.call, self.run = model, call, run
        self.runner = _compiled(model) if run.compile else None
        self.image = call.image.to(call.device)
        #: memory layout of the perturbed batches (a volume's channels-last is the 3-D one)
        self.layout = torch.channels_last_3d if run.channels_last and call.ndim == 3 else run.layout
        self.cap = run.batch_size or auto_batch_size(call.shape, call.device)
        self.plan: IncrementalPlan | None = None
        self.path_reason = "incremental='off'"
        self.flops_ratio: float | None = None
        self.macs = 0
        self.screening_draws = 1

    @property
    def screening_jobs(self) -> int:
        """Jobs of the first stage: every candidate block's screening draws."""
        return int(self.call.candidates.any(axis=0).sum()) * max(1, self.screening_draws)

    def choose_path(self, treatment: Any) -> None:
        """Use exact incremental inference when asked, or allowed and worth it, and eligible; say why (not)."""
        run = self.run
        if run.incremental == "off":
            return
        if self.call.ndim == 3:
            if run.incremental == "on":
                raise ValueError("incremental='on' but incremental inference is for 2-D images; volumes run full "
                                 "forward passes (use incremental='auto' or 'off')")
            self.path_reason = "a volume: incremental inference is for 2-D images, full forward passes"
            return
        blocker = ("precision=" + repr(run.precision) if run.amp is not None else
                   "compile=True" if self.runner is not None else "channels_last=True" if run.channels_last else None)
        try:
            if blocker is not None:
                raise Ineligible(f"{blocker} runs full forward passes (the incremental path runs in float32 eagerly)")
            adapter = self.call.adapter
            key = ("logits", repr(self.call.options.get("normalize")), repr(self.call.options.get("output_key")))
            work = self.screening_jobs * self.macs
            reason = known_ineligible(self.model, self.image, key)
            if reason is None and run.incremental == "auto":
                reason = nonlocal_module(self.model)  # no trace needed to see these
            if reason is not None:
                raise Ineligible(reason)
            if run.incremental == "auto" and work < AUTO_MIN_MACS and not traced(self.model, self.image, key):
                self.path_reason = (f"full forward passes are quicker for a job this small (screening under "
                                    f"{AUTO_MIN_MACS / 1e9:g} GMAC; tracing the model for the incremental path takes "
                                    "about a second)")
                return
            plan = incremental_plan(self.model, lambda x: adapter.logits(x), self.image, box=self.call.box,
                                    block=self.call.block, key=key)
            checked = self._check_plan(plan, treatment)
        except Ineligible as exc:
            if run.incremental == "on":
                raise ValueError(f"incremental='on' but the model cannot run incrementally: {exc}") from None
            self.path_reason = str(exc)
            return
        self.flops_ratio = plan.flops_ratio
        eligible = (f"eligible ({plan.ops} image-dependent ops, all spatially local; convolution work per perturbed "
                    f"image {plan.flops_ratio:.1%} of a full forward pass; equal to full forward passes on {checked} "
                    "checked blocks)")
        if run.incremental == "auto" and plan.flops_ratio > AUTO_MAX_FLOPS_RATIO:
            self.path_reason = (f"{eligible}, but above {AUTO_MAX_FLOPS_RATIO:.0%} the gathers cost more than the "
                                "convolutions saved: full forward passes")
            return
        self.plan, self.path_reason = plan, eligible

    def _probe_jobs(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` jobs spread over the candidate blocks, from the RoI's neighbourhood to the far corners."""
        candidates = np.flatnonzero(self.call.candidates.any(axis=0))
        gx = self.call.grid[1]
        y0, y1, x0, x1 = self.call.box
        centre = np.array([(y0 + y1) / 2, (x0 + x1) / 2]) / self.call.block
        where = np.stack([candidates // gx, candidates % gx], axis=1)
        order = candidates[np.argsort(np.abs(where + 0.5 - centre).max(axis=1), kind="stable")]
        picks = order[np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int)]
        cells = torch.as_tensor(np.resize(picks, count), device=self.call.device)
        return cells, torch.zeros_like(cells)

    def _check_plan(self, plan: IncrementalPlan, treatment: Any) -> int:
        """Compare incremental and full outputs on a few blocks from the RoI's neighbourhood to the far corners."""
        if not self.call.candidates.any():
            return 0
        cells, draws = self._probe_jobs(INCREMENTAL_CHECK_BLOCKS)
        blocks = treatment.replacements(cells, draws)
        fast = plan(cells, blocks).float()
        full = self.outputs(compose(self.image, cells, blocks, self.call.block), fast=False)
        scale = max(1.0, float(full.abs().max()))
        error = float((fast - full).abs().max())
        if not error <= INCREMENTAL_TOLERANCE * scale:
            raise Ineligible(f"the incremental outputs differ from full forward passes by {error:.3g} "
                             f"(tolerance {INCREMENTAL_TOLERANCE * scale:.3g}); the model may branch on values")
        return len(set(cells.tolist()))

    def outputs(self, images: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """Model output cut to the RoIs' box, float32; `fast` = the precision/compile path."""
        with _autocast(self.call.device, self.run.amp if fast else None):
            out = self.call.adapter.logits(images, model=self.runner if fast else None)
        return self.call.crop(out).float()

    def factual(self) -> tuple[RoiOutcome, int | None]:
        """The outcome state (M0 from the fast path's own factual output) and one image's activation bytes."""
        factual_in = self.image.unsqueeze(0).contiguous(memory_format=self.layout)
        hooks, footprint = _activation_bytes(self.model)
        try:
            state = RoiOutcome(self.call)  # plain float32 eager: checks the output, sets the reference
        finally:
            for hook in hooks:
                hook.remove()
        if self.runner is not None or self.run.amp is not None:
            # The fast path's own factual output, so M0 and the perturbed outcomes share numerics;
            # compiled: a full batch, so it runs the very graph the perturbed batches run.
            batch = factual_in if self.runner is None else \
                factual_in.expand(self.cap, *self.call.shape).clone(memory_format=self.layout)
            try:
                crop = self.outputs(batch)[:1]
            except Exception as exc:  # noqa: BLE001 - compile failures come in many types
                if self.runner is None:
                    raise ValueError(f"precision={self.run.precision!r} failed on device {self.call.device}: {exc}") from exc
                warnings.warn(f"torch.compile failed ({exc}); running the model eagerly", RuntimeWarning, stacklevel=4)
                self.runner = None
                crop = self.outputs(factual_in)[:1]
            state.m0 = state.from_outputs(crop)[0]
        item_bytes = footprint[0] + self.image[None].nbytes if footprint[0] else None
        self.macs = footprint[1]
        return state, item_bytes

    def evaluator(self, state: RoiOutcome, treatment: Any) -> Callable[..., torch.Tensor]:
        """evaluate(cells, draws) -> (B, R) outcomes of the perturbed images, composed on the device."""
        device, block, layout = self.call.device, self.call.sides, self.layout

        def evaluate(cells: torch.Tensor, draws: torch.Tensor, fast: bool = True,
                     reference: torch.Tensor | None = None) -> torch.Tensor:
            cells, draws = cells.to(device), draws.to(device)
            blocks = treatment.replacements(cells, draws)
            if fast and self.plan is not None:
                out = check_batch(self.plan(cells, blocks).float(), len(cells))
            else:
                perturbed = compose(self.image, cells, blocks, block, memory_format=layout)
                out = check_batch(self.outputs(perturbed, fast), len(cells))

            def where(rows: torch.Tensor) -> str:
                coords = np.stack(cell_coords(cells[rows].cpu().numpy(), self.call.grid), axis=1)
                shown = ", ".join(f"block {tuple(int(v) for v in at)} draw {int(d)}"
                                  for at, d in zip(coords[:8], draws[rows].cpu()))
                return f"{shown}{', ...' if len(coords) > 8 else ''}"

            return state.from_outputs(out, reference, where)

        return evaluate

    def batcher(self, item_bytes: int | None) -> tuple[Batcher, tuple]:
        """The batch policy: tuning on real jobs, resumed from earlier calls on this model and input shape."""
        run, device = self.run, self.call.device
        key = (self.call.shape, str(self.image.dtype), str(device), run.precision, run.channels_last,
               run.memory_budget, self.runner is not None,
               None if self.plan is None else (self.call.box, self.call.block))
        budget = run.memory_budget
        if budget is None and self.call.ndim == 3:
            budget = volume_memory_budget(device)
        batcher = Batcher(self.cap, tune=run.batch_size is None and self.runner is None,
                          memory_budget=budget, item_bytes=item_bytes, pad=self.runner is not None,
                          device=device, tune_from=16 if device.type == "cuda" else 1)
        known = _TUNED.get(self.model, {}).get(key) if batcher.tune else None
        if known is not None:
            batcher.resume(known)
        return batcher, key

    def remember(self, batcher: Batcher, key: tuple) -> None:
        if batcher.tune and batcher.halvings == 0:
            _TUNED.setdefault(self.model, {})[key] = batcher.state()


def explain(
    model: nn.Module,
    image: Any,
    *,
    roi: Roi,
    target: Any = None,
    bank: PatchBank | None = None,
    intervention: Intervention = "natural",
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
    value_range: tuple[float, float] | None = None,
    progress: bool | Callable[[int, int], None] = False,
    mode: Mode = "paper",
    target_se: float | None = None,
    ci_level: float = 0.95,
    max_draws: int | None = None,
    band_stop: bool = True,
    memory_budget: int | None = None,
    precision: Precision = "float32",
    check_precision: bool = False,
    precision_tolerance: float = PRECISION_TOLERANCE,
    compile: bool = False,
    channels_last: bool = False,
    incremental: Incremental = "auto",
    runtime: dict | None = None,
) -> xr.Dataset:
    """PdCR map of the causal effect of every image block on the segmentation quality in an RoI.

    Parameters
    ----------
    model : torch.nn.Module
        Takes (B, C, H, W) and returns (B, K, H, W) scores, or a dict/tuple holding them; see
        :mod:`pdcr_lab.adapters` for how the output, the activation and the class are chosen. A
        3-D model takes (B, C, D, H, W) volumes and returns (B, K, D, H, W).
    image : Tensor or array of shape (C, H, W), or a volume (C, D, H, W)
        Pixel values: floats in [0, 1] (the bank's scale), or unsigned integers (divided by their
        dtype's largest value); anything else is refused unless `value_range` says how to rescale.
        A 4-D image is a volume: blocks are cuboids, the result's grid is (block_z, block_y,
        block_x), incremental inference is not used and, without `memory_budget`, a batch may use
        :func:`volume_memory_budget` bytes.
    roi : (row, col, height, width) box, boolean (H, W) mask, or a list of them
        Output pixels whose segmentation quality is explained. A list explains several RoIs in
        one call sharing all forward passes; the result then has a ``roi`` dim. In a volume: a
        (z, row, col, depth, height, width) box or a boolean (D, H, W) mask.
    target : array (H, W) (or (D, H, W)), optional
        Ground-truth mask (bool, 0/1 or 0/255). None: the model's own factual prediction is the
        reference (ground-truth-free mode).
    bank : PatchBank, optional
        Natural blocks; required for ``intervention="natural"``; ``"mean"`` uses its mean colour.
    intervention : {"natural", "zero", "mean", "blur"}
        What replaces a block (:mod:`pdcr_lab.interventions`).
    block : int, or (bz, by, bx) for a volume (an int is a cube)
        Block side b in pixels; it must divide H and W (and D): padding would show the model an image it was never shown.
    coarse, fine : int
        S screening draws and N fresh estimation draws per block (paper: 3 and 50).
    tau : float
        Screening and zeroing threshold in outcome units (paper: 0.02).
    outcome : {"dice", "soft_dice", "iou", "probability"} or Outcome
        The RoI state M (paper: 100 x Dice of the binarised prediction in the RoI). Without a
        target, Dice against the model's own prediction starts at 100 and can only fall (support
        only); ``"soft_dice"`` and ``"probability"`` move both ways and can show harm.
    threshold : float
        Binarisation of a one-channel output (score > threshold).
    class_index : int, optional
        Explained class of a multi-channel output (default 1 for two channels).
    seed : int
        Seed of the bank draws; recorded in the result. Same seed, inputs and device: same map.
    device : str or torch.device, optional
        Where to run (default: the model's device); the model is moved there and back.
    batch_size : int, optional
        Perturbed images per forward pass. None: powers of two up to
        :func:`pdcr_lab.call.auto_batch_size` are timed on the first jobs and the fastest is kept
        (no extra forwards, no effect on the result). Halved on out-of-memory.
    output_key, activation, normalize
        How to read the model (:class:`pdcr_lab.adapters.ModelAdapter`).
    value_range : (low, high), optional
        Values of the image and the bank that map to 0 and 1 (e.g. ``(0, 255)``); both are rescaled
        to [0, 1] (:func:`pdcr_lab.call.to_unit_range`). The conversion is in ``attrs["value_conversion"]``.
    progress : bool or callable(done, total)
        A progress bar, or progress counts. An exception raised by the callback (KeyboardInterrupt
        included) aborts the call: nothing is returned, the model is restored.
    mode : {"paper", "adaptive"}
        ``"paper"``: the paper's estimator exactly. ``"adaptive"`` *(ours)*: per-block sequential
        sampling that stops a block when its estimate is settled and keeps the screening draws
        (:func:`pdcr_lab.estimator.adaptive_ate`): for a stated precision per block, tight
        budgets or live exploration; keep paper mode to reproduce the paper's maps.
    target_se : float, optional
        Adaptive mode: stop a block once its ATE's standard error is <= this (outcome units;
        default :data:`ADAPTIVE_TARGET_SE`).
    ci_level : float
        Level of ``ci_low``/``ci_high`` and of the adaptive decision rule.
    max_draws : int, optional
        Adaptive mode: most draws per block (default 4 x (coarse + fine)).
    band_stop : bool
        Adaptive mode: also stop a block once its interval lies entirely outside or inside the tau band.
    memory_budget : int, optional
        Bytes one batch may use (capped from the measured activation footprint; exceeding it halves
        the batch like an out-of-memory error).
    precision : {"float32", "bfloat16", "float16"}
        Autocast dtype of the forward passes; outcomes are always reduced in float32.
    check_precision : bool
        Also run float32 eager on the factual image and the strongest blocks' first draws; a
        difference beyond `precision_tolerance` gives a :class:`PrecisionWarning` and
        ``attrs["precision_ok"] = 0`` (the extra forwards are counted).
    precision_tolerance : float
        Largest |change| of a per-draw effect M_b - M0 (outcome units) the fast path may cause.
    compile : bool
        Run the model through ``torch.compile`` (static shapes: batches padded, no batch tuning;
        falls back to eager with a warning where compilation fails).
    channels_last : bool
        Channels-last layout for the model and its inputs; the model's layout is restored afterwards.
    incremental : {"auto", "on", "off"}
        Exact incremental inference (:mod:`pdcr_lab.incremental`): for models made of spatially local
        ops, only the activations a perturbed block changes inside the RoI's backward cone are
        recomputed, from the factual image's activations; the outputs equal full forward passes up
        to float rounding (checked on a few blocks first). ``"auto"`` uses it when the model is
        eligible (float32, no compile, no channels-last), the job is large enough to repay tracing
        (:data:`AUTO_MIN_MACS`) and the saving is large enough (:data:`AUTO_MAX_FLOPS_RATIO`), and
        runs full forward passes otherwise (a deterministic rule: no timing); ``"on"`` raises when it cannot; ``"off"`` never uses it. The path taken and why are
        in ``attrs["forward_path"]`` and ``attrs["forward_path_reason"]``.
    runtime : dict, optional
        Filled, when the call returns, with facts that vary between runs and machines and so stay
        out of the result: ``batch_size``, ``batch_halvings``, ``tuned_seconds_per_job``,
        ``item_bytes``, ``peak_bytes``, ``seconds``, ``forwards``, ``forwards_per_second``,
        ``rounds``, ``compiled``, ``device``, ``forward_path`` and ``incremental_flops_ratio`` (convolution
        work of the incremental path per perturbed image / a full pass; None when not traced).

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
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="explain", bank=bank,
                   volumes=True, block=block, outcome=outcome, threshold=threshold, class_index=class_index,
                   output_key=output_key, activation=activation, normalize=normalize, value_range=value_range)
    settings = _Estimation.check(coarse=coarse, fine=fine, tau=tau, mode=mode, target_se=target_se,
                                ci_level=ci_level, max_draws=max_draws, band_stop=band_stop)
    run = _Execution.check(batch_size=batch_size, memory_budget=memory_budget, precision=precision,
                          check_precision=check_precision, precision_tolerance=precision_tolerance,
                          compile=compile, channels_last=channels_last, incremental=incremental)
    if runtime is not None and not isinstance(runtime, dict):
        raise TypeError(f"runtime must be a dict to fill, or None, got {describe(runtime)}")
    bank = call.bank
    treatment = make_intervention(intervention, call.image, call.sides, bank=bank, seed=call.seed,
                                  n_draws=settings.table, prefix=settings.coarse + settings.fine)
    with reporting(progress) as callback, evaluation(model, call.device, channels_last=run.channels_last,
                                                      volume=call.ndim == 3):
        passes = _Forwards(model, call, run)
        cuda_base = _reset_peak(call.device) if runtime is not None else 0
        state, item_bytes = passes.factual()
        treatment = treatment.to(call.device)
        passes.screening_draws = max(settings.coarse, 2 if settings.adaptive else 1) if treatment.stochastic else 1
        passes.choose_path(treatment)
        est, batcher, facts = _estimate(passes, state, treatment, settings, item_bytes, callback)
    attrs = {**call.attrs("pdcr"), **settings.attrs(), **run.attrs(), "intervention": intervention,
             "bank_id": bank.id if bank is not None else "none", "bank_size": len(bank) if bank is not None else 0,
             "bank_provenance": json.dumps(bank.provenance, sort_keys=True, default=str) if bank is not None else "{}",
             "compile": int(passes.runner is not None), "rounds": est.rounds,
             "forward_path": "incremental" if passes.plan is not None else "full",
             "forward_path_reason": passes.path_reason}
    forwards = est.forwards + state.forwards + facts.pop("forwards", 0)
    if run.check_precision:
        attrs.update(_precision_verdict(facts, run, passes.runner is not None, call.outcome.units))
    ds = _estimate_result(call, est, state.m0, forwards, attrs, settings.ci_level)
    if runtime is not None:
        _fill_runtime(runtime, batcher, began, forwards, item_bytes, est.rounds, passes.runner is not None,
                      call.device, cuda_base)
        runtime.update(forward_path=attrs["forward_path"], incremental_flops_ratio=passes.flops_ratio)
    return ds


def check_options(options: Mapping[str, Any]) -> None:
    """Check options of :func:`explain` with the checks it runs itself, without a model or an image.

    The estimator's options (``coarse``, ``fine``, ``tau``, ``mode``, ``target_se``, ``ci_level``,
    ``max_draws``, ``band_stop``), the execution's (``batch_size``, ``memory_budget``,
    ``precision``, ``check_precision``, ``precision_tolerance``, ``compile``, ``channels_last``) over
    :func:`explain`'s defaults, and the shared options (:func:`pdcr_lab.call.check_shared_options`).
    The sweep runs this before anything is computed.

    Parameters
    ----------
    options : mapping
        Options of an :func:`explain` call.

    Examples
    --------
    >>> from pdcr_lab.engine import check_options
    >>> check_options({"coarse": 3, "fine": 50})
    >>> check_options({"fine": -5})
    Traceback (most recent call last):
    ...
    ValueError: fine=-5 is too small; expected an integer >= 1
    """
    values = {**{n: p.default for n, p in inspect.signature(explain).parameters.items()}, **options}
    for group in (_Estimation, _Execution):
        names = [n for n, p in inspect.signature(group.check).parameters.items() if p.kind is p.KEYWORD_ONLY]
        group.check(**{n: values[n] for n in names})
    check_shared_options(options, caller="explain")


def _estimate(passes: _Forwards, state: RoiOutcome, treatment: Any, settings: _Estimation, item_bytes: int | None,
              callback: Callable[[int, int], None] | None) -> tuple[Any, Batcher, dict[str, Any]]:
    """Run the estimator (paper or adaptive) and, when asked, the precision check."""
    evaluate = passes.evaluator(state, treatment)
    batcher, key = passes.batcher(item_bytes)
    candidates = passes.call.candidates
    m0 = state.m0.double().cpu().numpy()
    common = dict(tau=settings.tau, batch_size=batcher, progress=callback, ci_level=settings.ci_level,
                  stochastic=treatment.stochastic)
    if settings.adaptive:
        est = adaptive_ate(evaluate, candidates, m0, first=max(settings.coarse, 2), max_draws=settings.max_draws,
                           target_se=settings.target_se, band_stop=settings.band_stop, **common)
    else:
        est = screened_ate(evaluate, candidates, m0, coarse=settings.coarse, fine=settings.fine, **common)
    passes.remember(batcher, key)
    facts: dict[str, Any] = {}
    if passes.run.check_precision:
        plain = passes.outputs(passes.image.unsqueeze(0), fast=False)
        # Ground-truth-free mode: the float32 run is compared against its own prediction.
        reference = None
        if passes.call.target is None:
            reference = torch.zeros_like(state.reference)
            passes.call.crop(reference)[...] = passes.call.adapter.binary(plain)[0]
        m0_plain = state.from_outputs(plain, reference)[0]
        facts = _precision_check(evaluate, est, candidates, m0, m0_plain, reference, batcher)
    return est, batcher, facts


def _precision_verdict(facts: dict[str, Any], run: _Execution, compiled: bool, units: str) -> dict[str, Any]:
    ok = facts["precision_error"] <= run.precision_tolerance
    if not ok:
        warnings.warn(
            f"precision={run.precision!r}{' with compile' if compiled else ''}"
            f"{' and channels_last' if run.channels_last else ''} moved a per-draw effect by "
            f"{facts['precision_error']:.4g} {units} (tolerance {run.precision_tolerance}); "
            "the map may differ from the float32 map: use precision='float32' for this model",
            PrecisionWarning,
            stacklevel=3,
        )
    return {**facts, "precision_tolerance": run.precision_tolerance, "precision_ok": int(ok)}


def _estimate_result(call: Call, est: Any, m0: torch.Tensor, forwards: int, attrs: dict[str, Any],
                     ci_level: float) -> xr.Dataset:
    """The estimator's per-block arrays on the grid, finished into the schema by the call layer."""
    grid = (len(call.rois), *call.grid)
    blocks = {name: getattr(est, name).reshape(grid)
              for name in ("ate", "ate_raw", "stderr", "ci_low", "ci_high", "n_draws", "screened")}
    blocks["roi_block"] = call.roi_blocks
    ds = result(call, blocks, m0=m0, forwards=forwards, attrs=attrs)
    units = call.outcome.units
    ds["ci_low"].attrs.update({"long_name": f"lower {ci_level:.0%} confidence bound of ate_raw", "units": units})
    ds["ci_high"].attrs.update({"long_name": f"upper {ci_level:.0%} confidence bound of ate_raw", "units": units})
    return ds


def _reset_peak(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(device)
    return int(torch.cuda.memory_allocated(device))


def _fill_runtime(runtime: dict, batcher: Batcher, began: float, forwards: int, item_bytes: int | None, rounds: int,
                  compiled: bool, device: torch.device, cuda_base: int) -> None:
    seconds = time.perf_counter() - began
    runtime.update(batcher.stats())
    runtime.update({"seconds": seconds, "forwards": forwards,
                    "forwards_per_second": forwards / seconds if seconds > 0 else float("inf"),
                    "item_bytes": item_bytes, "rounds": rounds, "compiled": compiled, "device": str(device)})
    if device.type == "cuda":
        runtime["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - cuda_base)
    elif item_bytes:
        runtime["peak_bytes"] = int(item_bytes * batcher.size)  # an estimate: CPUs have no allocator stats


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
