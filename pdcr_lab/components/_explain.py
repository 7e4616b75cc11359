"""PdCR on network components: :func:`explain_components`.

A treatment do(A_l := a') replaces the output A_l of module l during the forward pass of the image
being explained (docs/method.md section 8). Forward hooks do the replacement, so the model's code is
not touched: for each row of a batch the hook swaps in that row's replacement, so many
(unit, draw) treatments of several layers run in one forward pass. The replacement is the same
module's activation on a donor image (``natural``: the donors are images of the dataset that are
not being explained; draw d of unit u uses donor ``draw_table(seed, units, S + N, donors)[u, d]``),
zero, or the donors' mean activation. Donor activations are computed once per call, in batched
forward passes that record every requested layer, and kept on the device.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..checks import as_tensor, check_choice, check_float, check_int, describe
from ..adapters import Activation, ModelAdapter
from ..defaults import PAPER, ComponentUnit, check_literal, choices
from ..call import Call, RoiOutcome, to_unit_range, auto_batch_size, evaluation, prepare, reporting, result
from ..rois import Roi
from ..estimator import screened_ate
from ..interventions import draw_table
from ..outcomes import Outcome
from ..schema import GRID_DIMS, validate
from ._discover import find_components
from ._hooks import describe_output, hooked, rebuild, tensor_leaves

__all__ = ["explain_components", "UNITS", "COMPONENT_INTERVENTIONS"]

UNITS: tuple[str, ...] = choices(ComponentUnit)
COMPONENT_INTERVENTIONS: tuple[str, ...] = ("natural", "zero", "mean")
Groups = int | Sequence[Sequence[int]] | Mapping[str, int | Sequence[Sequence[int]]]


@dataclass
class _Layer:
    """One hooked layer: its factual outputs, the replacement sources and the unit masks, per call."""

    path: str
    factual: list[list[torch.Tensor]]  # [call][leaf] (1, ...) activations of the explained image
    described: str  # the output's per-sample shape, for messages and the result
    sources: list[list[torch.Tensor | None]] = field(default_factory=list)  # (N,...) donors, (1,...) mean, None zero
    masks: list[list[torch.Tensor | None]] = field(default_factory=list)  # (units, broadcastable...) or None
    groups: list[list[int]] | None = None  # channel groups (unit="channels")


class _Surgery:
    """The hook state: record the outputs of every layer, or replace planned rows of them."""

    def __init__(self, paths: Sequence[str], natural: bool) -> None:
        self.paths = list(paths)
        self.natural = natural
        self.layers: list[_Layer] = []
        self.calls = [0] * len(paths)
        self.record: list[list[tuple[str, list[torch.Tensor]]]] | None = None
        self.plan: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self.batch = 0

    def run(self, forward: Callable[[], Any], batch: int, *, record: bool = False, plan: dict | None = None) -> tuple[Any, Any]:
        self.calls = [0] * len(self.paths)
        self.record = [[] for _ in self.paths] if record else None
        self.plan, self.batch = plan or {}, batch
        try:
            return forward(), self.record
        finally:
            self.record, self.plan = None, {}

    def hook(self, index: int, output: Any) -> Any:
        call = self.calls[index]
        self.calls[index] += 1
        if self.record is not None:
            leaves = [t.detach().clone() for t in tensor_leaves(output)]  # clone: later in-place ops
            self.record[index].append((describe_output(output), leaves))
            return None
        if index not in self.plan:
            return None
        layer = self.layers[index]
        if call >= len(layer.masks):
            raise ValueError(
                f"layer {layer.path!r} ran {call + 1} times in a perturbed forward pass but only "
                f"{len(layer.masks)} times on the explained image; its calls must not depend on the input"
            )
        leaves = [self._treat(layer, call, i, leaf, self.plan[index]) for i, leaf in enumerate(tensor_leaves(output))]
        return rebuild(output, iter(leaves))

    def _treat(self, layer: _Layer, call: int, i: int, leaf: torch.Tensor, plan: tuple) -> torch.Tensor:
        rows, slots, donors = plan
        if leaf.ndim == 0 or leaf.shape[0] != self.batch:
            raise ValueError(f"layer {layer.path!r} output of shape {tuple(leaf.shape)} is not batch-major")
        current = leaf[rows]
        source = layer.sources[call][i]
        if source is None:
            value = torch.zeros((), dtype=leaf.dtype, device=leaf.device)
        else:
            value = source[donors] if self.natural else source
        mask = layer.masks[call][i]
        value = torch.where(mask[slots], value, current) if mask is not None else value.expand_as(current)
        out = leaf.clone()
        out[rows] = value.to(leaf.dtype)
        return out


def _channel_groups(groups: Groups, path: str, channels: int) -> list[list[int]]:
    spec = groups
    if isinstance(groups, Mapping):
        if path not in groups:
            raise ValueError(f"groups has no entry for layer {path!r}; it names {list(groups)}")
        spec = groups[path]
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        count = check_int("groups", spec, minimum=1)
        if count > channels:
            raise ValueError(f"groups={count} is more than the {channels} channels of layer {path!r}")
        return [part.tolist() for part in np.array_split(np.arange(channels), count)]
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        raise TypeError(f"groups must be an int, a list of channel lists or a dict of them, got {describe(spec)}")
    out = []
    for g, members in enumerate(spec):
        members = [int(m) for m in np.atleast_1d(np.asarray(members, dtype=np.int64))]
        if not members:
            raise ValueError(f"groups[{g}] for layer {path!r} is empty")
        bad = [m for m in members if not 0 <= m < channels]
        if bad:
            raise ValueError(
                f"groups[{g}] holds channel {bad[0]}, out of range for layer {path!r} with {channels} channels (0..{channels - 1})"
            )
        out.append(members)
    return out


def _channel_mask(groups: list[list[int]], leaf: torch.Tensor, path: str) -> torch.Tensor:
    """(G, ...) masks selecting each group's channels: dim 1 of (B, C, h, w), (B, C, d, h, w) and (B, C),
    last of (B, L, C)."""
    if leaf.ndim not in (2, 3, 4, 5):
        raise ValueError(f"unit='channels' needs (B, C), (B, L, C), (B, C, h, w) or (B, C, d, h, w) outputs; layer "
                         f"{path!r} gives {describe(leaf)}")
    channels = leaf.shape[-1] if leaf.ndim == 3 else leaf.shape[1]
    mask = torch.zeros(len(groups), channels, dtype=torch.bool)
    for g, members in enumerate(groups):
        mask[g, members] = True
    shape = (len(groups), 1, channels) if leaf.ndim == 3 else (len(groups), channels, *([1] * (leaf.ndim - 2)))
    return mask.reshape(shape)


def _span(index: int, block: int, size: int, image_size: int) -> tuple[int, int]:
    """Feature rows [start, stop) whose footprint overlaps input rows [index*b, (index+1)*b)."""
    start = min(index * block * size // image_size, size - 1)
    stop = -(-(index + 1) * block * size // image_size)
    return start, max(stop, start + 1)


def _cell_mask(leaf: torch.Tensor, block: int, image_hw: tuple[int, int], path: str) -> torch.Tensor:
    """(Gy*Gx, 1, h, w) masks: the feature cells under each input block, at this output's stride."""
    if leaf.ndim != 4:
        raise ValueError(f"unit='cells' needs (B, C, h, w) feature maps; layer {path!r} gives {describe(leaf)}")
    (h, w), (fh, fw) = image_hw, leaf.shape[-2:]
    rows = torch.zeros(h // block, fh, dtype=torch.bool)
    cols = torch.zeros(w // block, fw, dtype=torch.bool)
    for masks, size, image_size in ((rows, fh, h), (cols, fw, w)):
        for i in range(masks.shape[0]):
            masks[i, slice(*_span(i, block, size, image_size))] = True
    cells = rows[:, None, :, None] & cols[None, :, None, :]
    return cells.reshape(-1, 1, fh, fw)


def _resolve_layers(model: nn.Module, layers: Any, names: list[str], main: list[str]) -> list[str]:
    if layers is None:
        layers = main or names
        if not layers:
            raise ValueError("found no components in the model; name them with layers=[module paths]")
    paths = [layers] if isinstance(layers, str) else list(layers)
    if not paths:
        raise ValueError(f"layers is empty; name module paths, e.g. from the model's components {names}")
    modules = dict(model.named_modules())
    for path in paths:
        if not isinstance(path, str) or path not in modules:
            raise ValueError(f"layers: {path!r} is not a module of the model; its components are {names}")
    if len(set(paths)) != len(paths):
        raise ValueError(f"layers has duplicates: {paths}")
    return paths


def _check_layer(path: str, calls: list[tuple[str, list[torch.Tensor]]], unit: str, names: list[str]) -> None:
    if not calls:
        raise ValueError(
            f"layer {path!r} did not run in the model's forward pass (containers such as nn.ModuleList are "
            f"never called themselves: name their elements); components that run: {names}"
        )
    for described, leaves in calls:
        if not leaves:
            raise TypeError(
                f"layer {path!r} returns {described}, which holds no tensor; component effects replace a "
                "module's tensor output (a tensor, or a tuple / list / dict of tensors)"
            )
        bad = [t for t in leaves if t.ndim == 0 or t.shape[0] != 1]
        if bad:
            raise ValueError(
                f"layer {path!r} returns {describe(bad[0])} for one image: its first dim is not the batch, "
                "so a treatment cannot replace one image's activation; name a module with a batch-major output"
            )
        if unit == "channels" and len(leaves) != 1:
            raise TypeError(
                f"unit='channels' needs a layer that returns one tensor; layer {path!r} returns {described}. "
                "Use unit='module' (it replaces every tensor of the output) or name the submodule of one branch"
            )


def _prepare_layers(
    surgery: _Surgery, record: list, *, unit: str, groups: Groups, block: int, image_hw: tuple[int, int],
    device: torch.device, names: list[str],
) -> int:
    """Check the recorded factual outputs, build every layer's unit masks; returns the units per layer."""
    for path, calls in zip(surgery.paths, record):
        _check_layer(path, calls, unit, names)
        surgery.layers.append(_Layer(path, [leaves for _, leaves in calls], calls[0][0]))
    for layer in surgery.layers:
        if unit == "channels":
            leaf = layer.factual[0][0]
            layer.groups = _channel_groups(groups, layer.path, leaf.shape[-1] if leaf.ndim == 3 else leaf.shape[1])
            layer.masks = [[_channel_mask(layer.groups, t, layer.path).to(device) for t in leaves] for leaves in layer.factual]
        elif unit == "cells":
            layer.masks = [[_cell_mask(t, block, image_hw, layer.path).to(device) for t in leaves] for leaves in layer.factual]
        else:
            layer.masks = [[None] * len(leaves) for leaves in layer.factual]
    if unit == "cells":
        return (image_hw[0] // block) * (image_hw[1] // block)
    counts = {layer.path: len(layer.groups) for layer in surgery.layers if layer.groups is not None}
    if len(set(counts.values())) > 1:
        raise ValueError(f"every layer must get the same number of channel groups (they share the unit dim), got {counts}")
    return next(iter(counts.values()), 1)


def _donor_activations(
    surgery: _Surgery, adapter: ModelAdapter, donors: torch.Tensor, size: int, device: torch.device
) -> list[list[list[torch.Tensor]]]:
    """[layer][call][leaf] activations of all donors, recorded in batched forward passes."""
    parts: list[list[list[list[torch.Tensor]]]] = [[] for _ in surgery.layers]  # [layer][chunk][call][leaf]
    for start in range(0, donors.shape[0], size):
        chunk = donors[start : start + size].to(device)
        _, record = surgery.run(lambda: adapter.logits(chunk), chunk.shape[0], record=True)
        for layer, calls, part in zip(surgery.layers, record, parts):
            expected = [[(chunk.shape[0], *t.shape[1:]) for t in leaves] for leaves in layer.factual]
            if [[tuple(t.shape) for t in leaves] for _, leaves in calls] != expected:
                raise ValueError(
                    f"layer {layer.path!r} gives the donors activations of another structure or shape than the "
                    f"explained image's {layer.described}; donors must be images like the explained one"
                )
            part.append([leaves for _, leaves in calls])
    return [
        [[torch.cat([chunk[c][i] for chunk in part]) for i in range(len(leaves))] for c, leaves in enumerate(layer.factual)]
        for layer, part in zip(surgery.layers, parts)
    ]


def _donors(donors: Any, intervention: str, image: torch.Tensor, value_range: Any) -> torch.Tensor | None:
    if intervention == "zero":
        return None
    if donors is None:
        raise ValueError(
            f"intervention={intervention!r} needs donors=(N, C, H, W) images of the dataset that are not being "
            "explained, e.g. pdcr_lab.datasets.load('lesions').images('train')[:32]"
        )
    tensor = as_tensor("donors", donors)
    if tensor.ndim != image.ndim + 1 or tuple(tensor.shape[1:]) != tuple(image.shape) or tensor.shape[0] < 1:
        raise ValueError(f"donors must have shape (N, {', '.join(map(str, image.shape))}) like the image, got {describe(donors)}")
    return to_unit_range("donors", donors, value_range)[0]  # the image's scale, checked the same way


def explain_components(
    model: nn.Module,
    image: Any,
    *,
    roi: Roi,
    target: Any = None,
    layers: str | Sequence[str] | None = None,
    unit: ComponentUnit = "module",
    intervention: str = "natural",
    donors: Any = None,
    groups: Groups = 4,
    block: int = PAPER.block,
    coarse: int = PAPER.coarse,
    fine: int = PAPER.fine,
    tau: float = PAPER.tau,
    seed: int = 0,
    outcome: str | Outcome = "dice",
    threshold: float = PAPER.threshold,
    class_index: int | None = None,
    output_key: str | int | None = None,
    activation: Activation = "auto",
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    value_range: tuple[float, float] | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> xr.Dataset:
    """PdCR effects of network components (layers, channel groups, feature cells) on an RoI.

    ATE(l) = E_a'[ M(f(X) with A_l := a') ] - M(f(X)), estimated with the paper's coarse-to-fine
    screening (docs/method.md sections 3 and 8). Same sign convention as :func:`pdcr_lab.explain`:
    negative = the factual activation supports the RoI's segmentation.

    Parameters
    ----------
    model : torch.nn.Module
        As in :func:`pdcr_lab.explain`; put in eval mode for the call and restored afterwards.
    image : Tensor or array (C, H, W), or a volume (C, D, H, W) for a 3-D model
        Float pixel values in [0, 1]. Volumes take ``unit="module"`` or ``"channels"``.
    roi, target
        As in :func:`pdcr_lab.explain`.
    layers : str or list of str, optional
        Module paths (``model.get_submodule`` names). None: the main components of
        :func:`pdcr_lab.components.find_components` (declared ``stages()`` when the model has them).
    unit : {"module", "channels", "cells"}
        What one treatment replaces: the whole output of a layer; one channel group of it; or the
        feature cells under one input b x b block (the rows/columns of the feature map whose
        footprint overlaps the block at that layer's stride; at strides above b, neighbouring
        blocks share feature cells). Cells under the RoI's blocks are never perturbed, as in
        :func:`pdcr_lab.explain`.
    intervention : {"natural", "zero", "mean"}
        ``natural``: the layer's activation on a donor image (stochastic, S + N draws);
        ``zero``: zeros; ``mean``: the donors' mean activation (one forward per unit each).
    donors : Tensor (N, C, H, W), optional
        Images of the same dataset that are not being explained (required for natural / mean),
        e.g. ``pdcr_lab.datasets.load("lesions").images("train")[:32]``.
    groups : int, list of channel lists, or dict layer -> either
        Channel groups of ``unit="channels"``: k contiguous near-equal groups, or explicit lists.
        Every layer must get the same number of groups (they share the ``unit`` dim).
    block : int
        Input block side of ``unit="cells"`` (must tile the image); recorded otherwise.
    coarse, fine, tau, outcome, threshold, class_index, seed, device, batch_size, progress
        As in :func:`pdcr_lab.explain`.
    output_key, activation, normalize
        How to read the model (:class:`pdcr_lab.adapters.ModelAdapter`).
    value_range : (low, high), optional
        Values of the image and the donors that map to 0 and 1, as in :func:`pdcr_lab.explain`.

    Returns
    -------
    xarray.Dataset
        The effects schema with a ``layer`` dim (coords ``layer_role``, ``layer_output``): ``ate``
        over (layer,) for modules, (layer, unit) for channel groups, (layer, block_y, block_x) for
        cells (then with ``roi_block``); ``attrs["method"] == "pdcr_components"``.

    Notes
    -----
    Outputs that are tuples, lists or dicts of tensors: ``unit="module"`` replaces every tensor in
    them by the donor's (HRNet's list of branches is replaced as a whole), ``"cells"`` replaces the
    cells of every (B, C, h, w) tensor at its own stride, ``"channels"`` is refused (which tensor's
    channels would be ambiguous). Outputs without tensors, or whose first dim is not the batch
    (window-partitioned tokens), are refused. A module called several times in one forward pass has
    every call replaced, call k by the donor's call k.
    ``forwards`` counts the factual pass, one pass per donor image and every treatment.

    Examples
    --------
    >>> import torch, pdcr_lab
    >>> from pdcr_lab.components import explain_components
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 1, 1), torch.nn.Sigmoid())
    >>> image = torch.rand(1, 16, 16)
    >>> ds = explain_components(net, image, roi=(4, 4, 8, 8), layers=["0", "1"], intervention="zero")
    >>> ds.ate.dims, ds.layer.values.tolist()
    (('layer',), ['0', '1'])
    """
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="explain_components",
                   tiled=unit == "cells", need_candidates=unit == "cells", volumes=unit != "cells", block=block,
                   outcome=outcome,
                   threshold=threshold, class_index=class_index, output_key=output_key, activation=activation,
                   normalize=normalize, value_range=value_range)
    unit = check_literal("unit", unit, ComponentUnit)
    intervention = check_choice("intervention", intervention, COMPONENT_INTERVENTIONS)
    coarse, fine = check_int("coarse", coarse, minimum=0), check_int("fine", fine, minimum=1)
    tau = check_float("tau", tau, minimum=0.0)
    size = None if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    donor_images = _donors(donors, intervention, call.image, value_range)
    components = find_components(model, call.image.unsqueeze(0))  # batched: a volume is not a batch of images
    names = [comp.path for comp in components]
    paths = _resolve_layers(model, layers, names, [comp.path for comp in components if comp.main])
    roles = {comp.path: comp.role for comp in components}
    surgery = _Surgery(paths, intervention == "natural")
    modules = [model.get_submodule(p) for p in paths]
    with reporting(progress) as callback, evaluation(model, call.device), hooked(modules, surgery.hook):
        est, state, slots = _estimate(surgery, call, unit=unit, groups=groups, donors=donor_images, size=size,
                                      coarse=coarse, fine=fine, tau=tau, names=names, callback=callback)
    n_donors = 0 if donor_images is None else donor_images.shape[0]
    attrs = {
        **call.attrs("pdcr_components"),
        "component_unit": unit,
        "intervention": intervention,
        "layers": json.dumps(paths),
        "groups": json.dumps({layer.path: layer.groups for layer in surgery.layers}) if unit == "channels" else "none",
        "coarse": coarse,
        "fine": fine,
        "tau": tau,
        "donors_id": "none" if donor_images is None else hashlib.sha1(donor_images.numpy().tobytes()).hexdigest()[:12],
        "donors_size": n_donors,
    }
    ds = _component_result(call, est, state.m0, 1 + n_donors + est.forwards, attrs, unit=unit, slots=slots, paths=paths)
    return validate(ds.assign_coords(
        layer=paths,
        layer_role=("layer", [roles.get(p, "module") for p in paths]),
        layer_output=("layer", [layer.described for layer in surgery.layers]),
    ))


def _estimate(surgery: _Surgery, call: Call, *, unit: str, groups: Groups, donors: torch.Tensor | None,
              size: int | None, coarse: int, fine: int, tau: float, names: list[str],
              callback: Callable[[int, int], None] | None) -> tuple[Any, RoiOutcome, int]:
    """Record the factual and donor activations, then run the screened estimator over every unit."""
    adapter, device = call.adapter, call.device
    image_dev = call.image.to(device)
    try:
        factual, record = surgery.run(lambda: adapter.logits(image_dev.unsqueeze(0)), 1, record=True)
    except RuntimeError as exc:
        raise call.model_failed(exc) from exc
    state = RoiOutcome(call, factual=factual)
    h, w = call.image.shape[-2:]
    slots = _prepare_layers(surgery, record, unit=unit, groups=groups, block=call.block, image_hw=(h, w),
                            device=device, names=names)
    size = size or auto_batch_size(call.shape, device)
    n_donors = 0 if donors is None else donors.shape[0]
    activations = None if donors is None else _donor_activations(surgery, adapter, donors, size, device)
    for index, layer in enumerate(surgery.layers):  # natural: every donor; mean: their mean; zero: None
        if activations is None:
            layer.sources = [[None] * len(leaves) for leaves in layer.factual]
        else:
            layer.sources = [[t if surgery.natural else t.mean(dim=0, keepdim=True) for t in leaves]
                             for leaves in activations[index]]
    n_units = len(surgery.paths) * slots
    table = (torch.from_numpy(draw_table(call.seed, n_units, coarse + fine, n_donors)).to(device)
             if surgery.natural else None)

    def evaluate(units: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        units, draws = units.to(device), draws.to(device)
        layer_of, slot = units // slots, units % slots
        donor = table[units, draws] if table is not None else None
        plan = {}
        for index in torch.unique(layer_of).tolist():
            rows = torch.nonzero(layer_of == index).flatten()
            plan[index] = (rows, slot[rows], None if donor is None else donor[rows])
        batch = image_dev.unsqueeze(0).expand(units.shape[0], *image_dev.shape).clone()
        out, _ = surgery.run(lambda: adapter.logits(batch), units.shape[0], plan=plan)
        return state.from_outputs(out)

    if unit == "cells":
        candidates = np.tile(call.candidates, (1, len(surgery.paths)))
    else:
        candidates = np.ones((len(call.rois), n_units), dtype=bool)
    est = screened_ate(evaluate, candidates, state.m0.double().cpu().numpy(), coarse=coarse, fine=fine, tau=tau,
                       stochastic=surgery.natural, batch_size=size, progress=callback)
    return est, state, slots


def _component_result(call: Call, est: Any, m0: torch.Tensor, forwards: int, attrs: dict[str, Any], *, unit: str,
                      slots: int, paths: list[str]) -> xr.Dataset:
    """The estimator's per-unit arrays under a ``layer`` dim, on top of the call layer's schema result."""
    n_rois = len(call.rois)
    grid = call.grid if unit == "cells" else (1,) * call.ndim  # a one-block grid the layer dims replace
    inner = {"module": (), "channels": ("unit",), "cells": GRID_DIMS}[unit]
    shape = (n_rois, len(paths), *({"module": (), "channels": (slots,), "cells": grid}[unit]))
    values = {name: getattr(est, name).reshape(shape) for name in ("ate", "ate_raw", "stderr", "n_draws", "screened")}
    placeholders = {k: np.zeros((n_rois, *grid), dtype=v.dtype) for k, v in values.items()}
    if unit == "cells":
        placeholders["roi_block"] = call.roi_blocks
    ds = result(call, placeholders, m0=m0, forwards=forwards, attrs=attrs)
    lead = ("roi",) if call.multi else ()
    for name, array in values.items():
        ds[name] = ((*lead, "layer", *inner), array if call.multi else array[0], ds[name].attrs)
    if unit != "cells":
        ds = ds.drop_vars(["block_z", "block_y", "block_x", "z_start", "y_start", "x_start"], errors="ignore")
    if unit == "channels":
        ds = ds.assign_coords(unit=np.arange(slots))
    return ds
