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
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .checks import as_image, as_mask, as_tensor, check_float, check_int, describe
from .version import __version__
from .adapters import ModelAdapter
from .banks import PatchBank
from .defaults import PAPER
from .grids import block_sides, block_view, grid_shape
from .rois import parse_rois
from .interventions import block_grid, check_bank, make_intervention
from .outcomes import Outcome, get_outcome
from .schema import NOTE_ATTR, effects_dataset, validate

__all__ = [
    "Call", "READING", "check_reading", "check_shared_options", "check_value_range", "prepare", "resolve_device", "to_unit_range", "unit_bank", "check_batch",
    "check_finite", "RoiOutcome", "OutcomeWarning", "replacement_image", "block_means",
    "result", "finish",
    "gradients", "shared_doc", "evaluation", "reporting", "progress_callback", "auto_batch_size",
]


def auto_batch_size(image_shape: tuple[int, int, int], device: torch.device) -> int:
    """Largest batch size worth trying: about 16 MB of input on a CPU, free-memory based on CUDA.

    With ``batch_size=None`` :func:`pdcr_lab.explain` times the powers of two up to this size on
    its first jobs and keeps the fastest (:class:`pdcr_lab.estimator.Batcher`).

    Parameters
    ----------
    image_shape : (C, H, W)
        Shape of one input image.
    device : torch.device
        Where the model runs.

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.call import auto_batch_size
    >>> auto_batch_size((3, 96, 96), torch.device("cpu"))
    64
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
def evaluation(model: nn.Module, device: torch.device | None, *, channels_last: bool = False,
               volume: bool = False) -> Iterator[None]:
    """The context a model is explained in: eval mode, the requested device and layout, no autograd.

    Everything is restored on exit, also after an error or a KeyboardInterrupt: the mode of every
    submodule as it was (a Dropout the caller keeps in train mode stays so), the device, and the
    memory layout of a model that was converted here.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model.
    device : torch.device, optional
        Where to run; None: where the model is.
    channels_last : bool
        Convert the model to channels-last layout for the call.
    volume : bool
        The model takes volumes: channels-last means ``torch.channels_last_3d``.

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.call import evaluation
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Dropout()).eval()
    >>> _ = net[1].train()  # a Dropout kept active on purpose, in an otherwise eval-mode model
    >>> with evaluation(net, None):
    ...     net[1].training
    False
    >>> net[0].training, net[1].training
    (False, True)
    """
    modes = [(module, module.training) for module in model.modules()]
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    original = first.device if first is not None else None
    # Only convert back what we converted: a model that already was channels-last stays so.
    rank = 5 if volume else 4
    restore_layout = channels_last and not any(
        p.ndim == rank and not p.is_contiguous() for p in model.parameters()
    )
    try:
        model.eval()
        if device is not None and original is not None and original != device:
            model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last_3d if volume else torch.channels_last)
        with torch.inference_mode():
            yield
    finally:
        if restore_layout:
            model.to(memory_format=torch.contiguous_format)
        if device is not None and original is not None and original != device:
            model.to(original)
        for module, training in modes:
            module.training = training


def progress_callback(progress: bool | Callable[[int, int], None]) -> tuple[Callable[[int, int], None] | None, Any]:
    """The progress reporting of an explainer: ``(callback(done, total) or None, tqdm bar or None)``.

    Parameters
    ----------
    progress : bool or callable(done, total)
        True: a tqdm bar (close it when done); a callable: used as it is; False: nothing.
    """
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
    """:func:`progress_callback` as a context: the tqdm bar (for ``True``) is closed on exit.

    Parameters
    ----------
    progress : bool or callable(done, total)
        As in :func:`progress_callback`.
    """
    callback, bar = progress_callback(progress)
    try:
        yield callback
    finally:
        if bar is not None:
            bar.close()


@dataclass
class Call:
    """A checked explainer call: the image, its RoIs and reference, the grid and how the model is read.

    Built by :func:`prepare`; every explainer reads its pieces from here instead of parsing its
    arguments again, so all of them check inputs, crop to the RoIs and record attrs the same way.
    """

    adapter: ModelAdapter  #: how the model's output is read (output, activation, class)
    image: torch.Tensor  #: (C, H, W) float32 on the CPU, or a volume (C, D, H, W)
    rois: torch.Tensor  #: (R, H, W) bool (R, D, H, W for a volume)
    boxes: np.ndarray  #: (R, 4) row, col, height, width of each RoI's bounding box ((R, 6) z, row, col, depth, ...)
    multi: bool  #: several RoIs were given: results get a ``roi`` dim
    target: torch.Tensor | None  #: (H, W) bool ground truth, or None (the factual prediction)
    block: int  #: block side b in pixels (the x side of a volume's cuboid blocks)
    outcome: Outcome  #: the RoI state M
    device: torch.device  #: where the model runs
    seed: int  #: seed of every random choice
    options: dict[str, Any]  #: the reading options as given (recorded in attrs)
    bank: PatchBank | None = None  #: natural blocks on the image's [0, 1] scale, when the call has a bank
    conversion: str = "none"  #: how the image's values were brought to [0, 1] (:func:`to_unit_range`)
    #: the :class:`OutcomeWarning` messages of this call, also kept in the result (``attrs["outcome_warning"]``)
    warnings: list[str] = field(default_factory=list)
    #: the block's side along each spatial axis (empty: ``block`` along every axis)
    sides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.sides:
            self.sides = (self.block,) * (self.image.dim() - 1)

    @property
    def ndim(self) -> int:
        """Spatial axes of the image: 2, or 3 for a volume."""
        return self.image.dim() - 1

    @property
    def shape(self) -> tuple[int, ...]:
        """(C, H, W) of the image ((C, D, H, W) of a volume)."""
        return tuple(self.image.shape)

    @property
    def grid(self) -> tuple[int, ...]:
        """(Gy, Gx) blocks of the image ((Gz, Gy, Gx) of a volume)."""
        return grid_shape(self.image.shape[1:], self.sides)

    @property
    def roi_blocks(self) -> np.ndarray:
        """(R, Gy, Gx) True where a block overlaps the RoI (never perturbed, 0 in every map)."""
        inside = tuple(range(-(self.ndim + 1), 0))  # the channel axis and the block's own axes
        return (block_view(self.rois.float().unsqueeze(1), self.sides).amax(dim=inside) > 0).numpy()

    @property
    def candidates(self) -> np.ndarray:
        """(R, Gy * Gx) True for the blocks an explainer may perturb for each RoI."""
        return ~self.roi_blocks.reshape(len(self.rois), -1)

    @property
    def box(self) -> tuple[int, ...]:
        """(y0, y1, x0, x1): the bounding box of all RoIs ((z0, z1, y0, y1, x0, x1) in a volume);
        outcomes only need outputs inside it."""
        k = self.ndim
        low = self.boxes[:, :k].min(axis=0)
        high = (self.boxes[:, :k] + self.boxes[:, k:]).max(axis=0)
        return tuple(int(v) for pair in zip(low, high) for v in pair)

    def crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """The spatial dims of `tensor` cut to :attr:`box` (a view).

        Parameters
        ----------
        tensor : Tensor (..., H, W) or (..., D, H, W)
            A mask or a model output on the image's pixel grid.
        """
        bounds = self.box
        return tensor[(..., *(slice(bounds[2 * i], bounds[2 * i + 1]) for i in range(self.ndim)))]

    @property
    def box_shape(self) -> tuple[int, ...]:
        """Spatial size of :meth:`crop`'s result."""
        bounds = self.box
        return tuple(bounds[2 * i + 1] - bounds[2 * i] for i in range(self.ndim))

    def model_failed(self, exc: Exception) -> ValueError:
        """The error to raise when the model fails on the image: channels when they explain it, else the shape.

        The channel count of the first convolution is only a guess of what the model takes (its
        first module need not see the input), so it is used to explain a failure, never to refuse
        an image the model accepts.

        Parameters
        ----------
        exc : Exception
            What the model raised.
        """
        c = self.shape[0]
        if self.ndim == 3:
            return ValueError(f"the model failed on the volume of shape {self.shape} (C, D, H, W), fed as a batch "
                              f"(B, C, D, H, W): {exc}. A 4-D image is explained as a volume with a 3-D model; to "
                              "explain one 2-D image pass it as (C, H, W) (e.g. image[0] of a batch of one)")
        expected = self.adapter.expected_channels()
        if expected is not None and expected != c:
            return ValueError(f"image has {c} channels but the model's first layer expects {expected}: {exc}")
        return ValueError(f"the model failed on the image of shape {self.shape}: {exc}")

    def attrs(self, method: str) -> dict[str, Any]:
        """The attrs every explainer records: method, version, grid, outcome, reading, seed, image, device.

        Parameters
        ----------
        method : str
            The explainer's name (``attrs["method"]``).
        """
        c, *spatial = self.shape
        h, w = spatial[-2:]
        normalize = self.options.get("normalize")
        volume = {"image_depth": spatial[0], "block_shape": json.dumps(list(self.sides))} if self.ndim == 3 else {}
        return {
            "method": method,
            "pdcr_lab_version": __version__,
            "block": self.block,
            "outcome": self.outcome.name,
            "units": self.outcome.units,
            "threshold": self.adapter.threshold,
            "class_index": int(self.adapter.class_index or 0),
            "activation": str(self.options.get("activation", "auto")),
            "output_key": "none" if self.options.get("output_key") is None else str(self.options["output_key"]),
            "normalize": "none" if normalize is None else json.dumps([list(map(float, v)) for v in normalize]),
            "seed": self.seed,
            "target_source": "prediction" if self.target is None else "ground_truth",
            "value_conversion": self.conversion,
            "image_height": h,
            "image_width": w,
            "image_channels": c,
            **volume,
            "device": str(self.device),
        }


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
    "value_range": None,
}


