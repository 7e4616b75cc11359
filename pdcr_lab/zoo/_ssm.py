"""State-space architecture: a compact VM-UNet (Ruan et al., 2024) with a pure-PyTorch selective scan.

The visual state-space (VSS) block flattens the feature map into token sequences in four
directions (row-major, column-major and both reversed), runs a Mamba S6 selective scan along each
(input-dependent step size delta and projections B, C; Gu & Dao, 2023) and merges the four outputs.
The scan is a causal recurrence along each path (chunked for speed, see :func:`selective_scan`), so
information travels along the scan paths, not across the image at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import UShape, patch_unet
from ._blocks import TokenBlock, to_grid

DIRECTIONS = 4


#: Floor on the per-step log-decay delta * A: one step keeps at least exp(-6) ~ 0.25% of the state
#: (two steps 6e-6). With chunks of 8 tokens this bounds P and 1 / P within exp(-+48), so neither
#: the forward nor the backward pass leaves the float32 range.
MIN_LOG_DECAY = -6.0
CHUNK = 8


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor) -> torch.Tensor:
    """Mamba S6 selective scan over a sequence, in pure PyTorch.

    Parameters
    ----------
    u, delta : Tensor of shape (batch, K, d, L)
        Inputs and (positive) step sizes of ``K`` groups of ``d`` channels.
    A : Tensor of shape (K, d, n)
        Negative diagonal state matrix.
    B, C : Tensor of shape (batch, K, n, L)
        Input-dependent input and output projections, shared by the ``d`` channels of a group.
    D : Tensor of shape (K, d)
        Skip weight.

    Returns
    -------
    Tensor of shape (batch, K, d, L)
        ``y_t = C_t . h_t + D u_t`` with ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, h_0 = 0.

    Notes
    -----
    The sequence is walked chunk by chunk (:data:`CHUNK` tokens), carrying the state from one chunk
    to the next; inside a chunk the recurrence is solved in closed form,
    ``h_t = P_t (h_in + sum_{s<=t} delta_s B_s u_s / P_s)`` with ``P_t`` the running product of the
    decays (running sums as a product with a lower-triangular matrix). ``delta * A`` is floored at
    :data:`MIN_LOG_DECAY`, so ``1 / P_s`` stays finite.
    """
    b, k, d, _ = u.shape
    n = A.shape[-1]
    # time-major chunks (split once: slicing inside the loop would make the backward pass quadratic)
    drive_in = (delta * u).permute(3, 0, 1, 2).contiguous().unsqueeze(-1).split(CHUNK)  # (t, b, k, d, 1) each
    steps = delta.permute(3, 0, 1, 2).contiguous().unsqueeze(-1).split(CHUNK)
    B = B.permute(3, 0, 1, 2).contiguous().unsqueeze(3).split(CHUNK)  # (t, b, k, 1, n)
    C = C.permute(3, 0, 1, 2).contiguous().split(CHUNK)  # (t, b, k, n)
    lower = torch.ones(CHUNK, CHUNK, dtype=u.dtype, device=u.device).tril_()
    h = u.new_zeros(b, k, d, n)
    ys = []
    for step, drive, b_t, c_t in zip(steps, drive_in, B, C):
        t = len(step)
        tri = lower[:t, :t]
        log_p = (tri @ (step * A).clamp(min=MIN_LOG_DECAY).reshape(t, -1)).view(t, b, k, d, n)
        # multiply by exp(-log P) rather than divide by P: the backward of a division squares P
        states = log_p.exp() * ((tri @ (drive * b_t * torch.exp(-log_p)).reshape(t, -1)).view(t, b, k, d, n) + h)
        ys.append(torch.einsum("tbkdn,tbkn->tbkd", states, c_t))
        h = states[-1]
    return torch.cat(ys).permute(1, 2, 3, 0) + D.unsqueeze(-1) * u


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, d, H, W) -> (B, 4, d, H*W): row-major, column-major, and both reversed.

    Parameters
    ----------
    x : Tensor (B, d, H, W)
        Feature map.

    Examples
    --------
    >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
    >>> cross_scan(x)[0, :, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 1.0, 3.0], [3.0, 2.0, 1.0, 0.0], [3.0, 1.0, 2.0, 0.0]]
    >>> cross_merge(cross_scan(x), (2, 2))[0, 0].tolist()          # each direction puts it back
    [0.0, 4.0, 8.0, 12.0]
    """
    rows, cols = x.flatten(2), x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], 1)


