"""Exact incremental inference: recompute only what a perturbed block changes inside the RoI's cone.

Replacing one block of the image changes only the activations in the block's *forward cone*, and
the outcome in the RoI depends only on the activations in the RoI's *backward cone*. For a network
built from spatially local operations (convolutions, pooling, up-sampling, eval-mode BatchNorm,
pointwise ops, add, concat, per-position LayerNorm) every layer's output therefore needs to be
recomputed only on the intersection of the two cones, with the factual image's activations
(computed once per explanation) everywhere else. This is the idea of Krypton (Nakandala, Kumar and
Papakonstantinou, SIGMOD 2019) for occlusion on classification CNNs, here for segmentation RoIs and
natural-block interventions.

How it works:

1. :func:`plan` traces the model once with :func:`torch.fx.experimental.proxy_tensor.make_fx`
   (functionalised ATen ops, shapes of this image) and runs the factual image through the trace,
   keeping every activation.
2. Each op gets a per-axis *rule* derived from its kernel, stride, padding and dilation (or scale
   factor, or pad widths): which outputs a changed input interval can reach (forward), which
   inputs an output interval needs (backward), and which input crop computes an output window.
   An op that is not known to be local (GroupNorm/InstanceNorm statistics over space, attention,
   global pooling, reshapes that merge the spatial axes, circular shifts, pooling indices...) makes
   the model ineligible, with the op and the reason (:class:`Ineligible`).
3. For every block the forward cone (a rectangle per layer) is intersected with the RoI's backward
   cone; each layer gets one window size (the largest intersection over the blocks) so that the
   windows of many blocks and draws batch together, shifted to stay inside the layer.
4. A batch of (block, replacement) jobs then runs layer by layer on the windows: each op's input
   crop is gathered from the factual activation with the already recomputed window pasted in
   (out-of-image positions get the op's own padding: zeros, -inf for max-pooling, edge values for
   replicate padding and bilinear up-sampling), and the op runs on the crop with no padding.

The values inside each layer's intersection are those of a full forward pass (up to float
rounding, since a convolution on a crop may sum in another order), so the map is the full-forward
map. :func:`plan` also checks this on a few blocks against full forward passes before it is used.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._analysis import Ineligible, _Analysis
from ._plan import IncrementalPlan, _factual, _trace

__all__ = ["Ineligible", "IncrementalPlan", "plan", "eligibility", "traced", "known_ineligible", "nonlocal_module",
           "NONLOCAL_MODULES"]

# Why a model (with these weights, at this input shape) cannot run incrementally: later images skip the trace.
_INELIGIBLE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()
_TRACES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((id(t), t._version) for t in [*model.parameters(), *model.buffers()])


def _cached(model: nn.Module, image: torch.Tensor, key: tuple) -> tuple | None:
    full_key = (key, tuple(image.shape), image.dtype, str(image.device), _fingerprint(model))
    hit = _TRACES.get(model, {}).get(full_key)
    return hit[1:] if hit is not None and torch.equal(hit[0], image) else None


def traced(model: nn.Module, image: torch.Tensor, key: tuple = ()) -> bool:
    """Whether this process already traced `model` (with these weights) on `image` under `key`.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    image : Tensor (C, H, W)
        The factual image.
    key : tuple
        The key :func:`plan` was called with.
    """
    return _cached(model, image, key) is not None


#: Module types whose output depends on the whole image: a model that contains one is not traced by
#: ``incremental="auto"`` (the trace would find the op; this saves the trace's second).
NONLOCAL_MODULES: tuple[tuple[type, str], ...] = (
    (nn.modules.instancenorm._InstanceNorm, "InstanceNorm normalises over the whole image"),
    (nn.GroupNorm, "GroupNorm normalises over the whole image"),
    (nn.MultiheadAttention, "attention mixes all positions"),
    (nn.modules.pooling._AdaptiveAvgPoolNd, "adaptive (global) pooling"),
    (nn.modules.pooling._AdaptiveMaxPoolNd, "adaptive (global) pooling"),
    (nn.modules.pooling._MaxUnpoolNd, "max-unpooling places values by pooling indices"),
    (nn.PixelShuffle, "pixel shuffle moves channels into space"),
)


def nonlocal_module(model: nn.Module) -> str | None:
    """The first submodule of a type in :data:`NONLOCAL_MODULES`, as a reason, or None.

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Examples
    --------
    >>> from torch import nn
    >>> from pdcr_lab.incremental import nonlocal_module
    >>> nonlocal_module(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)))
    'module 1 (GroupNorm): GroupNorm normalises over the whole image'
    >>> nonlocal_module(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))) is None
    True
    """
    for name, module in model.named_modules():
        for kind, why in NONLOCAL_MODULES:
            if isinstance(module, kind):
                return f"module {name or '(root)'} ({type(module).__name__}): {why}"
    return None


def known_ineligible(model: nn.Module, image: torch.Tensor, key: tuple = ()) -> str | None:
    """Why `model` was found ineligible at this input shape in this process (None if not known to be).

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    image : Tensor (C, H, W)
        An image of the shape to explain (its values do not matter).
    key : tuple
        The key :func:`plan` was called with.
    """
    full_key = (key, tuple(image.shape), image.dtype, str(image.device), _fingerprint(model))
    return _INELIGIBLE.get(model, {}).get(full_key)


def _analysed(model: nn.Module, fn: Callable, image: torch.Tensor, key: tuple) -> tuple:
    """Trace, factual activations and analysis of `fn` on `image`, cached per model and weights."""
    hit = _cached(model, image, key)
    if hit is not None:
        return hit
    cache = _TRACES.setdefault(model, {})
    full_key = (key, tuple(image.shape), image.dtype, str(image.device), _fingerprint(model))
    known = _INELIGIBLE.get(model, {}).get(full_key)
    if known is not None:  # which ops a model runs does not depend on the image's values
        return None, None, None, known
    cache.clear()  # one image per model: the factual activations are large
    example = image.unsqueeze(0)
    try:
        gm = _trace(fn, example)
        values = _factual(gm, example)
        info = _Analysis(gm, values).run()
        entry = (gm, values, info, None)
    except Ineligible as exc:
        entry = (None, None, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - an op this analysis does not understand: full forwards, said so
        entry = (None, None, None, f"the trace could not be analysed ({type(exc).__name__}: {exc})")
    cache[full_key] = (image.clone(), *entry)
    if entry[3] is not None:
        _INELIGIBLE.setdefault(model, {})[full_key] = entry[3]
    return entry


def eligibility(model: nn.Module, image: torch.Tensor, fn: Callable | None = None) -> tuple[bool, str]:
    """Whether `model` can run incrementally on images of this shape, and why (not).

    Parameters
    ----------
    model : torch.nn.Module
        The model (in eval mode).
    image : Tensor (C, H, W)
        An image of the shape to explain.
    fn : callable, optional
        What to trace instead of ``model`` itself (e.g. the adapter's normalise-run-select).

    Examples
    --------
    >>> import torch
    >>> from pdcr_lab.incremental import eligibility
    >>> conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    >>> eligibility(conv.eval(), torch.rand(1, 16, 16))
    (True, 'eligible: 3 image-dependent ops, all spatially local')
    >>> norm = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.GroupNorm(2, 4))
    >>> eligibility(norm.eval(), torch.rand(1, 16, 16))[1]
    'native_group_norm (node native_group_norm): GroupNorm normalises over the whole image'
    """
    with torch.no_grad():
        gm, values, info, reason = _analysed(model, fn or model, image, ("eligibility",))
    if reason is not None:
        return False, reason
    return True, f"eligible: {len(info) - 1} image-dependent ops, all spatially local"


def plan(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *,
         box: tuple[int, int, int, int], block: int, key: tuple = ()) -> IncrementalPlan:
    """The incremental plan of `fn` (usually ``model`` behind its adapter) for one image, box and block.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose parameters `fn` uses (the cache key: a changed weight re-traces).
    fn : callable (1, C, H, W) -> (1, K, H, W)
        The function whose output is cropped to `box`.
    image : Tensor (C, H, W)
        The factual image, on the device the model runs on.
    box : (y0, y1, x0, x1)
        The output rows and columns the outcome reads.
    block : int
        Block side; the blocks tile the image.
    key : tuple
        Extra cache key (e.g. the adapter's settings).

    Raises
    ------
    Ineligible
        When an op is not spatially local (the message names it and says why).
    """
    with torch.no_grad():
        gm, values, info, reason = _analysed(model, fn, image, key)
        if reason is not None:
            raise Ineligible(reason)
        grid = (image.shape[1] // block, image.shape[2] // block)
        return IncrementalPlan(gm, values, info, box, block, grid, image.device)