def check_reading(caller: str, reading: Mapping[str, Any], allowed: Any = READING) -> dict[str, Any]:
    """The shared options with their defaults filled in; unknown names are refused.

    Parameters
    ----------
    caller : str
        Name of the explainer, for the message.
    reading : mapping
        The keyword arguments the caller received.
    allowed : iterable of str
        The names accepted (default: all of :data:`READING`).

    Examples
    --------
    >>> check_reading("rise", {"block": 4})["block"], check_reading("rise", {})["outcome"]
    (4, 'dice')
    """
    unknown = sorted(set(reading) - set(allowed))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword arguments {unknown}; the shared options are {list(allowed)}"
        )
    return {**{k: READING[k] for k in allowed}, **reading}


def check_value_range(value_range: Any) -> tuple[float, float] | None:
    """`value_range` as a checked ``(low, high)`` pair of finite numbers with low < high, or None.

    Parameters
    ----------
    value_range : (low, high) or None
        The values that map to 0 and 1.
    """
    if value_range is None:
        return None
    try:
        lo, hi = (check_float("value_range", v) for v in value_range)
    except TypeError:
        raise TypeError(f"value_range must be a (low, high) pair of numbers, got {describe(value_range)}") from None
    if not hi > lo:
        raise ValueError(f"value_range={tuple(value_range)} must have low < high")
    return lo, hi


