"""The zoo's model contract (:class:`ZooModel`) and the U-shaped skeleton of its own architectures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import WindowAttention
from torch import nn

from ._blocks import Head, PatchEmbed, PatchExpand, Skip, UpBlock, positive_int

#: Roles a stage can have in :meth:`ZooModel.stages`.
ROLES = ("stem", "encoder", "skip", "bottleneck", "decoder", "fusion", "attention", "mixer", "ssm", "head")


class UShape(nn.Module):
    """Encoder-decoder skeleton: ``enc1..encN`` -> ``bottleneck`` -> ``decN..dec1`` -> ``head``.

    Encoder stage ``enc{i}`` downsamples as it likes; its output goes through ``skip{i}`` (a
    :class:`Skip`) into decoder stage ``dec{i}``, which is called as ``dec(x, skip)``. The head's
    output is resized to the input size if it is smaller (patch-based models).

    Parameters
    ----------
    encoders : sequence of nn.Module
        ``enc1..encN``, input to bottleneck.
    bottleneck : nn.Module
        The deepest stage.
    decoders : sequence of nn.Module
        ``dec1..decN`` in the same order as the encoders (``dec{i}`` takes ``skip{i}``); each is
        called as ``dec(x, skip)``.
    head : nn.Module
        Maps the last decoder output to (B, 1, h, w) logits.
    """

    def __init__(self, encoders: Sequence[nn.Module], bottleneck: nn.Module, decoders: Sequence[nn.Module],
                 head: nn.Module) -> None:
        super().__init__()
        if len(encoders) != len(decoders):
            raise ValueError(f"got {len(encoders)} encoder and {len(decoders)} decoder stages; they must pair up")
        self.depth = len(encoders)
        for i, (enc, dec) in enumerate(zip(encoders, decoders), 1):
            self.add_module(f"enc{i}", enc)
            self.add_module(f"skip{i}", Skip())
        self.bottleneck = bottleneck
        for i in range(self.depth, 0, -1):
            self.add_module(f"dec{i}", decoders[i - 1])
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size.

        Parameters
        ----------
        x : Tensor (B, C, H, W)
            The (normalised) input.
        """
        size = x.shape[-2:]
        skips = []
        for i in range(1, self.depth + 1):
            x = getattr(self, f"enc{i}")(x)
            skips.append(getattr(self, f"skip{i}")(x))
        x = self.bottleneck(x)
        for i in range(self.depth, 0, -1):
            x = getattr(self, f"dec{i}")(x, skips[i - 1])
        x = self.head(x)
        return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def stage_roles(self) -> dict[str, str]:
        """``{stage name: role}`` of every stage, in encoder, bottleneck, decoder, head order."""
        roles = {f"enc{i}": "encoder" for i in range(1, self.depth + 1)}
        roles |= {f"skip{i}": "skip" for i in range(1, self.depth + 1)}
        roles |= {"bottleneck": "bottleneck"} | {f"dec{i}": "decoder" for i in range(self.depth, 0, -1)}
        return roles | {"head": "head"}


def patch_unet(dims: Sequence[int], block: Callable[[int], nn.Module], *, patch: int = 4,
               join: str = "cat", in_channels: int = 3) -> UShape:
    """Token U-Net of Swin-UNet / VM-UNet: ``patch`` x ``patch`` patch embedding, then one stage per
    entry of ``dims`` (the last one is the bottleneck), 2x2 patch merging down, patch expanding up.

    Parameters
    ----------
    dims : sequence of int
        Channels of each level, finest first; the last level is the bottleneck.
    block : callable(level) -> nn.Module
        Builds the token blocks of level ``i`` (called for the encoder and again for the decoder).
    patch : int
        Side of the first patch embedding (the resolution of level 0 is 1 / patch).
    join : {"cat", "add"}
        ``"cat"``: the decoder concatenates the skip and projects back with a 1x1 conv before the
        blocks; ``"add"``: it adds the skip.
    in_channels : int
        Channels of the input image (positive).

    Examples
    --------
    >>> net = patch_unet([8, 16], lambda i: torch.nn.Identity(), patch=4)
    >>> tuple(net(torch.zeros(1, 3, 32, 32)).shape), list(net.stage_roles())
    ((1, 1, 32, 32), ['enc1', 'skip1', 'bottleneck', 'dec1', 'head'])
    >>> tuple(patch_unet([8, 16], lambda i: torch.nn.Identity(), in_channels=1)(torch.zeros(1, 1, 32, 32)).shape)
    (1, 1, 32, 32)
    """
    n = len(dims) - 1
    in_channels = positive_int(in_channels)
    stages = [nn.Sequential(PatchEmbed(in_channels if i == 0 else dims[i - 1], dims[i], k=patch if i == 0 else 2,
                                       stride=patch if i == 0 else 2), block(i)) for i in range(n + 1)]

    def body(i: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(2 * dims[i], dims[i], 1), block(i)) if join == "cat" else block(i)

    decoders = [UpBlock(PatchExpand(dims[i + 1], dims[i]), body(i), join=join) for i in range(n)]
    head = nn.Sequential(PatchExpand(dims[0], dims[0], patch), Head(dims[0]))
    return UShape(stages[:n], stages[n], decoders, head)


