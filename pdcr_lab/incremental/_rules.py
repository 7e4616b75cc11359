"""Per-axis rules of the incremental plan: which outputs a changed input interval reaches (forward),
which inputs an output interval needs (backward), and which input crop computes an output window.

Intervals are half-open [lo, hi); ``forward`` is vectorised over blocks (numpy int arrays), ``source``
over jobs (torch tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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


@dataclass(frozen=True)
class _Kernel:
    """Kernel size, stride, padding and dilation along one axis, and the axis' input and output lengths."""

    k: int
    s: int
    p: int
    d: int
    n_in: int
    n_out: int

    @property
    def span(self) -> int:
        """Distance between the first and the last input a kernel position reads."""
        return self.d * (self.k - 1)


@dataclass(frozen=True)
class _Conv(_Kernel):
    """Convolution or pooling: output o reads inputs o*s - p + j*d for j in [0, k)."""

    def forward(self, lo, hi):
        out_lo = -((-(lo + self.p - self.span)) // self.s)  # ceil
        out_hi = (hi - 1 + self.p) // self.s + 1
        return np.clip(out_lo, 0, self.n_out), np.clip(out_hi, 0, self.n_out)

    def backward(self, lo, hi):
        return max(lo * self.s - self.p, 0), min((hi - 1) * self.s - self.p + self.span + 1, self.n_in)

    def source(self, origin, size):
        return origin * self.s - self.p, (size - 1) * self.s + self.span + 1


@dataclass(frozen=True)
class _ConvT(_Kernel):
    """Transposed convolution: input i writes outputs i*s - p + j*d for j in [0, k)."""

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


Rule = _Same | _Conv | _ConvT | _Shift | _Up