def to_unit_range(name: str, value: Any, value_range: Any = None) -> tuple[torch.Tensor, str]:
    """Pixel values as float32 in [0, 1] (PdCR's scale, the natural bank's), and how they were converted.

    Float values must already lie in [0, 1]; unsigned integers (uint8, uint16, ...) are divided by
    their dtype's largest value; ``value_range=(low, high)`` maps low -> 0 and high -> 1 (values
    outside it are refused). Anything else is refused with a message that says what was seen and
    how to convert it: a float image in 0-255 or in [-1, 1] would otherwise explain a degenerate
    model input and give a plausible-looking but wrong map.

    Parameters
    ----------
    name : str
        The argument's name, for messages.
    value : Tensor or array
        Pixel values (any shape).
    value_range : (low, high), optional
        The values that map to 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> from pdcr_lab.call import to_unit_range
    >>> pixels, how = to_unit_range("image", np.array([[[0, 128, 255]]], dtype=np.uint8))
    >>> pixels.tolist(), how
    ([[[0.0, 0.501960813999176, 1.0]]], 'uint8 / 255')
    >>> to_unit_range("image", np.array([[[0.0, 200.0]]]))
    Traceback (most recent call last):
    ...
    ValueError: image values span [0, 200] but pdcr_lab takes floats in [0, 1] ...
    """
    bounds = check_value_range(value_range)
    dtype = value.dtype if isinstance(value, (np.ndarray, torch.Tensor)) else np.asarray(value).dtype
    integer = (not dtype.is_floating_point and dtype != torch.bool) if isinstance(dtype, torch.dtype) else (
        np.issubdtype(dtype, np.integer))
    tensor = as_tensor(name, value)
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf values; expected finite pixel values")
    if bounds is not None:
        lo, hi = bounds
        conversion = f"({name} - {lo:g}) / ({hi:g} - {lo:g})"
    elif integer:
        info = torch.iinfo(dtype) if isinstance(dtype, torch.dtype) else np.iinfo(dtype)
        if info.min < 0:
            raise ValueError(f"{name} has the signed integer dtype {str(dtype).replace('torch.', '')}; pass value_range=(low, high) to say "
                             "which values are black (0) and white (1)")
        lo, hi = 0.0, float(info.max)
        conversion = f"{str(dtype).replace('torch.', '')} / {info.max}"
    else:
        lo, hi, conversion = 0.0, 1.0, "none"
    if tensor.numel():
        vmin, vmax = float(tensor.min()), float(tensor.max())
        slack = 1e-6 * (hi - lo)
        if vmin < lo - slack or vmax > hi + slack:
            raise ValueError(_range_message(name, vmin, vmax, lo, hi, bounds is not None))
    return ((tensor - lo) / (hi - lo)).clamp_(0.0, 1.0), conversion


def _range_message(name: str, vmin: float, vmax: float, lo: float, hi: float, given: bool) -> str:
    if given:
        return f"{name} values span [{vmin:.4g}, {vmax:.4g}], outside value_range=({lo:g}, {hi:g})"
    hint = "convert them to [0, 1] or pass value_range=(low, high) to rescale"
    if vmin >= -0.1 and vmax <= 1.1:
        hint = "they overshoot [0, 1] slightly (bicubic or antialiased resizing does that): clamp them, e.g. image.clamp(0, 1)"
    elif vmin >= 0 and vmax <= 255:
        hint = "they look like 8-bit values stored as floats: divide by 255, or pass value_range=(0, 255)"
    elif vmin >= -1 and vmax <= 1:
        hint = ("they look normalised to [-1, 1]: pass value_range=(-1, 1), and give the model's own input "
                "normalisation with normalize=(mean, std)")
    return f"{name} values span [{vmin:.4g}, {vmax:.4g}] but pdcr_lab takes floats in [0, 1] (the bank's scale); {hint}"


def unit_bank(bank: Any, value_range: Any = None) -> PatchBank:
    """The bank on [0, 1]: checked like the image (same `value_range`), rescaled when one is given.

    Parameters
    ----------
    bank : PatchBank
        Natural blocks.
    value_range : (low, high), optional
        The values of the image and the bank that map to 0 and 1.
    """
    if not isinstance(bank, PatchBank):
        raise TypeError(f"bank must be a pdcr_lab.PatchBank, got {describe(bank)}")
    blocks, conversion = to_unit_range("bank", bank.blocks, value_range)
    if conversion == "none":
        return bank
    return PatchBank(blocks, {**bank.provenance, "rescaled": conversion})