def cross_merge(y: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`cross_scan`, summing the four directions: (B, 4, d, L) -> (B, d, L).

    Parameters
    ----------
    y : Tensor (B, 4, d, H*W)
        One sequence per scan direction, in that direction's order.
    hw : (int, int)
        The grid (H, W); the result is row-major.
    """
    h, w = hw
    rows = y[:, 0] + y[:, 2].flip(-1)
    cols = (y[:, 1] + y[:, 3].flip(-1)).unflatten(-1, (w, h)).transpose(-1, -2).flatten(-2)
    return rows + cols


class SS2D(nn.Module):
    """2D selective scan (VMamba's SS2D) on tokens: in-projection with a gate, depth-wise conv,
    four-direction selective scan, LayerNorm, gating, out-projection."""

    stage_role = "ssm"

    def __init__(self, dim: int, *, expand: int = 2, d_state: int = 4, dt_rank: int | None = None) -> None:
        super().__init__()
        d = expand * dim
        r = dt_rank or max(1, math.ceil(dim / 16))
        self.d_state, self.dt_rank = d_state, r
        self.in_proj = nn.Linear(dim, 2 * d, bias=False)
        self.conv = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.x_proj = nn.Parameter(torch.randn(DIRECTIONS, r + 2 * d_state, d) / math.sqrt(d))
        self.dt_proj = nn.Parameter((torch.rand(DIRECTIONS, d, r) * 2 - 1) / math.sqrt(r))
        dt = torch.exp(torch.rand(DIRECTIONS, d) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt): Mamba's init
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(DIRECTIONS, d, 1))
        self.D = nn.Parameter(torch.ones(DIRECTIONS, d))
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, dim, bias=False)

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The block on tokens.

        Parameters
        ----------
        t : Tensor (B, H*W, dim)
            Tokens (row-major).
        hw : (int, int)
            Their grid (H, W).
        """
        x, z = self.in_proj(t).chunk(2, -1)
        xs = cross_scan(F.silu(self.conv(to_grid(x, hw))))
        dt, B, C = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj).split(
            [self.dt_rank, self.d_state, self.d_state], 2)
        delta = F.softplus(torch.einsum("bkrl,kdr->bkdl", dt, self.dt_proj) + self.dt_bias.unsqueeze(-1))
        y = cross_merge(selective_scan(xs, delta, -torch.exp(self.A_log), B, C, self.D), hw)
        return self.out_proj(self.out_norm(y.transpose(1, 2)) * F.silu(z))


def vss_layer(dim: int, depth: int, d_state: int) -> nn.Sequential:
    """``depth`` visual state-space blocks (pre-norm residual SS2D).

    Parameters
    ----------
    dim : int
        Channels.
    depth : int
        Number of blocks.
    d_state : int
        State size of each selective scan.
    """
    return nn.Sequential(*(TokenBlock(dim, SS2D(dim, d_state=d_state)) for _ in range(depth)))


def vm_unet(dims: Sequence[int] = (8, 16, 32, 64), depths: Sequence[int] = (1, 1, 1, 1), d_state: int = 4,
            patch: int = 4, *, in_channels: int = 3) -> UShape:
    """VM-UNet, compact: VSS stages with patch merging, patch-expanding decoder with added skips.

    Parameters
    ----------
    dims : sequence of int
        Channels per level, finest first; the last level is the bottleneck.
    depths : sequence of int
        VSS blocks per level.
    d_state : int
        State size of the selective scans.
    patch : int
        Side of the first patch embedding.
    in_channels : int
        Channels of the input image.
    """
    return patch_unet(dims, lambda i: vss_layer(dims[i], depths[i], d_state), patch=patch, join="add",
                      in_channels=in_channels)