#: Per-channel normalisation of a :class:`ZooModel` built without ``mean`` / ``std``.
DEFAULT_MEAN, DEFAULT_STD = 0.5, 0.25
#: What every spatial side of a :class:`ZooModel`'s input must be divisible by, by spatial dimensions:
#: the 2-D architectures downsample up to 32x; the 3-D ones 8x (16 leaves room for one more level).
MULTIPLES = {2: 32, 3: 16}


class ZooModel(nn.Module):
    """A zoo segmentation model: C-channel image in [0, 1] -> foreground probability.

    Parameters
    ----------
    net : nn.Module
        The architecture, kept as ``self.net``; it maps a normalised (B, C, H, W) image to
        (B, 1, H, W) logits, or with ``net.spatial_dims == 3`` a (B, C, D, H, W) volume to
        (B, 1, D, H, W) logits.
    name : str
        Registry name of the architecture.
    mean, std : sequence of C floats, optional
        Per-channel input normalisation, applied inside :meth:`forward` (stored as buffers, so
        they travel with the checkpoint). Their length is the model's channel count C; one
        left out is :data:`DEFAULT_MEAN` / :data:`DEFAULT_STD` on every channel.
    channels : int, optional
        The channel count C, a shortcut for the default `mean` and `std` on C channels; when
        given with them, it must equal their length. Without any of the three, C = 3 (RGB).

    Notes
    -----
    ``forward`` returns probabilities (sigmoid applied), so PdCR thresholds them at 0.5 like the
    paper. Input height and width must be divisible by 32; a 3-D model's depth, height and width
    by 16 (:data:`MULTIPLES`). ``spatial_dims`` (2 or 3) says which rank a model takes.

    Examples
    --------
    >>> net = torch.nn.Conv2d(3, 1, 1)
    >>> model = ZooModel(net, name="tiny")
    >>> probs = model(torch.rand(2, 3, 32, 32))
    >>> tuple(probs.shape), bool(((probs > 0) & (probs < 1)).all())
    ((2, 1, 32, 32), True)
    >>> model(torch.rand(1, 3, 30, 30))
    Traceback (most recent call last):
    ...
    ValueError: tiny: input height and width must be divisible by 32, got 30x30
    >>> gray = ZooModel(torch.nn.Conv2d(1, 1, 1), name="gray", channels=1)
    >>> gray.channels, tuple(gray(torch.rand(2, 1, 32, 32)).shape)
    (1, (2, 1, 32, 32))
    >>> gray(torch.rand(2, 3, 32, 32))
    Traceback (most recent call last):
    ...
    ValueError: gray: input must be a (B, 1, H, W) tensor, got (2, 3, 32, 32) (this model takes 1 channel)
    >>> cube = torch.nn.Conv3d(1, 1, 1)
    >>> cube.spatial_dims = 3
    >>> volume = ZooModel(cube, name="cube", channels=1)
    >>> volume.spatial_dims, tuple(volume(torch.rand(2, 1, 16, 32, 16)).shape)
    (3, (2, 1, 16, 32, 16))
    >>> volume(torch.rand(2, 1, 32, 32))
    Traceback (most recent call last):
    ...
    ValueError: cube: input must be a (B, 1, D, H, W) tensor, got (2, 1, 32, 32) (this model takes 1 channel)
    """

    multiple = 32

    def __init__(self, net: nn.Module, *, name: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, channels: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.spatial_dims = int(getattr(net, "spatial_dims", 2))
        if self.spatial_dims not in MULTIPLES:
            raise ValueError(f"{name}: net.spatial_dims={self.spatial_dims} is not valid; expected 2 or 3")
        self.multiple = MULTIPLES[self.spatial_dims]
        # the buffers broadcast over the spatial axes (a 2-D model's keep their (1, C, 1, 1) shape)
        shape = (1, -1) + (1,) * self.spatial_dims
        mean_t, std_t = _normalisation(mean, std, channels)
        self.register_buffer("mean", mean_t.view(shape))
        self.register_buffer("std", std_t.view(shape))
        self._stages: dict[str, str] | None = None

    @property
    def channels(self) -> int:
        """Input channels C the model takes (the length of its ``mean`` / ``std``)."""
        return self.mean.shape[1]

    def _check(self, x: torch.Tensor) -> None:
        c, volume = self.channels, self.spatial_dims == 3
        if not isinstance(x, torch.Tensor) or x.ndim != 2 + self.spatial_dims or x.shape[1] != c:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.name}: input must be a (B, {c}, {'D, ' if volume else ''}H, W) tensor, got {shape} "
                             f"(this model takes {c} channel{'s' if c > 1 else ''})")
        sides = x.shape[2:]
        if any(side % self.multiple for side in sides):
            names = "depth, height and width" if volume else "height and width"
            raise ValueError(f"{self.name}: input {names} must be divisible by {self.multiple}, "
                             f"got {'x'.join(map(str, sides))}")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image in [0, 1] -> (B, 1, H, W) logits ((B, C, D, H, W) for a 3-D model).

        Parameters
        ----------
        x : Tensor (B, C, H, W) or (B, C, D, H, W)
            Images in [0, 1]; every spatial side divisible by :attr:`multiple`.
        """
        self._check(x)
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image in [0, 1] -> (B, 1, H, W) foreground probabilities ((B, C, D, H, W) in 3-D).

        Parameters
        ----------
        x : Tensor (B, C, H, W) or (B, C, D, H, W)
            Images in [0, 1]; every spatial side divisible by :attr:`multiple`.
        """
        return torch.sigmoid(self.logits(x))

    def stages(self) -> dict[str, str]:
        """Main stages as ``{module path: role}``, input to output.

        Paths are relative to this model (``"net.enc1"``, ``"net.bottleneck"``...), so
        ``model.get_submodule(path)`` finds them; ``list(model.stages())`` gives the paths alone.
        Roles are listed in :data:`ROLES`. The order is the order in which the modules' forward
        passes finish on a dummy input, so an attention, mixer or state-space block comes just
        before the stage that contains it, and a MONAI skip-connection module (which wraps the
        deeper levels) comes after them.
        """
        if self._stages is None:
            self._stages = _ordered_stages(self)
        return dict(self._stages)


