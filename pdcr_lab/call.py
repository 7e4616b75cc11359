"""The shared call layer of every explainer: checks, RoIs, outcome, evaluation context, result.

Every explainer (:func:`pdcr_lab.explain`, :func:`pdcr_lab.components.explain_components`, the
baselines) and the faithfulness metrics stand on this module:

* :func:`prepare` checks the call the same way for all of them (image, block grid, channels, RoIs,
  target, seed, device, how the model is read) and returns a :class:`Call`;
* :func:`evaluation` is the context a model is run in (eval mode, device, restored afterwards);
* :class:`RoiOutcome` is the quantity PdCR measures, M = 100 x DSC in the RoI by default, bound
  to the device and cropped to the RoIs' bounding box;
* :func:`progress_callback` / :func:`reporting` and :func:`auto_batch_size` are the shared progress
  reporting and batch sizing;
* :func:`finish` assembles a result in the effects schema (:mod:`pdcr_lab.schema`) with the attrs
  every explainer records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .checks import as_image, as_mask, check_float, check_int
from .version import __version__
from .adapters import ModelAdapter
from .banks import PatchBank
from .defaults import PAPER
from .rois import parse_rois
from .interventions import block_grid, make_intervention
from .outcomes import Outcome, get_outcome
from .schema import effects_dataset, validate

__all__ = [
    "Call", "READING", "check_reading", "prepare", "RoiOutcome", "replacement_image", "block_means", "finish",
    "gradients", "shared_doc", "evaluation", "reporting", "progress_callback", "auto_batch_size",
]


def auto_batch_size(image_shape: tuple[int, int, int], device: torch.device) -> int:
    """Largest batch size worth trying: about 16 MB of input on a CPU, free-memory based on CUDA.

    With ``batch_size=None`` :func:`explain` times the powers of two up to this size on its first
    jobs and keeps the fastest (:class:`pdcr_lab.estimator.Batcher`).
    """
    pixels = int(np.prod(image_shape))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Activations of small segmentation nets take roughly 100-300 floats per input value.
        size = int(free * 0.5 / (pixels * 4 * 300))
        return int(max(1, min(1024, 2 ** int(np.log2(max(size, 1))))))
    size = max(1, (4 * 1024 * 1024) // pixels)
    return int(min(64, 2 ** int(np.log2(size))))


@contextlib.contextmanager
def evaluation(model: nn.Module, device: torch.device | None, *, channels_last: bool = False) -> Iterator[None]:
    """Eval mode, the requested device (and memory layout) for the explanation; all restored afterwards."""
    training = model.training
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    original = first.device if first is not None else None
    # Only convert back what we converted: a model that already was channels-last stays so.
    restore_layout = channels_last and not any(
        p.ndim == 4 and not p.is_contiguous() for p in model.parameters()
    )
    try:
        model.eval()
        if device is not None and original is not None and original != device:
            model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            yield
    finally:
        if restore_layout:
            model.to(memory_format=torch.contiguous_format)
        if device is not None and original is not None and original != device:
            model.to(original)
        model.train(training)


def progress_callback(progress: bool | Callable[[int, int], None]) -> tuple[Callable[[int, int], None] | None, Any]:
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


@contextlib.contextmanager
def reporting(progress: bool | Callable[[int, int], None]) -> Iterator[Callable[[int, int], None] | None]:
    """:func:`progress_callback` as a context: the tqdm bar (for ``True``) is closed on exit."""
    callback, bar = progress_callback(progress)
    try:
        yield callback
    finally:
        if bar is not None:
            bar.close()


@dataclass
class Call:
    """A checked explainer call: image, RoIs, reference and how the model is read."""

    adapter: ModelAdapter
    image: torch.Tensor  # (C, H, W) float32, CPU
    rois: torch.Tensor  # (R, H, W) bool
    boxes: np.ndarray  # (R, 4) row, col, height, width
    multi: bool  # several RoIs given: results get a ``roi`` dim
    target: torch.Tensor | None  # (H, W) bool ground truth, or None (the factual prediction)
    block: int
    outcome: Outcome
    device: torch.device
    seed: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.image.shape[1] // self.block, self.image.shape[2] // self.block

    @property
    def roi_blocks(self) -> np.ndarray:
        """(R, Gy, Gx) True where a block overlaps the RoI (never perturbed, 0 in every map)."""
        return (block_grid(self.rois.float().unsqueeze(1), self.block).amax(dim=(-1, -2, -3)) > 0).numpy()


#: Options shared by every explainer (as in :func:`pdcr_lab.explain`) with their defaults: the grid,
#: the outcome M and how the model's output is read. Baselines take them as keyword arguments.
READING: dict[str, Any] = {
    "block": PAPER.block,
    "outcome": "dice",
    "threshold": PAPER.threshold,
    "class_index": None,
    "output_key": None,
    "activation": "auto",
    "normalize": None,
}


def check_reading(caller: str, reading: Mapping[str, Any], allowed: Any = READING) -> dict[str, Any]:
    """The shared options with their defaults filled in; unknown names are refused."""
    unknown = sorted(set(reading) - set(allowed))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword arguments {unknown}; the shared options are {list(allowed)}"
        )
    return {**{k: READING[k] for k in allowed}, **reading}


def prepare(model: nn.Module, image: Any, *, roi: Any, target: Any, seed: int, device: str | torch.device | None,
            caller: str, **reading: Any) -> Call:
    """Check an explainer call the way :func:`pdcr_lab.explain` does and gather its pieces."""
    opts = check_reading(caller, reading)
    block, outcome, threshold = opts["block"], opts["outcome"], opts["threshold"]
    adapter = ModelAdapter(model, opts["output_key"], opts["activation"], opts["class_index"],
                           check_float("threshold", threshold), opts["normalize"])
    image = as_image("image", image)
    c, h, w = image.shape
    block = check_int("block", block, minimum=1)
    if h % block or w % block:
        sizes = [b for b in range(1, min(h, w) + 1) if h % b == 0 and w % b == 0]
        raise ValueError(
            f"block={block} does not tile the {h}x{w} image; use a block size in {sizes}, or resize the image"
        )
    expected = adapter.expected_channels()
    if expected is not None and expected != c:
        raise ValueError(f"image has {c} channels but the model's first layer expects {expected}")
    rois, boxes, multi = parse_rois(roi, (h, w))
    target_mask = None if target is None else as_mask("target", target, (h, w))
    call = Call(
        adapter=adapter,
        image=image,
        rois=rois,
        boxes=boxes,
        multi=multi,
        target=target_mask,
        block=block,
        outcome=get_outcome(outcome),
        device=torch.device(device) if device is not None else adapter.device(),
        seed=check_int("seed", seed, minimum=0),
    )
    if call.roi_blocks.reshape(len(rois), -1).all(axis=1).any():
        raise ValueError("the RoI covers every block of the image: there is nothing to intervene on")
    return call


class RoiOutcome:
    """The RoI outcome M of batches of images, bound to a device (build it inside the model's context).

    The reference mask is the ground truth when the call has one, else the model's factual binary
    prediction (PdCR's ground-truth-free mode). ``m0`` is M on the unperturbed image, shape (R,).
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self.adapter = call.adapter
        h, w = call.image.shape[1:]
        self.image = call.image.to(call.device)
        self.rois = call.rois.to(call.device)
        with torch.no_grad():
            try:
                factual = self.adapter.logits(self.image.unsqueeze(0))
            except RuntimeError as exc:
                raise ValueError(f"the model failed on the image of shape {tuple(call.image.shape)}: {exc}") from exc
            self.adapter.check_output(factual, (h, w))
            #: (H, W) float 0/1: the model's factual binary prediction of the explained class
            self.prediction = self.adapter.binary(factual)[0]
            self.reference = self.prediction if call.target is None else call.target.to(call.device, factual.dtype)
            self.m0 = self.from_outputs(factual)[0]
        self.forwards = 1  # the factual pass

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) model output of images in [0, 1]."""
        return self.adapter.logits(images)

    def from_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """(B, R) outcome of model outputs."""
        needs = self.call.outcome.needs
        return self.call.outcome(self.adapter.prediction(out, needs), self.reference, self.rois)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, R) outcome of a batch of (B, C, H, W) images."""
        return self.from_outputs(self.outputs(images))


@contextlib.contextmanager
def gradients(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The explanation context of :func:`pdcr_lab.explain` (eval mode, device, restored afterwards),
    with autograd switched back on for the gradient-based baselines."""
    with evaluation(model, device), torch.inference_mode(False), torch.enable_grad():
        yield


def replacement_image(name: str, image: torch.Tensor, block: int, *, bank: PatchBank | None, seed: int) -> torch.Tensor:
    """The image with *every* block replaced by intervention `name` (draw 0 of the natural table).

    Deletion/insertion steps and the masked inputs of MiSuRe and RISE mix the image with this one,
    so every method is scored with the same content the project's interventions put in a block.
    """
    intervention = make_intervention(name, image, block, bank=bank, seed=seed, n_draws=1)
    c, h, w = image.shape
    gy, gx = h // block, w // block
    cells = torch.arange(gy * gx)
    blocks = intervention.replacements(cells, torch.zeros_like(cells))
    out = torch.empty_like(image)
    block_grid(out, block)[...] = blocks.expand(gy * gx, c, block, block).reshape(gy, gx, c, block, block)
    return out


def block_means(pixels: torch.Tensor | np.ndarray, block: int) -> np.ndarray:
    """(..., H, W) pixel map -> (..., H/b, W/b) mean over each b x b block."""
    values = torch.as_tensor(pixels, dtype=torch.float64)
    return block_grid(values.unsqueeze(-3), block).mean(dim=(-1, -2, -3)).numpy()


def finish(
    call: Call,
    *,
    method: str,
    block_map: np.ndarray,
    m0: torch.Tensor,
    forwards: int,
    support_sign: int,
    units: str,
    pixel_maps: Mapping[str, np.ndarray] | None = None,
    scalars: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Assemble a baseline's result in the effects schema.

    Parameters
    ----------
    block_map : array (R, Gy, Gx)
        The method's map on the block grid (its own units and sign); RoI blocks are zeroed in
        ``ate`` (they are never perturbed) and kept in ``ate_raw``.
    support_sign : {-1, +1}
        -1 when negative values mean "supports the RoI" (PdCR's convention), +1 when positive do.
        The faithfulness metrics rank blocks by ``support_sign * ate``, most supportive first.
    pixel_maps : name -> (R, H, W) arrays kept as extra variables on the pixel grid (y, x).
    scalars : name -> (R,) arrays kept as extra per-RoI variables.
    """
    roi_blocks = call.roi_blocks
    block_map = np.asarray(block_map, dtype=np.float64)
    zeros = np.zeros_like(block_map)
    blocks = {
        "ate": np.where(roi_blocks, 0.0, block_map),
        "ate_raw": block_map,
        "stderr": zeros,
        "n_draws": np.zeros(block_map.shape, dtype=np.int32),
        "screened": np.zeros(block_map.shape, dtype=bool),
        "roi_block": roi_blocks,
    }
    c, h, w = call.image.shape
    info = {
        "method": method,
        "pdcr_lab_version": __version__,
        "block": call.block,
        "outcome": call.outcome.name,
        "units": units,
        "outcome_units": call.outcome.units,
        "support_sign": int(support_sign),
        "threshold": call.adapter.threshold,
        "class_index": int(call.adapter.class_index or 0),
        "seed": call.seed,
        "target_source": "prediction" if call.target is None else "ground_truth",
        "image_height": h,
        "image_width": w,
        "image_channels": c,
        "device": str(call.device),
        **(attrs or {}),
    }
    ds = effects_dataset(blocks, m0=m0.detach().double().cpu().numpy(), forwards=forwards, roi_mask=call.rois.numpy(),
                         roi_box=call.boxes, attrs=info, roi_labels=list(range(len(call.rois))))
    ds["m0"].attrs["units"] = call.outcome.units
    for name, values in (pixel_maps or {}).items():
        ds[name] = (("roi", "y", "x"), np.asarray(values))
    for name, values in (scalars or {}).items():
        ds[name] = (("roi",), np.asarray(values))
    if not call.multi:  # one RoI given: no roi dim, as in pdcr_lab.explain
        ds = ds.isel(roi=0, drop=True)
    return validate(ds)


SHARED_PARAMETERS = """\
    seed : int
        Seed of every random choice; recorded in the result.
    device : str or torch.device, optional
        Where to run (default: the model's device); the model is moved back afterwards.
    **reading
        The options shared with :func:`pdcr_lab.explain` (defaults in ``READING``):
    block : int

        Block side b of the result's grid (the same grid as PdCR); must tile the image.
    outcome : {"dice", "soft_dice", "iou"} or Outcome
        The RoI state M recorded as ``m0`` (and measured by the perturbation methods), as in PdCR.
    threshold, class_index, output_key, activation, normalize
        How the model is read (:class:`pdcr_lab.adapters.ModelAdapter`), as in PdCR."""


def shared_doc(func: Any) -> Any:
    """Insert the parameters every explainer shares into `func`'s docstring at ``{shared}``."""
    func.__doc__ = func.__doc__.replace("    {shared}", SHARED_PARAMETERS)
    return func
