"""Attention architectures: SegFormer, TransUNet and Swin-UNet, compact.

SegFormer and TransUNet attend globally (every token sees every token; SegFormer reduces only the
key/value resolution). Swin-UNet attends inside shifted local windows, built from MONAI's Swin
blocks (``monai.networks.nets.swin_unetr.BasicLayer``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import BasicLayer
from torch import nn

from ._base import UShape, patch_unet
from ._blocks import (ConvBNAct, DoubleConv, Head, MixFFN, PatchEmbed, ResBlock, TokenBlock, conv_up, positive_int,
                      to_grid, to_tokens, up_to)


class Attention(nn.Module):
    """Global multi-head self-attention on tokens.

    With ``sr`` > 1 the keys and values come from the map reduced by a strided ``sr`` x ``sr`` conv
    (SegFormer's efficient self-attention): cheaper, and still global, since every query sees a
    summary of the whole image.
    """

    stage_role = "attention"

    def __init__(self, dim: int, heads: int, sr: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.reduce = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Self-attention of every token to every (reduced) token.

        Parameters
        ----------
        t : Tensor (B, H*W, dim)
            Tokens (row-major).
        hw : (int, int)
            Their grid (H, W), for the spatial reduction.
        """
        b, n, c = t.shape
        src = t
        if self.reduce is not None:
            src = self.norm(to_tokens(self.reduce(to_grid(t, hw))))
        q = self.q(t).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(src).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def transformer_block(dim: int, heads: int, sr: int = 1, *, mlp: int = 2, dw: bool = True) -> TokenBlock:
    """Pre-norm transformer block; ``dw=True`` gives SegFormer's Mix-FFN, ``False`` the ViT MLP.

    Parameters
    ----------
    dim : int
        Channels.
    heads : int
        Attention heads (must divide `dim`).
    sr : int
        Spatial reduction of the keys and values (:class:`Attention`).
    mlp : int
        Hidden width of the feed-forward block, as a multiple of `dim`.
    dw : bool
        Depth-wise conv inside the feed-forward block.

    Examples
    --------
    >>> block = transformer_block(8, heads=2, sr=2)
    >>> tuple(block(torch.zeros(1, 8, 4, 4)).shape)
    (1, 8, 4, 4)
    """
    return TokenBlock(dim, Attention(dim, heads, sr), MixFFN(dim, mlp * dim, dw=dw))


class MLPDecoder(nn.Module):
    """SegFormer's all-MLP decoder: project every stage to ``dim`` channels, upsample to the first
    stage, concatenate, fuse with a 1x1 conv."""

    def __init__(self, dims: Sequence[int], dim: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(d, dim, 1) for d in dims)
        self.fuse = ConvBNAct(len(dims) * dim, dim, k=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Fused decoder features at the first stage's resolution.

        Parameters
        ----------
        feats : list of Tensor (B, dims[i], H_i, W_i)
            The encoder stages' outputs, finest first.
        """
        return self.fuse(torch.cat([up_to(proj(f), feats[0]) for proj, f in zip(self.proj, feats)], 1))


class SegFormer(nn.Module):
    """SegFormer (Xie et al., NeurIPS 2021), compact MiT encoder + all-MLP decoder.

    Four stages of overlapping patch merging and efficient-attention blocks (1/``stride``, then
    x2 per stage); the decoder projects every stage to ``decoder_dim`` channels, upsamples to the
    first stage, concatenates, fuses with a 1x1 conv and predicts.

    Parameters
    ----------
    dims, heads, srs, depths : sequence of int
        Channels, attention heads, key/value spatial reduction and blocks of each stage.
    stride : int
        Stride of the first patch merging (the later ones stride 2).
    decoder_dim : int
        Channels of the all-MLP decoder.
    in_channels : int
        Channels of the input image.
    """

    def __init__(self, dims: Sequence[int] = (16, 32, 64, 96), heads: Sequence[int] = (1, 2, 4, 4),
                 srs: Sequence[int] = (8, 4, 2, 1), depths: Sequence[int] = (1, 1, 1, 1), stride: int = 4,
                 decoder_dim: int = 48, *, in_channels: int = 3) -> None:
        super().__init__()
        self.depth = len(dims)
        ins = (positive_int(in_channels), *dims[:-1])
        for i in range(self.depth):
            embed = PatchEmbed(ins[i], dims[i], k=2 * stride - 1 if i == 0 else 3, stride=stride if i == 0 else 2)
            blocks = (transformer_block(dims[i], heads[i], srs[i]) for _ in range(depths[i]))
            self.add_module(f"enc{i + 1}", nn.Sequential(embed, *blocks))
        self.decoder = MLPDecoder(dims, decoder_dim)
        self.head = Head(decoder_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size.

        Parameters
        ----------
        x : Tensor (B, in_channels, H, W)
            Normalised images.
        """
        size = x.shape[-2:]
        feats = []
        for i in range(1, self.depth + 1):
            x = getattr(self, f"enc{i}")(x)
            feats.append(x)
        y = self.head(self.decoder(feats))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    def stage_roles(self) -> dict[str, str]:
        return ({f"enc{i}": "encoder" for i in range(1, self.depth + 1)}
                | {"decoder": "decoder", "head": "head"})


class ViT(nn.Module):
    """ViT bottleneck: 2x2 patch embedding, learned positional embedding (resized bicubically to
    the token grid, so any input size works) and global-attention transformer blocks."""

    def __init__(self, cin: int, dim: int, depth: int, heads: int, grid: int = 6) -> None:
        super().__init__()
        self.embed = PatchEmbed(cin, dim, k=2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.blocks = nn.Sequential(*(transformer_block(dim, heads, dw=False) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer blocks on the 2x2 patches of `x`; returns a (B, dim, H/2, W/2) map.

        Parameters
        ----------
        x : Tensor (B, cin, H, W)
            Feature map.
        """
        x = self.embed(x)
        pos = self.pos
        if pos.shape[-2:] != x.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return self.blocks(x + pos)


def transunet(channels: Sequence[int] = (8, 16, 32, 64), dim: int = 96, depth: int = 2, heads: int = 4, *,
              in_channels: int = 3) -> UShape:
    """TransUNet (Chen et al., 2021), compact: residual CNN stem to 1/8, ViT bottleneck at 1/16 with
    global attention, cascaded upsampler that concatenates the CNN skips.

    Parameters
    ----------
    channels : sequence of 4 ints
        Channels of the CNN stages.
    dim : int
        Token width of the ViT bottleneck.
    depth : int
        Transformer blocks in the bottleneck.
    heads : int
        Attention heads.
    in_channels : int
        Channels of the input image.
    """
    c1, c2, c3, c4 = channels
    encoders = [DoubleConv(positive_int(in_channels), c1), ResBlock(c1, c2, stride=2), ResBlock(c2, c3, stride=2), ResBlock(c3, c4, stride=2)]
    decoders = [conv_up(c2, c1, c1), conv_up(c3, c2, c2), conv_up(c4, c3, c3), conv_up(dim, c4, c4)]
    return UShape(encoders, ViT(c4, dim, depth, heads), decoders, Head(c1))


def swin_layer(dim: int, heads: int, depth: int, window: int) -> BasicLayer:
    """``depth`` Swin blocks (window attention, alternately shifted by half a window), from MONAI.

    Parameters
    ----------
    dim : int
        Channels.
    heads : int
        Attention heads.
    depth : int
        Number of blocks.
    window : int
        Window side in tokens.
    """
    return BasicLayer(dim=dim, depth=depth, num_heads=heads, window_size=(window, window),
                      drop_path=[0.0] * depth, qkv_bias=True, downsample=None)


def swin_unet(dims: Sequence[int] = (12, 24, 48, 96), heads: Sequence[int] = (1, 2, 4, 8),
              depths: Sequence[int] = (2, 2, 2, 2), window: int = 6, patch: int = 4, *,
              in_channels: int = 3) -> UShape:
    """Swin-UNet (Cao et al., ECCV-W 2022), compact: a pure transformer U-Net of shifted-window
    attention stages; patch merging down, patch expanding up, concatenated skips.
    The last entry of ``dims`` is the bottleneck.

    Parameters
    ----------
    dims : sequence of int
        Channels per level, finest first.
    heads : sequence of int
        Attention heads per level.
    depths : sequence of int
        Swin blocks per level.
    window : int
        Attention window side in tokens.
    patch : int
        Side of the first patch embedding.
    in_channels : int
        Channels of the input image.
    """
    return patch_unet(dims, lambda i: swin_layer(dims[i], heads[i], depths[i], window), patch=patch, join="cat",
                      in_channels=in_channels)
