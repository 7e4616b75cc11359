"""The incremental plan: the windows of every layer and their batched evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx

from ._analysis import (
    Ineligible,
    _arg,
    _broadcasts,
    _Info,
    _name,
    _pool_args,
    _tensor,
)
from ._rules import _Same, _source_index

aten = torch.ops.aten


def _trace(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> fx.GraphModule:
    from torch.func import functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

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
        self._pads: dict[tuple, tuple[torch.Tensor, int]] = {}
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
        """Values of `node` at rows x cols per job: factual, the recomputed window pasted in, padding outside.

        `rows` and `cols` are runs of consecutive positions per job. With constant padding the crops are
        slices of the padded factual activation and the windows are pasted by slices (per-job copies are
        an order of magnitude faster than element-wise indexing on CPUs); edge and reflection padding,
        which must mirror pasted values into the padding, index element-wise.
        """
        if fill not in ("edge", "reflect"):
            return self._gather_sliced(node, rows[:, 0].tolist(), rows.shape[1], cols[:, 0].tolist(), cols.shape[1],
                                       cells, win, fill)
        info = self.info[node]
        flat = self.flat[node]
        h, w = flat.shape[-2:]
        mode = fill
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
        return _from_flat(out, self.values[node].shape, info.axes, batch=len(cells))

    def _gather_sliced(self, node: fx.Node, ys: list[int], ty: int, xs: list[int], tx: int, cells: torch.Tensor,
                       win: dict, fill: float | None) -> torch.Tensor:
        """:meth:`_gather` for constant padding: slices of the padded factual, windows pasted by slices."""
        info = self.info[node]
        base, margin = self._padded(node, fill, max(0, -min(ys), -min(xs), max(ys) + ty - self.flat[node].shape[1],
                                                    max(xs) + tx - self.flat[node].shape[2]))
        out = torch.stack([base[:, y + margin:y + margin + ty, x + margin:x + margin + tx] for y, x in zip(ys, xs)])
        window = self.windows.get(node)
        if window is not None and node in win:
            values = _to_flat_batch(win[node], info.axes)  # (J, C, h, w)
            origins, regions = window.origin[cells].tolist(), window.region[cells].tolist()
            for j, ((oy, ox), (a, b, c, d)) in enumerate(zip(origins, regions)):
                a, b, c, d = max(a, ys[j]), min(b, ys[j] + ty), max(c, xs[j]), min(d, xs[j] + tx)
                if a < b and c < d:
                    out[j, :, a - ys[j]:b - ys[j], c - xs[j]:d - xs[j]] = values[j, :, a - oy:b - oy, c - ox:d - ox]
        return _from_flat(out, self.values[node].shape, info.axes, batch=len(cells))

    def _padded(self, node: fx.Node, fill: float | None, margin: int) -> tuple[torch.Tensor, int]:
        """The factual activation of `node` as (channels, H, W) padded by at least `margin` with `fill` (cached)."""
        key = (node, fill)
        cached = self._pads.get(key)
        if cached is None or cached[1] < margin:
            flat = self.flat[node]
            grow = max(margin, 2 * cached[1] if cached else 0)
            base = torch.nn.functional.pad(flat, (grow,) * 4, value=0.0 if fill is None else fill) if grow else flat
            cached = self._pads[key] = (base, grow)
        return cached


def _const(values: dict, arg: Any) -> Any:
    return values[arg] if isinstance(arg, fx.Node) else arg


def _slice_windows(out: torch.Tensor, offsets: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-job crops of `out` (J, C, Y, X) of `size`, starting at the per-job offsets."""
    oy, ox = offsets[0].tolist(), offsets[1].tolist()
    if len(set(oy)) == 1 and len(set(ox)) == 1:
        return out[:, :, oy[0]:oy[0] + size[0], ox[0]:ox[0] + size[1]]
    return torch.stack([out[j, :, y:y + size[0], x:x + size[1]] for j, (y, x) in enumerate(zip(oy, ox))])


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
