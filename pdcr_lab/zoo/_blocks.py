"""Building blocks shared by the zoo's own architectures (defined once, reused everywhere).

Conventions: feature maps are (B, C, H, W); token sequences are (B, L, C) with L = H * W in
row-major order. Skip connections are explicit :class:`Skip` modules so that a component analysis
can address them by module path.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn


def positive_int(value: object, name: str = "in_channels") -> int:
    """`value` as an ``int``, checked to be a positive integer (builders' channel counts).

    Parameters
    ----------
    value : object
        The value given for `name`.
    name : str
        The argument's name, for the error message.

    Raises
    ------
    ValueError
        If `value` is not a positive integer (bools and floats such as ``1.0`` are refused too).

    Examples
    --------
    >>> positive_int(1)
    1
    >>> positive_int(1.5)
    Traceback (most recent call last):
    ...
    ValueError: in_channels=1.5 is not valid; expected a positive integer
    """
    # bool is an Integral, but in_channels=True is a mistake, not one channel
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; expected a positive integer")
    return int(value)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU (or no activation with ``act=False``)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, *, groups: int = 1,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 :class:`ConvBNAct` (the U-Net / SegNet stage); the first one may stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(ConvBNAct(cin, cout, stride=stride), ConvBNAct(cout, cout))


class ResBlock(nn.Module):
    """Basic residual block (two 3x3 convs), as in ResNet-18 / HRNet branches."""

    def __init__(self, cin: int, cout: int | None = None, stride: int = 1) -> None:
        super().__init__()
        cout = cout or cin
        self.body = nn.Sequential(ConvBNAct(cin, cout, stride=stride), ConvBNAct(cout, cout, act=False))
        self.short = (nn.Identity() if cin == cout and stride == 1
                      else ConvBNAct(cin, cout, k=1, stride=stride, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(body(x) + shortcut(x)).

        Parameters
        ----------
        x : Tensor (B, cin, H, W)
            Feature map.
        """
        return F.relu(self.body(x) + self.short(x))


class Skip(nn.Identity):
    """A skip connection, made a module so that its features have a module path."""


def up_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``like``.

    Parameters
    ----------
    x : Tensor (B, C, h, w)
        Map to resize (returned as is when it already has the size).
    like : Tensor (..., H, W)
        Map whose spatial size is wanted.

    Examples
    --------
    >>> tuple(up_to(torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 8, 8)).shape)
    (1, 4, 8, 8)
    """
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class UpBlock(nn.Module):
    """Decoder stage: bring ``x`` to the skip's resolution, join the skip, then a body.

    ``proj`` maps ``x`` before the join (identity, a 1x1 conv, or a patch-expanding layer); ``x``
    is then bilinearly resized to the skip's size if needed. ``join`` is "cat" (concatenate,
    U-Net) or "add" (UNeXt, VM-UNet). Use :func:`conv_up` for the plain U-Net decoder stage.
    """

    def __init__(self, proj: nn.Module, body: nn.Module, *, join: str = "cat") -> None:
        super().__init__()
        if join not in ("cat", "add"):
            raise ValueError(f"join={join!r} is not supported; expected 'cat' or 'add'")
        self.proj, self.body, self.join = proj, body, join

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Project `x`, resize it to `skip`'s size, join the two and run the body.

        Parameters
        ----------
        x : Tensor (B, C, h, w)
            Output of the coarser stage.
        skip : Tensor (B, C_skip, H, W)
            The skip connection of this level.
        """
        x = up_to(self.proj(x), skip)
        x = torch.cat([x, skip], 1) if self.join == "cat" else x + skip
        return self.body(x)


def conv_up(cin: int, cskip: int, cout: int) -> UpBlock:
    """U-Net decoder stage: upsample, concatenate the skip, :class:`DoubleConv`.

    Parameters
    ----------
    cin : int
        Channels coming from the coarser stage.
    cskip : int
        Channels of the skip connection.
    cout : int
        Output channels.

    Examples
    --------
    >>> stage = conv_up(8, 4, 4)
    >>> tuple(stage(torch.zeros(1, 8, 4, 4), torch.zeros(1, 4, 8, 8)).shape)
    (1, 4, 8, 8)
    """
    return UpBlock(nn.Identity(), DoubleConv(cin + cskip, cout))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major.

    Parameters
    ----------
    x : Tensor (B, C, H, W)
        Feature map.

    Examples
    --------
    >>> tokens = to_tokens(torch.arange(8.0).reshape(1, 2, 2, 2))
    >>> tuple(tokens.shape), tokens[0, 1].tolist()          # token 1 = pixel (0, 1), both channels
    ((1, 4, 2), [1.0, 5.0])
    >>> bool((to_grid(tokens, (2, 2)) == torch.arange(8.0).reshape(1, 2, 2, 2)).all())
    True
    """
    return x.flatten(2).transpose(1, 2)


def to_grid(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W).

    Parameters
    ----------
    t : Tensor (B, H*W, C)
        Tokens in row-major order.
    hw : (int, int)
        The grid (H, W).
    """
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *hw)


