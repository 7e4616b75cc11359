"""Convolutional architectures no library ships: SegNet and a compact HRNet."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import ConvBNAct, DoubleConv, Head, ResBlock, positive_int, up_to


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al., TPAMI 2017), compact.

    Encoder stages (two 3x3 convs, then 2x2 max-pooling that remembers its argmax indices) and a
    mirrored decoder that upsamples with max-unpooling at those indices. No feature maps cross from
    encoder to decoder, only the pooling indices: boundaries come back through *where* the maxima
    were, which keeps the decoder local and shape-driven.

    Parameters
    ----------
    channels : sequence of int
        Channels of the encoder stages, finest first.
    in_channels : int
        Channels of the input image.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 64), *, in_channels: int = 3) -> None:
        super().__init__()
        ins = (positive_int(in_channels), *channels[:-1])
        self.depth = len(channels)
        for i, (cin, cout) in enumerate(zip(ins, channels), 1):
            self.add_module(f"enc{i}", DoubleConv(cin, cout))
        self.bottleneck = DoubleConv(channels[-1], channels[-1])
        for i in range(self.depth, 0, -1):
            self.add_module(f"dec{i}", DoubleConv(channels[i - 1], channels[max(i - 2, 0)]))
        self.head = Head(channels[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size.

        Parameters
        ----------
        x : Tensor (B, in_channels, H, W)
            Normalised images; H and W divisible by 2 ** len(channels).
        """
        pools = []
        for i in range(1, self.depth + 1):
            x = getattr(self, f"enc{i}")(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            pools.append((idx, size))
        x = self.bottleneck(x)
        for i in range(self.depth, 0, -1):
            idx, size = pools[i - 1]
            x = getattr(self, f"dec{i}")(F.max_unpool2d(x, idx, 2, output_size=size))
        return self.head(x)

    def stage_roles(self) -> dict[str, str]:
        return ({f"enc{i}": "encoder" for i in range(1, self.depth + 1)} | {"bottleneck": "bottleneck"}
                | {f"dec{i}": "decoder" for i in range(self.depth, 0, -1)} | {"head": "head"})


class Fuse(nn.Module):
    """HRNet exchange unit: output branch i = ReLU(sum_j resample_{j->i}(x_j)).

    Lower-resolution inputs are projected with a 1x1 conv and bilinearly upsampled; higher-resolution
    inputs go through a chain of strided 3x3 convs.
    """

    stage_role = "fusion"

    def __init__(self, chans: Sequence[int]) -> None:
        super().__init__()
        self.paths = nn.ModuleList(nn.ModuleList(self._path(chans, j, i) for j in range(len(chans)))
                                   for i in range(len(chans)))

    @staticmethod
    def _path(chans: Sequence[int], j: int, i: int) -> nn.Module:
        if j == i:
            return nn.Identity()
        if j > i:
            return ConvBNAct(chans[j], chans[i], k=1, act=False)
        steps = [ConvBNAct(chans[j], chans[j], stride=2) for _ in range(i - j - 1)]
        return nn.Sequential(*steps, ConvBNAct(chans[j], chans[i], stride=2, act=False))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every output branch from every input branch.

        Parameters
        ----------
        xs : list of Tensor (B, chans[i], H / 2**i, W / 2**i)
            The branches, highest resolution first.
        """
        return [F.relu(sum(up_to(path(x), xs[i]) for path, x in zip(paths, xs)))
                for i, paths in enumerate(self.paths)]


class HRStage(nn.Module):
    """One HRNet stage: residual blocks on every branch, a new lower-resolution branch, fusion."""

    def __init__(self, chans_in: Sequence[int], chans_out: Sequence[int], blocks: int = 1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(ResBlock(c) for _ in range(blocks))) for c in chans_in)
        self.new = (ConvBNAct(chans_in[-1], chans_out[-1], stride=2) if len(chans_out) > len(chans_in)
                    else None)
        self.fuse = Fuse(chans_out)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Blocks on each branch, the new branch, then fusion.

        Parameters
        ----------
        xs : list of Tensor
            The input branches, highest resolution first (``chans_in`` channels).
        """
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.new is not None:
            xs.append(self.new(xs[-1]))
        return self.fuse(xs)


class HRNet(nn.Module):
    """HRNet (Wang et al., TPAMI 2020), compact: a half-resolution stem, then stages that keep a
    high-resolution branch alive while adding 1/4, 1/8 and 1/16 branches, with repeated
    multi-resolution fusion; the head concatenates all branches at 1/2 resolution.

    Parameters
    ----------
    width : int
        Channels of the highest-resolution branch (each lower one doubles them).
    stages : int
        Number of stages (and of branches).
    blocks : int
        Residual blocks per branch and stage.
    in_channels : int
        Channels of the input image.
    """

    def __init__(self, width: int = 10, stages: int = 4, blocks: int = 1, *, in_channels: int = 3) -> None:
        super().__init__()
        chans = [width * 2 ** i for i in range(stages)]
        self.stem = nn.Sequential(ConvBNAct(positive_int(in_channels), width, stride=2), ConvBNAct(width, width))
        self.n_stages = stages
        for s in range(1, stages + 1):
            self.add_module(f"stage{s}", HRStage(chans[:s], chans[:min(s + 1, stages)], blocks))
        self.head = nn.Sequential(ConvBNAct(sum(chans), 2 * width, k=1), Head(2 * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size.

        Parameters
        ----------
        x : Tensor (B, in_channels, H, W)
            Normalised images; H and W divisible by 2 ** stages.
        """
        size = x.shape[-2:]
        xs = [self.stem(x)]
        for s in range(1, self.n_stages + 1):
            xs = getattr(self, f"stage{s}")(xs)
        y = self.head(torch.cat([up_to(b, xs[0]) for b in xs], 1))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    def stage_roles(self) -> dict[str, str]:
        return ({"stem": "stem"} | {f"stage{s}": "encoder" for s in range(1, self.n_stages + 1)}
                | {"head": "head"})
