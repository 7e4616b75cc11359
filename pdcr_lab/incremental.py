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

import math
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

__all__ = ["Ineligible", "IncrementalPlan", "plan", "eligibility", "traced"]

aten = torch.ops.aten


class Ineligible(Exception):
    """The model cannot run incrementally; ``str(exc)`` says which op and why."""


# ---------------------------------------------------------------------------------------------
# Per-axis rules. Intervals are half-open [lo, hi); vectorised over blocks as numpy int arrays.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Same:
    """Output position i depends on input position i only (pointwise, per-position ops)."""

    n_in: int

    def forward(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return lo, hi

    def backward(self, lo: int, hi: int) -> tuple[int, int]:
        return lo, hi

    def source(self, origin: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
        return origin, size

    def flops(self, size: int) -> int:
        return size


@dataclass(frozen=True)
class _Conv:
    """Convolution or pooling: output o reads inputs o*s - p + j*d for j in [0, k)."""

    k: int
    s: int
    p: int
    d: int
    n_in: int
    n_out: int

    @property
    def span(self) -> int:
        return self.d * (self.k - 1)

    def forward(self, lo, hi):
        out_lo = -((-(lo + self.p - self.span)) // self.s)  # ceil
        out_hi = (hi - 1 + self.p) // self.s + 1
        return np.clip(out_lo, 0, self.n_out), np.clip(out_hi, 0, self.n_out)

    def backward(self, lo, hi):
        return max(lo * self.s - self.p, 0), min((hi - 1) * self.s - self.p + self.span + 1, self.n_in)

    def source(self, origin, size):
        return origin * self.s - self.p, (size - 1) * self.s + self.span + 1

    def flops(self, size: int) -> int:
        return size * self.k


@dataclass(frozen=True)
class _ConvT:
    """Transposed convolution: input i writes outputs i*s - p + j*d for j in [0, k)."""

    k: int
    s: int
    p: int
    d: int
    n_in: int
    n_out: int

    @property
    def span(self) -> int:
        return self.d * (self.k - 1)

    def forward(self, lo, hi):
        return np.clip(lo * self.s - self.p, 0, self.n_out), np.clip((hi - 1) * self.s - self.p + self.span + 1, 0,
                                                                       self.n_out)

    def backward(self, lo, hi):
        first = -((-(lo + self.p - self.span)) // self.s)
        return max(first, 0), min((hi - 1 + self.p) // self.s + 1, self.n_in)

    def source(self, origin, size):
        # A fixed crop length for every window phase; extra inputs only reach outputs outside the window.
        first = -torch.div(-(origin + self.p - self.span), self.s, rounding_mode="floor")
        return first, -(-(size + self.span) // self.s) + 1

    def offset(self, origin: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Where the window starts in the crop's output."""
        return origin - (first * self.s - self.p)

    def flops(self, size: int) -> int:
        return size * self.k


@dataclass(frozen=True)
class _Shift:
    """Padding or cropping: output o is input o - before; `mode` says what the padding holds.

    None: a constant (or nothing: cropping); "edge": the border value (replicate padding);
    "reflect": the mirror image without the border (reflection padding).
    """

    before: int
    n_in: int
    n_out: int
    mode: str | None

    def forward(self, lo, hi):
        out_lo, out_hi = lo + self.before, hi + self.before
        if self.mode == "edge":  # a changed border value is copied into the padding
            out_lo = np.where(lo == 0, 0, out_lo)
            out_hi = np.where(hi == self.n_in, self.n_out, out_hi)
        elif self.mode == "reflect":  # input i also appears at before - i and before + 2 (n - 1) - i
            out_lo = np.where(lo <= self.before, np.minimum(out_lo, self.before - np.minimum(hi - 1, self.before)), out_lo)
            last = self.n_in - 1
            far = self.n_out - self.before - self.n_in  # padding after
            out_hi = np.where(hi - 1 >= last - far,
                              np.maximum(out_hi, self.before + 2 * last - np.maximum(lo, last - far) + 1), out_hi)
        return np.clip(out_lo, 0, self.n_out), np.clip(out_hi, 0, self.n_out)

    def backward(self, lo, hi):
        a, b = lo - self.before, hi - self.before
        if self.mode in ("edge", "reflect"):
            index = _source_index(np.arange(a, b), self.n_in, self.mode)
            return int(index.min()), int(index.max()) + 1
        return max(a, 0), min(b, self.n_in)

    def source(self, origin, size):
        return origin - self.before, size

    def flops(self, size: int) -> int:
        return size


def _source_index(index: Any, n: int, mode: str | None) -> Any:
    """Where padding `mode` reads position `index` of an axis of length n (clamped for None)."""
    if mode == "reflect" and n > 1:
        period = 2 * (n - 1)
        index = index % period
        return np.minimum(index, period - index) if isinstance(index, np.ndarray) else torch.minimum(index, period - index)
    return index.clip(0, n - 1)


@dataclass(frozen=True)
class _Up:
    """Up-sampling by an integer factor f (nearest, or bilinear without align_corners)."""

    f: int
    bilinear: bool
    n_in: int
    n_out: int

    @property
    def margin(self) -> int:
        return 1 if self.bilinear else 0

    def forward(self, lo, hi):
        m = self.margin
        return np.clip((lo - m) * self.f, 0, self.n_out), np.clip((hi + m) * self.f, 0, self.n_out)

    def backward(self, lo, hi):
        m = self.margin
        return max(lo // self.f - m, 0), min((hi - 1) // self.f + 1 + m, self.n_in)

    def source(self, origin, size):
        m = self.margin
        return torch.div(origin, self.f, rounding_mode="floor") - m, -(-size // self.f) + 1 + 2 * m

    def offset(self, origin: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        return origin - first * self.f

    def flops(self, size: int) -> int:
        return size


Rule = _Same | _Conv | _ConvT | _Shift | _Up


# ---------------------------------------------------------------------------------------------
# Graph analysis
# ---------------------------------------------------------------------------------------------

_POINTWISE_EXTRA = {
    aten.clone.default, aten.alias.default, aten.detach.default,
    aten._to_copy.default, aten.lift_fresh_copy.default, aten.hardtanh.default, aten.where.self,
    aten.masked_fill.Scalar, aten.masked_fill.Tensor,
}
_GLOBAL_REASONS = {
    "native_group_norm": "GroupNorm normalises over the whole image",
    "native_batch_norm": "normalisation statistics over the whole image (InstanceNorm, or BatchNorm in train mode)",
    "_native_batch_norm_legit": "normalisation statistics over the whole image (InstanceNorm, or BatchNorm in train mode)",
    "instance_norm": "InstanceNorm normalises over the whole image",
    "mm": "a matrix product over tokens (attention or a token MLP) mixes all positions",
    "bmm": "a matrix product over tokens (attention) mixes all positions",
    "addmm": "a matrix product over tokens mixes all positions",
    "roll": "a circular shift wraps around the image",
    "max_unpool2d": "max-unpooling places values by pooling indices",
    "_adaptive_avg_pool2d": "adaptive (global) pooling",
    "adaptive_max_pool2d": "adaptive (global) pooling",
    "_scaled_dot_product_flash_attention_for_cpu": "attention mixes all positions",
    "_scaled_dot_product_efficient_attention": "attention mixes all positions",
    "_scaled_dot_product_flash_attention": "attention mixes all positions",
    "pixel_shuffle": "pixel shuffle moves channels into space",
    "pixel_unshuffle": "pixel unshuffle moves space into channels",
    "grid_sampler_2d": "grid sampling reads arbitrary positions",
    "index": "indexing by a tensor reads arbitrary positions",
    "gather": "gather reads arbitrary positions",
}


def _name(target: Any) -> str:
    """The ATen op's name without overload, and without the ``_copy`` of functionalised views."""
    name = getattr(getattr(target, "_overloadpacket", None), "__name__", None) or getattr(target, "__name__", str(target))
    return name.removesuffix("_copy") if name.endswith("_copy") and name != "_to_copy" else name


@dataclass
class _Info:
    """What the analysis knows about one node that depends on the image."""

    axes: tuple[int, int]  # positions of (y, x) in the tensor's dims
    size: tuple[int, int]
    rules: tuple[Rule, Rule] | None = None  # per axis, from the (first) spatial input
    inputs: list[fx.Node] = field(default_factory=list)  # spatial inputs
    kind: str = "same"  # same | conv | convt | pool | avgpool | up | shift | getitem | input
    fill: float | str | None = None  # out-of-image value of the gathered crops (None, a number or "edge")
    item: int | None = None  # getitem index
    macs: int = 0  # multiply-accumulates per output position (convolutions)


def _tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _axis_dims(dims: Any, ndim: int) -> list[int]:
    if dims is None:
        return list(range(ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return [d % ndim for d in dims]


class _Analysis:
    """Classifies every node of the trace (spatial rule, or ineligible) from the factual values."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> None:
        self.gm, self.values = gm, values
        self.info: dict[fx.Node, _Info] = {}
        self.ops = 0

    def run(self) -> dict[fx.Node, _Info]:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                value = self.values[node]
                if value.dim() != 4:
                    raise Ineligible(f"the traced input has shape {tuple(value.shape)}, not (1, C, H, W)")
                self.info[node] = _Info((2, 3), tuple(value.shape[2:]), kind="input")
            elif node.op == "call_function":
                deps = [a for a in node.all_input_nodes if a in self.info]
                if deps:
                    self.info[node] = self._classify(node, deps)
                    self.ops += 1
            elif node.op == "output":
                continue
        return self.info

    # -- helpers ------------------------------------------------------------------------------------
    def _fail(self, node: fx.Node, why: str) -> Ineligible:
        return Ineligible(f"{_name(node.target)} (node {node.name}): {why}")

    def _spatial(self, node: fx.Node, deps: list[fx.Node]) -> _Info:
        """An op whose output has its inputs' spatial axes, unchanged (pointwise / per position)."""
        first = self.info[deps[0]]
        value = self.values[node]
        if isinstance(value, (tuple, list)) and value and _tensor(value[0]):
            value = value[0]  # e.g. batch norm's (output, mean, invstd): only the output is spatial
        if not _tensor(value):
            raise self._fail(node, "returns a non-tensor from image-dependent inputs")
        for dep in deps:
            info = self.info[dep]
            if info.kind == "getitem_other":
                raise self._fail(node, "uses a secondary output (e.g. pooling indices) of a spatial op")
            if info.axes != first.axes or info.size != first.size:
                raise self._fail(node, f"combines tensors on different spatial grids {info.size} and {first.size}")
        shape = tuple(value.shape)
        if value.dim() <= max(first.axes) or (shape[first.axes[0]], shape[first.axes[1]]) != first.size:
            raise self._fail(node, f"output shape {shape} loses the spatial grid {first.size}")
        if shape[0] != 1:
            raise self._fail(node, f"output shape {shape} changes the batch dimension")
        rules = (_Same(first.size[0]), _Same(first.size[1]))
        return _Info(first.axes, first.size, rules, deps, "same")

    def _axes_safe(self, node: fx.Node, info: _Info, dims: list[int], what: str) -> None:
        if 0 in dims:
            raise self._fail(node, f"{what} the batch dimension")
        if set(dims) & set(info.axes):
            raise self._fail(node, f"{what} the spatial dimensions (a global operation)")

    def _classify(self, node: fx.Node, deps: list[fx.Node]) -> _Info:  # noqa: C901 - one branch per op family
        target, args = node.target, node.args
        name = _name(target)
        if target is operator.getitem:
            src = self.info[args[0]]
            same = (_Same(src.size[0]), _Same(src.size[1]))
            if src.kind == "split" or args[1] == 0:
                return _Info(src.axes, src.size, same, [args[0]], "getitem", item=args[1])
            return _Info(src.axes, src.size, same, [args[0]], "getitem_other", item=args[1])
        if not isinstance(target, torch._ops.OpOverload):
            raise self._fail(node, "is not an ATen op")
        x = self.info[deps[0]]
        if name == "convolution":
            return self._conv(node, deps)
        if name in ("max_pool2d_with_indices", "max_pool2d"):
            k, s, p, d = _pool_args(node)
            return self._window(node, deps, "pool", k, s, p, d, fill=-math.inf)
        if name == "avg_pool2d":
            k, s, p, _ = _pool_args(node)
            ceil = _arg(node, 4, "ceil_mode", False)
            if any(p) or ceil:
                raise self._fail(node, "average pooling with padding or ceil_mode is not supported")
            return self._window(node, deps, "avgpool", k, s, [0, 0], [1, 1], fill=None)
        if name in ("upsample_nearest2d", "upsample_bilinear2d"):
            return self._up(node, deps, bilinear=name == "upsample_bilinear2d")
        if name in ("constant_pad_nd", "replication_pad2d", "reflection_pad2d"):
            return self._pad(node, deps, mode={"replication_pad2d": "edge", "reflection_pad2d": "reflect"}.get(name))
        if name == "native_batch_norm" and not args[5]:
            return self._spatial(node, [deps[0]])
        if name == "_native_batch_norm_legit_no_training":
            return self._spatial(node, [deps[0]])
        if name in _GLOBAL_REASONS:
            raise self._fail(node, _GLOBAL_REASONS[name])
        if torch.Tag.pointwise in target.tags or target in _POINTWISE_EXTRA or name == "_prelu_kernel":
            return self._spatial(node, deps)
        value = self.values[node]
        if name == "native_layer_norm":
            ndim = self.values[args[0]].dim()
            self._axes_safe(node, x, list(range(ndim - len(args[1]), ndim)), "normalises over")
            return self._spatial(node, [deps[0]])
        if name in ("_softmax", "_log_softmax"):
            self._axes_safe(node, x, _axis_dims(args[1], self.values[args[0]].dim()), "normalises over")
            return self._spatial(node, deps)
        if name in ("mean", "sum", "amax", "amin", "var", "std", "prod", "var_mean", "logsumexp"):
            ndim = self.values[args[0]].dim()
            dims = _axis_dims(args[1] if len(args) > 1 else node.kwargs.get("dim"), ndim)
            self._axes_safe(node, x, dims, "reduces over")
            keep = node.kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
            axes = x.axes if keep else tuple(a - sum(d < a for d in dims) for a in x.axes)
            return self._moved(node, deps, axes)
        if name == "cat":
            ndim = self.values[deps[0]].dim()
            dim = (args[1] if len(args) > 1 else node.kwargs.get("dim", 0)) % ndim
            self._axes_safe(node, x, [dim], "concatenates along")
            return self._spatial(node, deps)
        if name in ("split", "split_with_sizes", "chunk", "unbind"):
            ndim = self.values[args[0]].dim()
            dim = (args[2] if len(args) > 2 else node.kwargs.get("dim", 0)) % ndim
            self._axes_safe(node, x, [dim], "splits along")
            info = _Info(x.axes, x.size, (_Same(x.size[0]), _Same(x.size[1])), [deps[0]], "split")
            return info
        if name == "permute":
            dims = _axis_dims(args[1], self.values[args[0]].dim())
            if dims[0] != 0:
                raise self._fail(node, "moves the batch dimension")
            return self._moved(node, deps, (dims.index(x.axes[0]), dims.index(x.axes[1])))
        if name == "transpose":
            ndim = self.values[args[0]].dim()
            a, b = args[1] % ndim, args[2] % ndim
            if 0 in (a, b):
                raise self._fail(node, "moves the batch dimension")
            swap = {a: b, b: a}
            return self._moved(node, deps, tuple(swap.get(ax, ax) for ax in x.axes))
        if name == "unsqueeze":
            dim = args[1] % (self.values[args[0]].dim() + 1)
            if dim == 0:
                raise self._fail(node, "adds a dimension before the batch")
            return self._moved(node, deps, tuple(a + (a >= dim) for a in x.axes))
        if name in ("squeeze", "select"):
            ndim = self.values[args[0]].dim()
            dims = _axis_dims(args[1] if len(args) > 1 else [d for d in range(ndim) if self.values[args[0]].shape[d] == 1], ndim)
            self._axes_safe(node, x, dims, "removes")
            return self._moved(node, deps, tuple(a - sum(d < a for d in dims) for a in x.axes))
        if name == "slice":
            ndim = self.values[args[0]].dim()
            dim = (args[1] if len(args) > 1 else 0) % ndim
            if dim == 0:
                raise self._fail(node, "slices the batch dimension")
            if dim in x.axes:
                return self._slice(node, deps, dim)
            return self._spatial(node, deps)
        if name in ("view", "_unsafe_view", "reshape", "expand"):
            return self._view(node, deps)
        raise self._fail(node, "is not known to be spatially local")

    def _moved(self, node: fx.Node, deps: list[fx.Node], axes: tuple[int, int]) -> _Info:
        x = self.info[deps[0]]
        value = self.values[node]
        if tuple(value.shape[a] for a in axes) != x.size:
            raise self._fail(node, "changes the spatial grid")
        return _Info(tuple(int(a) for a in axes), x.size, (_Same(x.size[0]), _Same(x.size[1])), [deps[0]], "same")

    def _view(self, node: fx.Node, deps: list[fx.Node]) -> _Info:
        x = self.info[deps[0]]
        src, out = tuple(self.values[node.args[0]].shape), tuple(self.values[node].shape)
        ndim = len(src)
        # Only views that keep the batch and the trailing spatial axes and reshape the channels.
        if x.axes != (ndim - 2, ndim - 1) or len(out) < 3 or out[0] != 1 or tuple(out[-2:]) != x.size:
            raise self._fail(node, f"a reshape {src} -> {out} merges or moves the spatial axes (tokens)")
        return _Info((len(out) - 2, len(out) - 1), x.size, (_Same(x.size[0]), _Same(x.size[1])), [deps[0]], "view")

    def _conv(self, node: fx.Node, deps: list[fx.Node]) -> _Info:
        x = self.info[deps[0]]
        if deps[0] is not node.args[0] or len(deps) > 1:
            raise self._fail(node, "has weights computed from the image")
        _, weight, _, stride, padding, dilation, transposed, _, groups = node.args
        value = self.values[node]
        if value.dim() != 4 or x.axes != (2, 3):
            raise self._fail(node, "is not a 2-D convolution on (B, C, H, W)")
        k = tuple(self.values[weight].shape[2:])
        out = tuple(value.shape[2:])
        cls = _ConvT if transposed else _Conv
        rules = tuple(cls(k[i], stride[i], padding[i], dilation[i], x.size[i], out[i]) for i in range(2))
        w = self.values[weight]
        # Multiply-accumulates per output value: C_in / groups x kernel (spread over the stride if transposed).
        macs = int(w.shape[1] * k[0] * k[1]) if not transposed else \
            max(1, int(w.shape[0] // groups * k[0] * k[1] // (stride[0] * stride[1])))
        return _Info((2, 3), out, rules, [deps[0]], "convt" if transposed else "conv", fill=0.0, macs=macs)

    def _window(self, node, deps, kind, k, s, p, d, fill) -> _Info:
        x = self.info[deps[0]]
        value = self.values[node]
        out_value = value[0] if isinstance(value, (tuple, list)) else value
        if x.axes != (2, 3) or out_value.dim() != 4:
            raise self._fail(node, "is not 2-D pooling on (B, C, H, W)")
        k, s, p, d = _pair(k), _pair(s), _pair(p), _pair(d)
        out = tuple(out_value.shape[2:])
        rules = tuple(_Conv(k[i], s[i], p[i], d[i], x.size[i], out[i]) for i in range(2))
        return _Info((2, 3), out, rules, [deps[0]], kind, fill=fill)

    def _up(self, node, deps, bilinear: bool) -> _Info:
        x = self.info[deps[0]]
        value = self.values[node]
        out = tuple(value.shape[2:])
        align = node.args[2] if bilinear and len(node.args) > 2 else False
        if align:
            raise self._fail(node, "bilinear up-sampling with align_corners=True is not translation-invariant")
        factors = [out[i] // x.size[i] for i in range(2)]
        if x.axes != (2, 3) or any(out[i] != factors[i] * x.size[i] or factors[i] < 1 for i in range(2)):
            raise self._fail(node, f"up-sampling {x.size} -> {out} is not by an integer factor")
        rules = tuple(_Up(factors[i], bilinear, x.size[i], out[i]) for i in range(2))
        return _Info((2, 3), out, rules, [deps[0]], "up", fill="edge" if bilinear else None)

    def _pad(self, node, deps, mode: str | None) -> _Info:
        x = self.info[deps[0]]
        value = self.values[node]
        pads = list(node.args[1])
        ndim = value.dim()
        if x.axes != (ndim - 2, ndim - 1) or len(pads) > 4:
            raise self._fail(node, "pads dimensions other than the trailing spatial ones")
        pads += [0] * (4 - len(pads))
        out = tuple(value.shape[-2:])
        fill = mode or float(node.args[2] if len(node.args) > 2 else 0.0)
        rules = (_Shift(pads[2], x.size[0], out[0], mode), _Shift(pads[0], x.size[1], out[1], mode))
        return _Info(x.axes, out, rules, [deps[0]], "shift", fill=fill)

    def _slice(self, node, deps, dim: int) -> _Info:
        x = self.info[deps[0]]
        args = node.args
        step = args[4] if len(args) > 4 else 1
        if step != 1:
            raise self._fail(node, "a strided slice of a spatial axis is not supported")
        n = self.values[args[0]].shape[dim]
        start = args[2] if len(args) > 2 and args[2] is not None else 0
        start = max(0, min(n, start + n if start < 0 else start))
        value = self.values[node]
        rules = list((_Same(x.size[0]), _Same(x.size[1])))
        i = x.axes.index(dim)
        rules[i] = _Shift(-start, n, value.shape[dim], None)
        size = tuple(value.shape[a] for a in x.axes)
        return _Info(x.axes, size, tuple(rules), [deps[0]], "shift", fill=None)


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    """Argument `index` (or keyword `name`) of an ATen call, else its default."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _pool_args(node: fx.Node) -> tuple[tuple[int, int], ...]:
    """(kernel, stride, padding, dilation) of a 2-D pooling call (an empty stride means the kernel)."""
    kernel = _pair(_arg(node, 1, "kernel_size", None))
    stride = _arg(node, 2, "stride", None)
    stride = _pair(stride) if stride else kernel
    return kernel, stride, _pair(_arg(node, 3, "padding", 0)), _pair(_arg(node, 4, "dilation", 1))


def _pair(v: Any) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[-1]))


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


def _trace(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import functionalize

    try:
        # Outside inference mode: there, composite ops such as bilinear up-sampling are decomposed into
        # index arithmetic this analysis cannot read.
        with torch.inference_mode(False), torch.no_grad():
            return make_fx(functionalize(fn, remove="mutations_and_views"))(example.clone())
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; the reason is reported
        raise Ineligible(f"the model could not be traced ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from exc


def _factual(gm: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, Any]:
    values: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            values[n] = out
            return out

    with torch.inference_mode(False), torch.no_grad():
        Recorder(gm).run(example.clone())
    return values


@dataclass
class _Window:
    """Per-node window of the plan: fixed size, per-cell origin and exact region (torch, on the device)."""

    size: tuple[int, int]
    origin: torch.Tensor  # (cells, 2)
    region: torch.Tensor  # (cells, 4): y0, y1, x0, x1 (empty where y0 >= y1 or x0 >= x1)


class IncrementalPlan:
    """Everything needed to evaluate perturbed blocks incrementally for one image, RoI box and block.

    Built by :func:`plan`; call it with cells and replacement blocks to get the model's output on
    the RoI box, exactly as a full forward pass followed by the crop would.

    Attributes
    ----------
    flops_ratio : float
        Multiply-accumulates of the convolutions per perturbed image, incremental / full forward
        (the limit of the speed-up when convolutions dominate).
    ops : int
        Image-dependent ops in the trace.
    """

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, Any], info: dict[fx.Node, _Info],
                 box: tuple[int, int, int, int], block: int, grid: tuple[int, int], device: torch.device) -> None:
        self.gm, self.info, self.block, self.grid, self.device = gm, info, block, grid, device
        self.box = box
        self.order = [n for n in gm.graph.nodes if n in info]
        out_node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        if isinstance(out_node, (tuple, list)):
            out_node = out_node[0]
        if out_node not in info:
            raise Ineligible("the output does not depend on the image")
        y0, y1, x0, x1 = box
        height, width = info[out_node].size
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(f"box={box} (y0, y1, x0, x1) is not inside the model's {height} x {width} output")
        self.out_node = out_node
        self.placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
        self.flat = {}  # node -> factual value as (channels, H, W)
        for node in self.order:
            value = values[node]
            if _tensor(value) and node in info and info[node].kind not in ("split", "getitem_other"):
                self.flat[node] = _to_flat(value, info[node].axes)
        self.values = values
        self.windows = self._windows()
        self.flops_ratio = self._flops_ratio()
        self.ops = len(self.order)

    # -- cones -----------------------------------------------------------------------------------
    def _backward(self) -> dict[fx.Node, list[list[int]]]:
        y0, y1, x0, x1 = self.box
        need: dict[fx.Node, list[list[int]]] = {self.out_node: [[y0, y1], [x0, x1]]}
        for node in reversed(self.order):
            if node not in need:
                continue
            info = self.info[node]
            for dep in info.inputs:
                rect = [list(info.rules[i].backward(*need[node][i])) if info.rules else list(need[node][i])
                        for i in range(2)]
                if dep in need:
                    old = need[dep]
                    rect = [[min(old[i][0], rect[i][0]), max(old[i][1], rect[i][1])] for i in range(2)]
                need[dep] = rect
        return need

    def _inherits(self, node: fx.Node) -> fx.Node | None:
        """The input whose window a position-wise single-input node reuses (its values are exact there too)."""
        info = self.info[node]
        if info.kind in ("getitem", "split", "view") or (info.kind == "same" and len(set(info.inputs)) == 1):
            return info.inputs[0]
        return None

    def _windows(self) -> dict[fx.Node, _Window]:
        need = self._backward()
        gy, gx = self.grid
        cells = np.arange(gy * gx)
        b = self.block
        lo = {self.placeholder: (np.stack([cells // gx * b, cells % gx * b], axis=1))}
        hi = {self.placeholder: lo[self.placeholder] + b}
        windows: dict[fx.Node, _Window] = {}
        for node in self.order:
            info = self.info[node]
            if node is not self.placeholder:
                if not self._forward_cone(node, info, lo, hi):
                    continue
                source = self._inherits(node)
                if source is not None:
                    if source in windows and node in need:
                        windows[node] = windows[source]
                    continue
            if node not in need or info.kind == "getitem_other":
                continue
            rect = np.array(need[node])  # (2, 2)
            r_lo = np.maximum(lo[node], rect[:, 0])
            r_hi = np.minimum(hi[node], rect[:, 1])
            empty = (r_hi <= r_lo).any(axis=1, keepdims=True)
            r_lo, r_hi = np.where(empty, 0, r_lo), np.where(empty, 0, r_hi)
            size = tuple(int(v) for v in (r_hi - r_lo).max(axis=0))
            if node is self.placeholder:
                size, origin = (b, b), lo[node]
            else:
                origin = np.minimum(r_lo, np.array(info.size) - np.array(size))
            if min(size) <= 0:
                continue
            region = np.stack([r_lo[:, 0], r_hi[:, 0], r_lo[:, 1], r_hi[:, 1]], axis=1)
            windows[node] = _Window(size, torch.as_tensor(origin, device=self.device),
                                    torch.as_tensor(region, device=self.device))
        return windows

    def _forward_cone(self, node: fx.Node, info: _Info, lo: dict, hi: dict) -> bool:
        """The rectangle each block can change at `node` (the bounding box over its inputs); False if none."""
        parts_lo, parts_hi = [], []
        rules = info.rules or (_Same(0), _Same(0))
        for dep in info.inputs:
            if dep not in lo:
                continue
            fl = [rules[i].forward(lo[dep][:, i], hi[dep][:, i]) for i in range(2)]
            part_lo = np.stack([fl[0][0], fl[1][0]], axis=1)
            part_hi = np.stack([fl[0][1], fl[1][1]], axis=1)
            empty = (part_hi <= part_lo).any(axis=1, keepdims=True)
            parts_lo.append(np.where(empty, np.iinfo(np.int64).max, part_lo))
            parts_hi.append(np.where(empty, -1, part_hi))
        if not parts_lo:
            return False
        node_lo, node_hi = np.min(parts_lo, axis=0), np.max(parts_hi, axis=0)
        none = (node_hi <= node_lo).any(axis=1, keepdims=True)
        lo[node], hi[node] = np.where(none, 0, node_lo), np.where(none, 0, node_hi)
        return True

    def _flops_ratio(self) -> float:
        full = part = 0
        for node, info in self.info.items():
            if info.kind in ("conv", "convt"):
                value = self.values[node]
                channels = value.shape[1]
                full += info.macs * channels * info.size[0] * info.size[1]
                if node in self.windows:
                    h, w = self.windows[node].size
                    part += info.macs * channels * h * w
        return part / full if full else 1.0

    # -- evaluation ------------------------------------------------------------------------------
    def __call__(self, cells: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """Model output on the RoI box for each job: cell `cells[j]` replaced by `blocks[j]`.

        Parameters
        ----------
        cells : LongTensor (J,)
            Flat block indices.
        blocks : Tensor (J, C, b, b) or (1, C, b, b)
            Replacement content on the model's input scale.

        Returns
        -------
        Tensor (J, K, box height, box width)
        """
        cells = cells.to(self.device)
        jobs = len(cells)
        win: dict[fx.Node, Any] = {}
        blocks = blocks.expand(jobs, *blocks.shape[1:]) if blocks.shape[0] == 1 else blocks
        win[self.placeholder] = blocks.to(self.values[self.placeholder].dtype)
        for node in self.order:
            if node is self.placeholder:
                continue
            if node in self.windows:
                win[node] = self._evaluate(node, self.info[node], cells, win, jobs)
        y0, y1, x0, x1 = self.box
        rows = torch.arange(y0, y1, device=self.device).expand(jobs, -1)
        cols = torch.arange(x0, x1, device=self.device).expand(jobs, -1)
        return self._gather(self.out_node, rows, cols, cells, win, None)

    def _evaluate(self, node: fx.Node, info: _Info, cells: torch.Tensor, win: dict, jobs: int) -> Any:
        if info.kind == "getitem":
            return win[info.inputs[0]][info.item]
        window = self.windows.get(node)
        kind = info.kind
        if kind in ("same", "view", "split"):
            return self._same(node, info, cells, win, jobs, window)
        origin = window.origin[cells]
        crops, offsets = [], []
        for axis in range(2):
            first, length = info.rules[axis].source(origin[:, axis], window.size[axis])
            crops.append(first[:, None] + torch.arange(length, device=self.device))
            if kind in ("convt", "up"):
                offsets.append(info.rules[axis].offset(origin[:, axis], first))
        crop = self._gather(info.inputs[0], crops[0], crops[1], cells, win, info.fill)
        args = node.args
        if kind == "conv":
            out = aten.convolution.default(crop, self.values[args[1]], _const(self.values, args[2]), args[3],
                                           [0, 0], args[5], False, [0, 0], args[8])
        elif kind == "convt":
            out = aten.convolution.default(crop, self.values[args[1]], _const(self.values, args[2]), args[3],
                                           [0, 0], args[5], True, [0, 0], args[8])
            out = _slice_windows(out, offsets, window.size)
        elif kind == "pool":
            k, s, _, d = _pool_args(node)
            out = aten.max_pool2d_with_indices.default(crop, k, s, [0, 0], d, False)
            out = out if _name(node.target) == "max_pool2d_with_indices" else out[0]
        elif kind == "avgpool":
            k, s, _, _ = _pool_args(node)
            out = aten.avg_pool2d.default(crop, k, s, [0, 0], False, _arg(node, 5, "count_include_pad", True),
                                          _arg(node, 6, "divisor_override", None))
        elif kind == "up":
            f = [info.rules[i].f for i in range(2)]
            size = [crop.shape[2] * f[0], crop.shape[3] * f[1]]
            if _name(node.target) == "upsample_bilinear2d":
                out = aten.upsample_bilinear2d.default(crop, size, False)
            else:
                out = aten.upsample_nearest2d.default(crop, size)
            out = _slice_windows(out, offsets, window.size)
        elif kind == "shift":
            out = crop
        else:  # pragma: no cover - every kind is handled above
            raise AssertionError(kind)
        return out

    def _same(self, node: fx.Node, info: _Info, cells: torch.Tensor, win: dict, jobs: int, window) -> Any:
        """A position-wise op: run it on the windows (gathered to this node's window if they differ)."""
        inputs = info.inputs
        crops: dict[fx.Node, torch.Tensor] = {}
        if self._inherits(node) is not None:
            for dep in inputs:
                crops[dep] = win[dep]
        else:
            origin = window.origin[cells]
            rows = origin[:, 0:1] + torch.arange(window.size[0], device=self.device)
            cols = origin[:, 1:2] + torch.arange(window.size[1], device=self.device)
            for dep in set(inputs):
                crops[dep] = self._gather(dep, rows, cols, cells, win, None)
        def swap(arg: Any) -> Any:
            if isinstance(arg, fx.Node):
                if arg in crops:
                    return crops[arg]
                value = self.values[arg]
                if _tensor(value) and _broadcasts(node.target):
                    return self._crop_constant(value, info, window, cells)
                return value
            if isinstance(arg, (list, tuple)):
                return type(arg)(swap(a) for a in arg)
            return arg

        args = [swap(a) for a in node.args]
        kwargs = {k: swap(v) for k, v in node.kwargs.items()}
        if info.kind == "view":
            shape = list(node.args[1])
            shape[0] = jobs
            shape[-2:] = list(args[0].shape[-2:])
            args[1] = shape
            return aten.reshape.default(args[0], shape) if _name(node.target) != "expand" else args[0].expand(shape)
        return node.target(*args, **kwargs)

    def _crop_constant(self, value: torch.Tensor, info: _Info, window: _Window, cells: torch.Tensor) -> torch.Tensor:
        """An image-independent operand: cut to the window where it varies over space, else as is."""
        ndim = len(self.values[info.inputs[0]].shape) if _tensor(self.values[info.inputs[0]]) else value.dim()
        if value.dim() > ndim or value.dim() == 0:
            return value
        full = value.reshape((1,) * (ndim - value.dim()) + tuple(value.shape))  # broadcasting aligns on the right
        if all(full.shape[a] == 1 for a in info.axes):
            return value
        shape = list(full.shape)
        for axis, n in zip(info.axes, info.size):
            shape[axis] = n
        full = full.expand(shape)
        origin = window.origin[cells]
        rows = origin[:, 0:1] + torch.arange(window.size[0], device=self.device)
        cols = origin[:, 1:2] + torch.arange(window.size[1], device=self.device)
        flat = _to_flat(full, info.axes)
        out = flat[:, rows[:, :, None], cols[:, None, :]].transpose(0, 1)
        moved = [s for i, s in enumerate(shape) if i not in info.axes]
        out = out.reshape(len(cells), *moved[1:], *out.shape[-2:]).movedim((-2, -1), info.axes)
        if full.shape[0] == 1 and value.dim() < ndim:
            return out  # the batch dim was added here; the result keeps it (broadcasts the same way)
        return out

    def _gather(self, node: fx.Node, rows: torch.Tensor, cols: torch.Tensor, cells: torch.Tensor, win: dict,
                fill: float | str | None) -> torch.Tensor:
        """Values of `node` at rows x cols per job: factual, the recomputed window pasted in, padding outside."""
        info = self.info[node]
        flat = self.flat[node]
        h, w = flat.shape[-2:]
        mode = fill if fill in ("edge", "reflect") else None
        rc, cc = _source_index(rows, h, mode), _source_index(cols, w, mode)
        out = flat[:, rc[:, :, None], cc[:, None, :]].transpose(0, 1)  # (J, C, Ty, Tx)
        window = self.windows.get(node)
        if window is not None and node in win:
            origin = window.origin[cells]
            region = window.region[cells]
            inside_y = (rc >= region[:, 0:1]) & (rc < region[:, 1:2])
            inside_x = (cc >= region[:, 2:3]) & (cc < region[:, 3:4])
            py = (rc - origin[:, 0:1]).clamp(0, window.size[0] - 1)
            px = (cc - origin[:, 1:2]).clamp(0, window.size[1] - 1)
            values = _to_flat_batch(win[node], info.axes)  # (J, C, h, w)
            jobs = torch.arange(len(cells), device=self.device)[:, None, None]
            pasted = values[jobs, :, py[:, :, None], px[:, None, :]].permute(0, 3, 1, 2)
            mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
            out = torch.where(mask, pasted, out)
        if fill is not None and fill not in ("edge", "reflect"):
            outside = ((rows < 0) | (rows >= h))[:, :, None] | ((cols < 0) | (cols >= w))[:, None, :]
            out = out.masked_fill(outside[:, None], fill)
        return _from_flat(out, self.values[node].shape, info.axes, batch=len(cells))


def _broadcasts(target: Any) -> bool:
    """Whether the op's tensor operands broadcast against each other (pointwise), so constants align on the right."""
    return isinstance(target, torch._ops.OpOverload) and (torch.Tag.pointwise in target.tags or target in _POINTWISE_EXTRA)


def _const(values: dict, arg: Any) -> Any:
    return values[arg] if isinstance(arg, fx.Node) else arg


def _slice_windows(out: torch.Tensor, offsets: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-job crops of `out` (J, C, Y, X) of `size`, starting at the per-job offsets."""
    oy, ox = offsets
    if bool((oy == oy[0]).all()) and bool((ox == ox[0]).all()):
        y, x = int(oy[0]), int(ox[0])
        return out[:, :, y:y + size[0], x:x + size[1]]
    rows = oy[:, None] + torch.arange(size[0], device=out.device)
    cols = ox[:, None] + torch.arange(size[1], device=out.device)
    jobs = torch.arange(out.shape[0], device=out.device)[:, None, None]
    return out[jobs, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _to_flat(value: torch.Tensor, axes: tuple[int, int]) -> torch.Tensor:
    """(1, ..., H, ..., W, ...) -> (channels, H, W) for a batch-1 factual value."""
    moved = value.movedim(axes, (-2, -1))
    return moved.reshape(-1, *moved.shape[-2:])


def _to_flat_batch(value: torch.Tensor, axes: tuple[int, int]) -> torch.Tensor:
    moved = value.movedim(axes, (-2, -1))
    return moved.reshape(moved.shape[0], -1, *moved.shape[-2:])


def _from_flat(out: torch.Tensor, shape: Sequence[int], axes: tuple[int, int], batch: int) -> torch.Tensor:
    """(J, channels, Ty, Tx) back to the node's layout with batch J and the crop's spatial size."""
    moved_shape = [s for i, s in enumerate(shape) if i not in axes]
    moved_shape[0] = batch
    out = out.reshape(*moved_shape, *out.shape[-2:])
    return out.movedim((-2, -1), axes)


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

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


def _analysed(model: nn.Module, fn: Callable, image: torch.Tensor, key: tuple) -> tuple:
    """Trace, factual activations and analysis of `fn` on `image`, cached per model and weights."""
    hit = _cached(model, image, key)
    if hit is not None:
        return hit
    cache = _TRACES.setdefault(model, {})
    full_key = (key, tuple(image.shape), image.dtype, str(image.device), _fingerprint(model))
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
    (True, 'eligible: 4 image-dependent ops, all spatially local')
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