def _normalisation(mean: Sequence[float] | None, std: Sequence[float] | None,
                   channels: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as float32 vectors of one length C, checked against each other and `channels`."""
    given = {k: _vector(k, v) for k, v in (("mean", mean), ("std", std)) if v is not None}
    lengths = {len(v) for v in given.values()}
    if len(lengths) > 1:
        raise ValueError(f"mean has {len(given['mean'])} entries and std {len(given['std'])}; "
                         "they must have one entry per input channel")
    c = lengths.pop() if lengths else None
    if channels is not None:
        channels = positive_int(channels, "channels")
        if c is not None and c != channels:
            raise ValueError(f"channels={channels} disagrees with the {c} per-channel entries of "
                             f"{' and '.join(given)}")
        c = channels
    c = 3 if c is None else c
    defaults = {"mean": DEFAULT_MEAN, "std": DEFAULT_STD}
    mean_t, std_t = (given.get(k, torch.full((c,), v, dtype=torch.float32)) for k, v in defaults.items())
    return mean_t, std_t


def _vector(name: str, values: Sequence[float]) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32)
    if t.ndim != 1 or not len(t):
        raise ValueError(f"{name} must be a non-empty sequence of per-channel values, got shape {tuple(t.shape)}")
    return t.detach().clone()


#: Roles of library blocks found inside the stages (our own blocks carry a ``stage_role`` attribute).
LIBRARY_ROLES: dict[type, str] = {WindowAttention: "attention"}


def _role(module: nn.Module) -> str | None:
    own = getattr(type(module), "stage_role", None)
    return own or next((r for cls, r in LIBRARY_ROLES.items() if isinstance(module, cls)), None)


#: Side of the dummy input that orders the stages (a 64^3 volume would cost more than it tells).
_PROBE = {2: 64, 3: 32}


def _ordered_stages(model: ZooModel) -> dict[str, str]:
    roles = {f"net.{k}": v for k, v in model.net.stage_roles().items()}
    for path, module in model.net.named_modules():
        role = _role(module)
        if role is not None and path:
            roles.setdefault(f"net.{path}", role)
    order: list[str] = []
    hooks = [model.get_submodule(p).register_forward_hook(lambda *_, p=p: order.append(p)) for p in roles]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            # on the model's own device and dtype, so stages() works wherever the model lives
            model(model.mean.new_zeros(1, model.channels, *(_PROBE[model.spatial_dims],) * model.spatial_dims))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    seen = dict.fromkeys(order)  # a module called twice keeps its first finishing position
    return {p: roles[p] for p in seen} | {p: r for p, r in roles.items() if p not in seen}