def check_shared_options(options: Mapping[str, Any], *, caller: str = "explainer") -> None:
    """Check the options every explainer shares (:data:`READING`) without a model or an image.

    The checks :func:`prepare` runs on every call: the model adapter's (``output_key``,
    ``activation``, ``class_index``, ``threshold``, ``normalize``), the outcome's name,
    ``value_range`` and ``block``. Options not in ``READING`` are ignored. The sweep runs this (via
    :meth:`pdcr_lab.explainers.ExplainerSpec.check_options`) before anything is computed.

    Parameters
    ----------
    options : mapping
        Options of an explainer call.
    caller : str
        The explainer's name, for messages.

    Examples
    --------
    >>> from pdcr_lab.call import check_shared_options
    >>> check_shared_options({"threshold": 0.3, "outcome": "iou", "steps": 9})
    >>> check_shared_options({"outcome": "dcie"})
    Traceback (most recent call last):
    ...
    ValueError: outcome='dcie' is not supported; expected one of ['dice', 'soft_dice', 'iou', 'probability']
    """
    opts = check_reading(caller, {k: v for k, v in options.items() if k in READING})
    ModelAdapter(nn.Identity(), opts["output_key"], opts["activation"], opts["class_index"],
                 check_float("threshold", opts["threshold"]), opts["normalize"])
    get_outcome(opts["outcome"])
    check_value_range(opts["value_range"])
    check_int("block", opts["block"], minimum=1)


def _check_block(block: Any, h: int, w: int, why: str = "") -> int:
    block = check_int("block", block, minimum=1)
    if h % block or w % block:
        sizes = [b for b in range(1, min(h, w) + 1) if h % b == 0 and w % b == 0]
        raise ValueError(
            f"block={block} does not tile the {h}x{w} image{why}; use a block size in {sizes}, or resize the image"
        )
    return block


