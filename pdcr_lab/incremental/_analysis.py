"""Classification of a traced model's ATen ops: a spatial rule per image-dependent node, or the reason
the model cannot run incrementally (:class:`Ineligible`)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ._rules import Rule, _Conv, _ConvT, _Same, _Shift, _Up

aten = torch.ops.aten


class Ineligible(Exception):
    """The model cannot run incrementally; ``str(exc)`` says which op and why."""


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


def _broadcasts(target: Any) -> bool:
    """Whether the op's tensor operands broadcast against each other (pointwise), so constants align on the right."""
    return isinstance(target, torch._ops.OpOverload) and (torch.Tag.pointwise in target.tags or target in _POINTWISE_EXTRA)
