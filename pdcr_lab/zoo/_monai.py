"""MONAI networks in the zoo: thin subclasses that keep MONAI's module paths and add
``stage_roles`` (and a single-tensor output for U-Net++).

Every class takes ``spatial_dims``: 2 (images, the default) or 3 (volumes); the module paths and
stage roles are the same in both, and the net keeps ``spatial_dims`` as an attribute so that
:class:`~pdcr_lab.zoo.ZooModel` knows which input rank it takes. A 3-D net keeps its weights
channels-last (see :func:`_set_dims`); its state dict loads into either layout."""

from __future__ import annotations

import torch
from monai.networks import nets
from monai.networks.layers import SkipConnection
from monai.networks.nets.attentionunet import AttentionLayer

from ._blocks import positive_int


def _dims(spatial_dims: object) -> int:
    """`spatial_dims` checked to be 2 or 3 (MONAI would accept 1, which the zoo does not serve)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims={spatial_dims!r} is not valid; expected 2 (images) or 3 (volumes)")
    return int(spatial_dims)


def _set_dims(net: torch.nn.Module, spatial_dims: int) -> None:
    """Record ``net.spatial_dims``; a 3-D net's weights go channels-last, since oneDNN's 3-D convolutions
    on CPU run about twice as fast that way (with few channels the default layout's reorders dominate)."""
    net.spatial_dims = int(spatial_dims)
    if net.spatial_dims == 3:
        net.to(memory_format=torch.channels_last_3d)


class UNet(nets.UNet):
    """MONAI UNet (residual units, strided-conv down, transposed-conv up, concatenated skips).

    Parameters
    ----------
    channels : tuple of int
        Feature channels per level (one strided downsampling between consecutive levels).
    num_res_units : int
        Residual units per convolution block.
    norm : str
        MONAI normalisation name (``"instance"``, MONAI's default, or ``"batch"``). Instance norm
        normalises every channel over the whole image, so it is not spatially local; batch norm
        uses its running statistics in eval mode and is local at inference.
    in_channels : int
        Channels of the input image.
    spatial_dims : int
        2 for (B, C, H, W) images, 3 for (B, C, D, H, W) volumes.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), num_res_units: int = 1,
                 norm: str = "instance", *, in_channels: int = 3, spatial_dims: int = 2) -> None:
        super().__init__(_dims(spatial_dims), positive_int(in_channels), 1, channels=channels,
                         strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm=norm)
        _set_dims(self, spatial_dims)

    def stage_roles(self) -> dict[str, str]:
        roles: dict[str, str] = {}
        prefix = "model"
        while isinstance(self.get_submodule(f"{prefix}.1"), SkipConnection):
            # the outermost up-sampling layer is the one that outputs the logits
            roles |= {f"{prefix}.0": "encoder", f"{prefix}.1": "skip",
                      f"{prefix}.2": "head" if prefix == "model" else "decoder"}
            inner = f"{prefix}.1.submodule"
            if not isinstance(self.get_submodule(inner), torch.nn.Sequential):
                roles[inner] = "bottleneck"
                break
            prefix = inner
        return roles


class AttentionUnet(nets.AttentionUnet):
    """MONAI AttentionUnet (Oktay et al., 2018): skips gated by additive attention from the coarser level.

    Parameters
    ----------
    channels : tuple of int
        Feature channels per level (one strided downsampling between consecutive levels).
    in_channels : int
        Channels of the input image.
    spatial_dims : int
        2 for (B, C, H, W) images, 3 for (B, C, D, H, W) volumes.
    """

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 64, 128), *, in_channels: int = 3,
                 spatial_dims: int = 2) -> None:
        super().__init__(_dims(spatial_dims), positive_int(in_channels), 1, channels=channels,
                         strides=(2,) * (len(channels) - 1))
        _set_dims(self, spatial_dims)

    def stage_roles(self) -> dict[str, str]:
        roles = {"model.0": "encoder"}
        layer = "model.1"
        while isinstance(self.get_submodule(layer), AttentionLayer):
            roles |= {f"{layer}.attention": "attention", f"{layer}.upconv": "decoder", f"{layer}.merge": "decoder"}
            inner = f"{layer}.submodule"
            if isinstance(self.get_submodule(inner), torch.nn.Sequential):
                roles[f"{inner}.0"] = "encoder"
                layer = f"{inner}.1"
            else:
                roles[inner] = "bottleneck"
                break
        return roles | {"model.2": "head"}


class BasicUNetPlusPlus(nets.BasicUNetPlusPlus):
    """MONAI BasicUNetPlusPlus (Zhou et al., 2018): nested, densely connected skip pathways.

    Parameters
    ----------
    features : tuple of 6 ints
        Channels of the five encoder levels and of the last up-sampling block (MONAI's ``features``).
    in_channels : int
        Channels of the input image.
    spatial_dims : int
        2 for (B, C, H, W) images, 3 for (B, C, D, H, W) volumes.
    """

    def __init__(self, features: tuple[int, ...] = (8, 16, 32, 48, 64, 8), *, in_channels: int = 3,
                 spatial_dims: int = 2) -> None:
        super().__init__(_dims(spatial_dims), positive_int(in_channels), 1, features=features, norm=("batch", {}))
        _set_dims(self, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # MONAI returns a list (deep supervision)
        """The logits of the final output (MONAI's deep-supervision list, first element).

        Parameters
        ----------
        x : Tensor (B, in_channels, H, W) or (B, in_channels, D, H, W)
            Normalised images or volumes.
        """
        return super().forward(x)[0]

    def stage_roles(self) -> dict[str, str]:
        roles = {f"conv_{i}_0": "encoder" for i in range(4)} | {"conv_4_0": "bottleneck"}
        for j in range(1, 5):
            for i in range(5 - j):
                roles[f"upcat_{i}_{j}"] = "decoder" if i + j == 4 else "skip"
        return roles | {"final_conv_0_4": "head"}


class SegResNet(nets.SegResNet):
    """MONAI SegResNet (Myronenko, 2018): deep residual encoder, light decoder, additive skips.

    Parameters
    ----------
    init_filters : int
        Channels of the first level (doubled at every downsampling).
    blocks_down : tuple of int
        Residual blocks per encoder level (one up-sampling block per decoder level).
    norm_groups : int
        Groups of its group norm (MONAI's default 8; it must divide `init_filters`).
    in_channels : int
        Channels of the input image.
    spatial_dims : int
        2 for (B, C, H, W) images, 3 for (B, C, D, H, W) volumes.
    """

    def __init__(self, init_filters: int = 8, blocks_down: tuple[int, ...] = (1, 2, 2, 4), norm_groups: int = 8, *,
                 in_channels: int = 3, spatial_dims: int = 2) -> None:
        super().__init__(_dims(spatial_dims), init_filters=init_filters, in_channels=positive_int(in_channels),
                         out_channels=1, blocks_down=blocks_down, blocks_up=(1,) * (len(blocks_down) - 1),
                         norm=("group", {"num_groups": positive_int(norm_groups, "norm_groups")}))
        _set_dims(self, spatial_dims)

    def stage_roles(self) -> dict[str, str]:
        n = len(self.down_layers)
        roles = {"convInit": "stem"} | {f"down_layers.{i}": "encoder" for i in range(n - 1)}
        roles[f"down_layers.{n - 1}"] = "bottleneck"
        for i in range(n - 1):
            roles |= {f"up_samples.{i}": "decoder", f"up_layers.{i}": "decoder"}
        return roles | {"conv_final": "head"}