def _check_volume_block(block: Any, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """A volume's block sides (one int = a cube), each tiling its axis; the error lists what would."""
    sides = block_sides(block, len(spatial))
    bad = [(axis, side, size) for axis, side, size in zip("DHW", sides, spatial) if size % side]
    if bad:
        detail = "; ".join(f"{side} does not divide {axis}={size} (sides that do: "
                           f"{[b for b in range(1, size + 1) if size % b == 0]})" for axis, side, size in bad)
        raise ValueError(f"block={block!r} does not tile the {'x'.join(map(str, spatial))} volume (D x H x W): "
                         f"{detail}; pass one side per axis, e.g. block=(bz, by, bx), or crop the volume")
    return sides


def resolve_device(device: str | torch.device | None, adapter: ModelAdapter) -> torch.device:
    """The device an explainer runs on: `device` when given, else the model's; checked before anything moves.

    A device the model cannot run on is refused here, before the model is moved: moving a model
    to ``"meta"`` drops its weights, and a failed move would leave it half-moved.

    Parameters
    ----------
    device : str, torch.device or None
        What the caller asked for.
    adapter : ModelAdapter
        The model's adapter (its parameters tell the model's device).

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.adapters import ModelAdapter
    >>> resolve_device("cpu", ModelAdapter(torch.nn.Conv2d(1, 1, 1)))
    device(type='cpu')
    >>> resolve_device("meta", ModelAdapter(torch.nn.Conv2d(1, 1, 1)))
    Traceback (most recent call last):
    ...
    ValueError: device='meta' holds no data: a model moved there loses its weights; use 'cpu' or 'cuda'
    """
    if device is None:
        return adapter.device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', a torch.device or None, got {describe(device)}")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device={device!r} is not a device torch knows ({exc}); expected e.g. 'cpu' or 'cuda:0'") from None
    if resolved.type == "meta":
        raise ValueError(f"device={device!r} holds no data: a model moved there loses its weights; use 'cpu' or 'cuda'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = f"this torch ({torch.__version__}) is a CPU-only build" if torch.version.cuda is None else \
                "no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES?)"
            raise ValueError(f"device={device!r}: no CUDA device is available; {build}; use device='cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: there are only {torch.cuda.device_count()} CUDA devices "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif resolved.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"device={device!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def prepare(
    model: nn.Module,
    image: Any,
    *,
    roi: Any,
    target: Any = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    caller: str,
    bank: PatchBank | None = None,
    tiled: bool = True,
    need_candidates: bool = True,
    volumes: bool = False,
    **reading: Any,
) -> Call:
    """Check an explainer call and gather its pieces: the one place every explainer's inputs are checked.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model.
    image : Tensor or array (C, H, W)
        Float pixel values; checked to be finite and channels-first.
    roi : box, mask or list of them
        Parsed by :func:`pdcr_lab.rois.parse_rois`.
    target : array (H, W), optional
        Ground truth (bool, 0/1 or 0/255); None: the model's factual prediction is the reference.
    seed : int
        Seed of every random choice (>= 0).
    device : str or torch.device, optional
        Where to run; None: the model's device.
    caller : str
        The explainer's name, for messages.
    bank : PatchBank, optional
        Natural blocks; checked to be on the image's scale (rescaled with `value_range`).
    tiled : bool
        Require `block` to tile the image (every input-block explainer does; component effects on
        whole modules do not use the grid).
    need_candidates : bool
        Refuse RoIs that cover every block (nothing would be left to perturb).
    volumes : bool
        Also accept (C, D, H, W) volumes (the explainer runs 3-D models on cuboid blocks).
    **reading
        The shared options of :data:`READING` (block, outcome, threshold, class_index, output_key,
        activation, normalize, value_range).

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.call import prepare
    >>> call = prepare(torch.nn.Conv2d(1, 1, 1), torch.zeros(1, 16, 16), roi=(0, 0, 4, 4), caller="demo", block=4)
    >>> call.grid, call.box, int(call.candidates.sum())
    ((4, 4), (0, 4, 0, 4), 15)
    """
    opts = check_reading(caller, reading)
    adapter = ModelAdapter(model, opts["output_key"], opts["activation"], opts["class_index"],
                           check_float("threshold", opts["threshold"]), opts["normalize"])
    as_image("image", image, volumes=volumes)  # shape and finiteness first: their messages are the clearer ones
    if np.ndim(image) == 4:
        _refuse_batched_image(adapter.model, image, roi)
    image, conversion = to_unit_range("image", image, opts["value_range"])
    image = image.to(_input_dtype(adapter.model, image.dtype))
    c, *spatial = image.shape
    h, w = spatial[-2:]
    if len(spatial) == 3:
        sides = _check_volume_block(opts["block"], tuple(spatial))
        block = sides[-1]
    else:
        block = _check_block(opts["block"], h, w) if tiled else check_int("block", opts["block"], minimum=1)
        sides = (block, block)
    rois, boxes, multi = parse_rois(roi, tuple(spatial))
    if bank is not None:
        bank = unit_bank(bank, opts["value_range"])
        if bank.ndim != len(spatial):
            check_bank(bank, sides, c)  # a 2-D bank for a volume (or cubes for an image): say which
        if bank.channels != c:
            raise ValueError(f"bank blocks have {bank.channels} channels but the image has {c}")
    call = Call(
        adapter=adapter,
        image=image,
        rois=rois,
        boxes=boxes,
        multi=multi,
        target=None if target is None else as_mask("target", target, tuple(spatial)),
        block=block,
        outcome=get_outcome(opts["outcome"]),
        device=resolve_device(device, adapter),
        seed=check_int("seed", seed, minimum=0),
        options=opts,
        bank=bank,
        conversion=conversion,
        sides=sides,
    )
    if need_candidates and not call.candidates.any(axis=1).all():
        raise ValueError("the RoI covers every block of the image: there is nothing to intervene on")
    return call


def _refuse_batched_image(model: nn.Module, image: Any, roi: Any) -> None:
    """A 4-D image is a volume; a 2-D model or a 2-D box says it is a batch of one image, said as such."""
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    reasons = []
    if first is not None and len(first.kernel_size) == 2:
        reasons.append("the model's convolutions are 2-D")
    if isinstance(roi, (tuple, list)) and len(roi) == 4 and all(isinstance(v, (int, np.integer)) for v in roi):
        reasons.append("roi is a 2-D (row, col, height, width) box")
    if reasons:
        raise ValueError(f"image must have shape (C, H, W), got {describe(image)}: a 4-D image is read as a volume "
                         f"(C, D, H, W) for a 3-D model, but {' and '.join(reasons)}; pass one 2-D image, e.g. "
                         "image[0] of a batch of one")


def _input_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype of the model's parameters (a float64 model gets float64 images), else `default`."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return default


def check_batch(out: torch.Tensor, size: int) -> torch.Tensor:
    """`out` if it holds one output per input image, else an error that says so.

    Parameters
    ----------
    out : Tensor (B, ...)
        A model's selected output.
    size : int
        The number of images in the batch.
    """
    if out.shape[0] != size:
        raise ValueError(
            f"the model returned {out.shape[0]} outputs for a batch of {size} images; it must return one output "
            "per input image along the first dim (a model that reshapes or pools over the batch cannot be explained)"
        )
    return out


def check_finite(out: torch.Tensor, where: Callable[[torch.Tensor], str] | None = None) -> None:
    """Refuse NaN or Inf in model outputs: they would count as background and give a plausible wrong map.

    Parameters
    ----------
    out : Tensor (B, ...)
        Model outputs, one row per image.
    where : callable(bad rows) -> str, optional
        Names what was fed for the bad rows (e.g. which blocks and draws).
    """
    finite = torch.isfinite(out.reshape(out.shape[0], -1)).all(dim=1)
    if bool(finite.all()):
        return
    bad = torch.nonzero(~finite).flatten().cpu()
    detail = where(bad) if where is not None else f"rows {bad[:10].tolist()}"
    raise ValueError(
        f"the model's output holds NaN or Inf for {len(bad)} of {out.shape[0]} images ({detail}); non-finite "
        "outputs are never counted: check the model on such inputs (overflow in float16, a log of 0, ...)"
    )


class OutcomeWarning(UserWarning):
    """The factual outcome M0 makes the map meaningless: an RoI with nothing to segment, or a class
    that contradicts the ground truth. Raised once per explainer call by :class:`RoiOutcome`."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LISTED_ROIS = 8  # RoIs named in a warning; the rest are counted


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point at the
    first frame outside pdcr_lab (the user's call), whichever explainer the call went through."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


class RoiOutcome:
    """The RoI outcome M of batches of model outputs, bound to a device (build it inside :func:`evaluation`).

    Outputs are cut to the RoIs' bounding box before they are read, so the reduction stays small
    whatever the image size. The reference mask is the ground truth when the call has one, else the
    model's factual binary prediction (PdCR's ground-truth-free mode). ``m0`` is M on the
    unperturbed image, shape (R,).

    For outcomes that compare with the reference (``Outcome.uses_reference``: dice, soft_dice,
    iou) one :class:`OutcomeWarning` is raised when M0 is meaningless in some RoI: the reference
    has no foreground there (M0 = 0 whatever a block does), or the ground truth has foreground but
    the explained class scores M0 < 10 while its complement would score > 50, and over the whole
    image the prediction matches the target's background (DSC > 50): the class's polarity is wrong.

    Parameters
    ----------
    call : Call
        The prepared call.
    factual : Tensor (1, K, H, W), optional
        The model's output on the image when the explainer computed it itself (e.g. with hooks);
        None: one forward pass here.
    """

    def __init__(self, call: Call, factual: torch.Tensor | None = None) -> None:
        self.call = call
        self.adapter = call.adapter
        #: (C, H, W) image on the device
        self.image = call.image.to(call.device)
        #: (R, H, W) RoI masks on the device
        self.rois = call.rois.to(call.device)
        self.roi_crop = call.crop(self.rois)
        self.forwards = 0
        if factual is None:
            factual = self.factual_output()
        check_batch(factual, 1)
        check_finite(factual, lambda _rows: "the unperturbed image")
        self.adapter.check_output(factual, tuple(call.image.shape[1:]))
        #: (1, K, H, W) the model's output on the image
        self.factual = factual
        #: (H, W) float 0/1: the model's factual binary prediction of the explained class
        self.prediction = self.adapter.binary(factual)[0].detach()
        #: (H, W) the reference of the outcome: ground truth, or the factual prediction
        self.reference = self.prediction if call.target is None else call.target.to(call.device, torch.float32)
        self.m0 = self.from_outputs(factual)[0]
        if call.outcome.uses_reference:
            self._check_m0()

    def _roi_names(self, indices: list[int], values: Callable[[int], str] = lambda _r: "") -> str:
        """'RoI 2 at (row, col, height, width) = (0, 0, 8, 8)', for the first few RoIs of `indices`."""
        axes = "(z, row, col, depth, height, width)" if self.call.ndim == 3 else "(row, col, height, width)"
        named = [f"RoI {r} at {axes} = {tuple(int(v) for v in self.call.boxes[r])}{values(r)}"
                 for r in indices[:_LISTED_ROIS]]
        more = f" and {len(indices) - _LISTED_ROIS} more" if len(indices) > _LISTED_ROIS else ""
        return "; ".join(named) + more

    def _warn(self, message: str) -> None:
        """Warn the caller, and keep the message for the result's attrs (views show it next to the map)."""
        self.call.warnings.append(message)
        warnings.warn(OutcomeWarning(message), stacklevel=_user_stacklevel())

    def _check_m0(self) -> None:
        """Warn (once for all RoIs) when M0 cannot mean what a map of it would suggest."""
        call, outcome = self.call, self.call.outcome
        roi = self.roi_crop.float()
        flat = roi.reshape(len(roi), -1)
        reference = (flat @ call.crop(self.reference).float().reshape(-1)).cpu()
        predicted = (flat @ call.crop(self.prediction).float().reshape(-1)).cpu()
        m0 = self.m0.detach().double().cpu()
        truth = call.target is not None
        # An overlap outcome is 0 for every prediction when the reference has nothing there.
        empty = [r for r in range(len(m0)) if reference[r] == 0 and abs(float(m0[r])) < 1e-6]
        if empty:
            source = "ground truth" if truth else "model's factual prediction (the reference without a target)"
            nothing = [r for r in empty if predicted[r] == 0]
            unscored = [r for r in empty if predicted[r] > 0]
            parts = [(f"In {self._roi_names(nothing)} neither the {source} nor the prediction has a foreground "
                      "pixel, so there is nothing to segment. ")] if nothing else []
            if unscored:
                parts.append(f"In {self._roi_names(unscored)} the ground truth has no foreground pixel (the "
                             f"prediction's foreground there is a false positive {outcome.name} cannot score). ")
            self._warn(
                f"M0 = 0 {outcome.units} with outcome={outcome.name!r}. {''.join(parts)}{outcome.name} stays 0 "
                "whatever a block does there, so every block is 'irrelevant' by construction. Put the RoI on the "
                "structure's boundary, e.g. roi=pdcr_lab.rois.boundary_roi(mask), or measure the model's "
                "confidence there with outcome='probability'")
        if not truth:
            return
        complement = outcome(1.0 - call.crop(self.prediction)[None].float(), call.crop(self.reference), roi)[0]
        complement = complement.detach().double().cpu()
        flipped = [r for r in range(len(m0)) if reference[r] > 0 and m0[r] < 10.0 and complement[r] > 50.0]
        # A model that merely misses the structure in the RoI also scores like that there; a flipped class
        # shows over the whole image: the prediction then segments the target's background.
        pred, background = self.prediction.float(), 1.0 - self.reference
        as_background = float(200.0 * (pred * background).sum() / (pred.sum() + background.sum() + 1e-10))
        if flipped and as_background > 50.0:
            k = int(self.adapter.class_index or 0)

            def values(r: int) -> str:
                return f" (M0 = {float(m0[r]):.2f}, complement {float(complement[r]):.2f})"

            background = ("explain a background class by passing the background mask as target (e.g. "
                          "target=~mask) with the background's class_index")
            if getattr(self.adapter, "n_classes", None) == 1:
                advice = ("the model's single output channel (class_index=0) looks like the opposite of the "
                          "target: check that the target marks the foreground with 1 or True (an inverted mask gives "
                          f"this), or, if the channel scores the background, {background}")
            else:
                advice = (f"the explained class (class_index={k}) looks like the opposite of the target: pass the "
                          f"target's own class_index (e.g. class_index=1 for the foreground of a 2-class model), or "
                          f"{background}")
            self._warn(
                f"M0 < 10 {outcome.units} with outcome={outcome.name!r} in {self._roi_names(flipped, values)} "
                "although the ground truth has foreground there, while the complement of the prediction "
                f"(1 - binary prediction) would score > 50, and over the whole image the prediction matches the "
                f"target's background (DSC {as_background:.2f}): {advice}")

    def factual_output(self) -> torch.Tensor:
        """One forward pass on the image; a model that fails on it gets a message naming the shape."""
        self.forwards += 1
        try:
            out = self.adapter.logits(self.image.unsqueeze(0))
        except RuntimeError as exc:
            raise self.call.model_failed(exc) from exc
        check_batch(out, 1)
        check_finite(out, lambda _rows: "the unperturbed image")
        return out

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) model output of images in [0, 1], one per image (checked).

        Parameters
        ----------
        images : Tensor (B, C, H, W)
            The inputs.
        """
        return check_batch(self.adapter.logits(images), images.shape[0])

    def from_outputs(self, out: torch.Tensor, reference: torch.Tensor | None = None,
                     where: Callable[[torch.Tensor], str] | None = None) -> torch.Tensor:
        """(B, R) outcome of (B, K, H, W) model outputs (or outputs already cut to the box).

        Parameters
        ----------
        out : Tensor (B, K, H, W) or (B, K, h, w)
            Model outputs on the image's grid, or already cut to :attr:`Call.box`.
        reference : Tensor (H, W), optional
            Replaces the call's reference mask for this evaluation.
        where : callable(bad rows) -> str, optional
            Names the perturbations of the rows whose output is NaN or Inf, for the error.
        """
        if where is not None or not bool(torch.isfinite(out).all()):
            check_finite(out, where)
        if tuple(out.shape[2:]) == tuple(self.call.image.shape[1:]):
            out = self.call.crop(out)
        elif tuple(out.shape[2:]) != self.call.box_shape:
            raise ValueError(f"outputs of shape {tuple(out.shape)} are neither the image's size nor the RoI box's")
        ref = self.call.crop(self.reference if reference is None else reference)
        prediction = self.adapter.prediction(out.float(), self.call.outcome.needs)
        return self.call.outcome(prediction, ref, self.roi_crop)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, R) outcome of a batch of (B, C, H, W) images."""
        return self.from_outputs(self.outputs(images))


