"""Token-MLP architectures: UNeXt (shifted MLPs) and U-KAN (Kolmogorov-Arnold layers).

Both share one skeleton (Valanarasu & Patel, MICCAI 2022; Li et al., AAAI 2025): three
convolutional stages at full, 1/2 and 1/4 resolution, then tokenised stages at 1/8 and 1/16 whose
token mixing is point-wise (MLP or KAN) plus a 3x3 depth-wise conv, and a decoder that adds the skips.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import UShape
from ._blocks import ConvBNAct, Head, MixFFN, PatchEmbed, TokenBlock, UpBlock, positive_int


class KANLinear(nn.Module):
    """Kolmogorov-Arnold layer with a Gaussian radial-basis grid (FastKAN, Li 2024), pure torch.

    y = W_base silu(x) + W_spline phi(LayerNorm(x)), where phi evaluates ``grid`` Gaussian bumps
    centred on [-2, 2] per input feature: every input-output edge carries its own learnable
    univariate function instead of a scalar weight.
    """

    def __init__(self, cin: int, cout: int, grid: int = 6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cin)
        self.register_buffer("centers", torch.linspace(-2.0, 2.0, grid))
        self.inv_width = (grid - 1) / 4.0
        self.spline = nn.Linear(cin * grid, cout, bias=False)
        self.base = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on the last axis.

        Parameters
        ----------
        x : Tensor (..., cin)
            Features (tokens).
        """
        phi = torch.exp(-((self.norm(x).unsqueeze(-1) - self.centers) * self.inv_width) ** 2)
        return self.base(F.silu(x)) + self.spline(phi.flatten(-2))


class TokenStage(nn.Sequential):
    """Tokenised stage: overlapping patch embedding (stride 2) then token-mixing blocks."""

    def __init__(self, cin: int, cout: int, blocks: int, **mixer: object) -> None:
        super().__init__(PatchEmbed(cin, cout), *(token_block(cout, **mixer) for _ in range(blocks)))


class TokenMixer(MixFFN):
    """The point-wise token mixer of UNeXt / U-KAN (a :class:`MixFFN` used as the block's mixer)."""

    stage_role = "mixer"


def token_block(dim: int, **mixer: object) -> TokenBlock:
    """A :class:`TokenBlock` whose mixer is a :class:`TokenMixer` of width `dim`.

    Parameters
    ----------
    dim : int
        Channels.
    **mixer
        Options of :class:`TokenMixer` (``shift=``, ``linear=``).
    """
    return TokenBlock(dim, TokenMixer(dim, dim, **mixer))


def token_unet(channels: Sequence[int] = (8, 16, 32, 64, 96), blocks: int = 1, *, in_channels: int = 3,
               **mixer: object) -> UShape:
    """The UNeXt / U-KAN skeleton; ``mixer`` options go to :class:`TokenMixer`.

    Parameters
    ----------
    channels : sequence of 5 ints
        Channels of the three convolutional stages, the tokenised stage and the bottleneck.
    blocks : int
        Token blocks per tokenised stage.
    in_channels : int
        Channels of the input image.
    **mixer
        Options of :class:`TokenMixer` (``shift=`` for UNeXt, ``linear=`` for U-KAN).
    """
    c1, c2, c3, c4, c5 = channels
    encoders = [ConvBNAct(positive_int(in_channels), c1), nn.Sequential(nn.MaxPool2d(2), ConvBNAct(c1, c2)),
                nn.Sequential(nn.MaxPool2d(2), ConvBNAct(c2, c3)),
                TokenStage(c3, c4, blocks, **mixer)]
    decoders = [UpBlock(ConvBNAct(c2, c1, k=1), ConvBNAct(c1, c1), join="add"),
                UpBlock(ConvBNAct(c3, c2, k=1), ConvBNAct(c2, c2), join="add"),
                UpBlock(ConvBNAct(c4, c3, k=1), ConvBNAct(c3, c3), join="add"),
                UpBlock(ConvBNAct(c5, c4, k=1), token_block(c4, **mixer), join="add")]
    return UShape(encoders, TokenStage(c4, c5, blocks, **mixer), decoders, Head(c1))


def unext(channels: Sequence[int] = (8, 16, 32, 64, 96), blocks: int = 1, shift: int = 5, *,
          in_channels: int = 3) -> UShape:
    """UNeXt: tokenised shifted-MLP blocks (channel groups rolled along H, then W).

    Parameters
    ----------
    channels, blocks, in_channels
        As in :func:`token_unet`.
    shift : int
        Channel groups rolled by different offsets (:class:`~pdcr_lab.zoo._blocks.MixFFN`).

    Examples
    --------
    >>> net = unext(channels=(4, 4, 8, 8, 8))
    >>> tuple(net(torch.zeros(1, 3, 32, 32)).shape)
    (1, 1, 32, 32)
    >>> tuple(unext(channels=(4, 4, 8, 8, 8), in_channels=1)(torch.zeros(1, 1, 32, 32)).shape)
    (1, 1, 32, 32)
    """
    return token_unet(channels, blocks, in_channels=in_channels, shift=shift)


def ukan(channels: Sequence[int] = (8, 16, 32, 48, 64), blocks: int = 1, grid: int = 6, *,
         in_channels: int = 3) -> UShape:
    """U-KAN: tokenised KAN blocks (Gaussian-RBF KAN layers around a depth-wise conv).

    Parameters
    ----------
    channels, blocks, in_channels
        As in :func:`token_unet`.
    grid : int
        Gaussian bumps per input feature of every :class:`KANLinear`.
    """
    return token_unet(channels, blocks, in_channels=in_channels, linear=lambda cin, cout: KANLinear(cin, cout, grid))