class PatchEmbed(nn.Module):
    """Overlapping patch embedding / merging: strided conv followed by LayerNorm over channels.

    Used as SegFormer's overlapping patch merging, as the tokeniser of UNeXt / U-KAN and as the
    patch embedding of the ViT, Swin and VM-UNet models. Returns a (B, C, H', W') map.
    """

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, k, stride, k // 2 if k > stride else 0)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Strided projection, then LayerNorm over channels.

        Parameters
        ----------
        x : Tensor (B, cin, H, W)
            Feature map (or image).
        """
        x = self.proj(x)
        return to_grid(self.norm(to_tokens(x)), x.shape[-2:])


class PatchExpand(nn.Module):
    """Swin-UNet / VM-UNet patch expanding: linear to ``scale**2 * cout`` then pixel shuffle."""

    def __init__(self, cin: int, cout: int, scale: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout * scale * scale, 1, bias=False)
        self.shuffle = nn.PixelShuffle(scale)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, scale H, scale W).

        Parameters
        ----------
        x : Tensor (B, cin, H, W)
            Feature map.
        """
        x = self.shuffle(self.proj(x))
        return to_grid(self.norm(to_tokens(x)), x.shape[-2:])


class DWConv(nn.Module):
    """Depth-wise 3x3 conv applied to a token sequence laid out on an (H, W) grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The convolution on the tokens' grid, returned as tokens.

        Parameters
        ----------
        t : Tensor (B, H*W, dim)
            Tokens.
        hw : (int, int)
            Their grid (H, W).
        """
        return to_tokens(self.conv(to_grid(t, hw)))


class MixFFN(nn.Module):
    """fc1 -> depth-wise conv -> GELU -> fc2 on tokens (SegFormer's Mix-FFN, UNeXt's MLP core).

    ``shift`` > 0 turns it into UNeXt's shifted MLP: the channels are split into ``shift`` groups
    and each group is rolled by a different offset along H before fc1 and along W before fc2, so
    the otherwise point-wise MLP mixes a local axial neighbourhood of tokens.
    ``dw=False`` gives the plain ViT MLP. ``linear`` builds the two token-wise layers
    (``nn.Linear`` by default; U-KAN passes a KAN layer).
    """

    def __init__(self, dim: int, hidden: int, *, shift: int = 0, dw: bool = True,
                 linear: type[nn.Module] = nn.Linear) -> None:
        super().__init__()
        self.fc1 = linear(dim, hidden)
        self.dw = DWConv(hidden) if dw else None
        self.fc2 = linear(hidden, dim)
        self.shift = shift

    def _roll(self, t: torch.Tensor, hw: tuple[int, int], axis: int) -> torch.Tensor:
        if not self.shift:
            return t
        x = to_grid(t, hw)
        chunks = torch.chunk(x, self.shift, 1)
        offsets = range(-(self.shift // 2), self.shift - self.shift // 2)
        x = torch.cat([torch.roll(c, o, axis) for c, o in zip(chunks, offsets)], 1)
        return to_tokens(x)

    def forward(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The feed-forward block on tokens.

        Parameters
        ----------
        t : Tensor (B, H*W, dim)
            Tokens.
        hw : (int, int)
            Their grid (H, W), for the depth-wise conv and the shifts.
        """
        t = self.fc1(self._roll(t, hw, 2))
        t = F.gelu(self.dw(t, hw) if self.dw is not None else t)
        return self.fc2(self._roll(t, hw, 3))


class TokenBlock(nn.Module):
    """Pre-norm residual block on a (B, C, H, W) map seen as tokens: ``x + mixer(norm(x))``
    followed (optionally) by ``x + ffn(norm(x))``. Mixers and FFNs take ``(tokens, hw)``."""

    def __init__(self, dim: int, mixer: nn.Module, ffn: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim) if ffn is not None else None
        self.ffn = ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual mixer (and FFN) on the map's tokens; returns a map of the same shape.

        Parameters
        ----------
        x : Tensor (B, dim, H, W)
            Feature map.
        """
        hw = x.shape[-2:]
        t = to_tokens(x)
        t = t + self.mixer(self.norm1(t), hw)
        if self.ffn is not None:
            t = t + self.ffn(self.norm2(t), hw)
        return to_grid(t, hw)


class Head(nn.Sequential):
    """Final 1x1 conv to one logit channel."""

    def __init__(self, cin: int) -> None:
        super().__init__(nn.Conv2d(cin, 1, 1))