@contextlib.contextmanager
def gradients(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The explanation context of :func:`evaluation` (eval mode, device, restored afterwards),
    with autograd switched back on for the gradient-based baselines.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model.
    device : torch.device
        Where to run.
    """
    with evaluation(model, device), torch.inference_mode(False), torch.enable_grad():
        yield


def replacement_image(name: str, image: torch.Tensor, block: int, *, bank: PatchBank | None, seed: int) -> torch.Tensor:
    """The image with *every* block replaced by intervention `name` (draw 0 of the natural table).

    Deletion/insertion steps and the masked inputs of MiSuRe and RISE mix the image with this one,
    so every method is scored with the same content the project's interventions put in a block.

    Parameters
    ----------
    name : {"natural", "zero", "mean", "blur"}
        The intervention (:mod:`pdcr_lab.interventions`).
    image : Tensor (C, H, W)
        The image.
    block : int
        Block side; must tile the image.
    bank : PatchBank, optional
        Natural blocks (``natural``; the mean colour for ``mean``).
    seed : int
        Seed of the natural draws.

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.call import replacement_image
    >>> replacement_image("zero", torch.ones(1, 8, 8), 4, bank=None, seed=0).abs().sum().item()
    0.0
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
    """(..., H, W) pixel map -> (..., H/b, W/b) mean over each b x b block.

    Parameters
    ----------
    pixels : Tensor or array (..., H, W)
        A pixel map.
    block : int
        Block side b; must tile H and W.

    Examples
    --------
    >>> import numpy as np
    >>> from pdcr_lab.call import block_means
    >>> block_means(np.arange(16.0).reshape(4, 4), 2)
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    values = torch.as_tensor(pixels, dtype=torch.float64)
    return block_grid(values.unsqueeze(-3), block).mean(dim=(-1, -2, -3)).numpy()


def result(
    call: Call,
    blocks: Mapping[str, np.ndarray],
    *,
    m0: torch.Tensor | np.ndarray,
    forwards: int,
    attrs: Mapping[str, Any],
    pixel_maps: Mapping[str, np.ndarray] | None = None,
    scalars: Mapping[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """Finish an explainer's result into the effects schema (:mod:`pdcr_lab.schema`), validated.

    Parameters
    ----------
    call : Call
        The prepared call (RoIs, boxes, whether several RoIs were given).
    blocks : mapping name -> array (R, Gy, Gx)
        The per-block variables (``ate``, ``ate_raw``, ``stderr``, ...), one map per RoI.
    m0 : array (R,)
        The factual outcome per RoI.
    forwards : int
        Forward passes spent.
    attrs : mapping
        The result's attrs (start from :meth:`Call.attrs`).
    pixel_maps : mapping name -> array (R, H, W), optional
        Extra variables on the pixel grid (y, x).
    scalars : mapping name -> array (R,), optional
        Extra per-RoI variables.

    Returns
    -------
    xarray.Dataset
        With a ``roi`` dim when several RoIs were given, without one otherwise.
    """
    m0 = m0.detach().double().cpu().numpy() if isinstance(m0, torch.Tensor) else np.asarray(m0, dtype=np.float64)
    ds = effects_dataset(dict(blocks), m0=m0, forwards=forwards, roi_mask=call.rois.numpy(), roi_box=call.boxes,
                         attrs=dict(attrs), roi_labels=list(range(len(call.rois))))
    ds["m0"].attrs["units"] = call.outcome.units
    if call.warnings:  # the map is meaningless as it stands: say so wherever it is shown
        ds.attrs[NOTE_ATTR] = " ".join(dict.fromkeys(call.warnings))
    for name, values in (pixel_maps or {}).items():
        ds[name] = (("roi", "y", "x"), np.asarray(values))
    for name, values in (scalars or {}).items():
        ds[name] = (("roi",), np.asarray(values))
    if not call.multi:  # one RoI given: no roi dim
        ds = ds.isel(roi=0, drop=True)
    return validate(ds)


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
    """Finish a map-type explainer's result (one value per block, no draws) into the effects schema.

    Parameters
    ----------
    call : Call
        The prepared call.
    method : str
        Recorded as ``attrs["method"]``.
    block_map : array (R, Gy, Gx)
        The method's map on the block grid (its own units and sign); RoI blocks are zeroed in
        ``ate`` (they are never perturbed) and kept in ``ate_raw``.
    m0 : Tensor (R,)
        The factual outcome per RoI.
    forwards : int
        Forward passes spent.
    support_sign : {-1, +1}
        -1 when negative values mean "supports the RoI" (PdCR's convention), +1 when positive do.
        The faithfulness metrics rank blocks by ``support_sign * ate``, most supportive first.
    units : str
        Units of the map (``attrs["units"]``; the outcome's units go to ``attrs["outcome_units"]``).
    pixel_maps : name -> (R, H, W) arrays, optional
        Extra variables on the pixel grid (y, x).
    scalars : name -> (R,) arrays, optional
        Extra per-RoI variables.
    attrs : mapping, optional
        The method's own settings.
    """
    roi_blocks = call.roi_blocks
    block_map = np.asarray(block_map, dtype=np.float64)
    blocks = {
        "ate": np.where(roi_blocks, 0.0, block_map),
        "ate_raw": block_map,
        "stderr": np.zeros_like(block_map),
        "n_draws": np.zeros(block_map.shape, dtype=np.int32),
        "screened": np.zeros(block_map.shape, dtype=bool),
        "roi_block": roi_blocks,
    }
    info = {**call.attrs(method), "units": units, "outcome_units": call.outcome.units,
            "support_sign": int(support_sign), **(attrs or {})}
    return result(call, blocks, m0=m0, forwards=forwards, attrs=info, pixel_maps=pixel_maps, scalars=scalars)


SHARED_PARAMETERS = """\
    seed : int
        Seed of every random choice; recorded in the result.
    device : str or torch.device, optional
        Where to run (default: the model's device); the model is moved back afterwards.
    **reading
        The options shared with :func:`pdcr_lab.explain` (defaults in ``READING``):
    block : int

        Block side b of the result's grid (the same grid as PdCR); must tile the image.
    outcome : {"dice", "soft_dice", "iou", "probability"} or Outcome
        The RoI state M recorded as ``m0`` (and measured by the perturbation methods), as in PdCR.
    threshold, class_index, output_key, activation, normalize
        How the model is read (:class:`pdcr_lab.adapters.ModelAdapter`), as in PdCR.
    value_range : (low, high), optional
        Values of the image (and bank) that map to 0 and 1, as in PdCR."""


def shared_doc(func: Any) -> Any:
    """Insert the parameters every explainer shares into `func`'s docstring at ``{shared}``.

    Parameters
    ----------
    func : callable
        An explainer whose docstring holds the ``{shared}`` placeholder.
    """
    func.__doc__ = func.__doc__.replace("    {shared}", SHARED_PARAMETERS)
    return func
