"""The zoo's recipes: one :class:`Recipe` per architecture (how to build it and how to train it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from . import _cnn, _mlp, _monai, _ssm, _transformers

#: Datasets the 2-D zoo is trained on (``pdcr_lab.datasets.load`` names).
DATASETS = ("lesions", "vessels", "brain", "cues", "cues_global", "cues_sequential")
#: Datasets the 3-D (volumetric) zoo is trained on.
DATASETS_3D = ("brain3d", "vessels3d")
#: Every dataset of the zoo, 2-D then 3-D.
ALL_DATASETS = DATASETS + DATASETS_3D
#: The zoo's datasets by the spatial dimensions of their images.
DATASETS_BY_DIMS: Mapping[int, tuple[str, ...]] = MappingProxyType({2: DATASETS, 3: DATASETS_3D})


@dataclass(frozen=True)
class Training:
    """Training hyper-parameters (AdamW, cosine schedule, Dice + BCE loss, flips).

    Examples
    --------
    >>> Training(epochs=5).epochs, Training().lr
    (5, 0.003)
    """

    epochs: int = 30  #: maximum number of epochs
    patience: int = 8  #: early stopping: epochs without a better validation Dice
    batch_size: int = 16  #: images per optimiser step
    lr: float = 3e-3  #: peak learning rate (AdamW)
    weight_decay: float = 1e-4  #: AdamW weight decay
    dice_weight: float = 1.0  #: loss = bce_weight * BCE + dice_weight * soft Dice loss
    bce_weight: float = 1.0  #: weight of the BCE term (see `dice_weight`)
    warmup: int = 2  #: epochs of linear learning-rate warm-up before the cosine decay
    grad_clip: float | None = None  #: clip the gradient norm to this value (None: no clipping)
    #: an epoch passes over the training split as often as needed to see at least this many images
    #: (0: once); a folder of a few dozen tiles would otherwise get too few optimiser steps per epoch
    min_epoch_images: int = 0


@dataclass(frozen=True)
class Recipe:
    """How to build and train one zoo architecture.

    Examples
    --------
    >>> recipe = RECIPES["segnet"]
    >>> recipe.family, recipe.training_for("lesions").epochs, recipe.as_dict("lesions")["builder"]
    ('cnn', 20, 'pdcr_lab.zoo._cnn.SegNet')
    >>> recipe.spatial_dims, recipe.datasets, RECIPES["unet3d"].datasets
    (2, ('lesions', 'vessels', 'brain', 'cues', 'cues_global', 'cues_sequential'), ('brain3d', 'vessels3d'))
    """

    name: str  #: registry name (``zoo.load(name, dataset)``)
    family: str  #: "cnn", "deep-cnn", "token-mlp", "transformer" or "state-space"
    paper: str  #: the paper architecture it corresponds to
    builder: Callable[..., nn.Module]  #: builds the architecture from `kwargs`
    kwargs: Mapping[str, Any]  #: keyword arguments of `builder`
    bias: str  #: one line on its inductive bias
    training: Training = Training()  #: default training hyper-parameters
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  #: per dataset

    @property
    def spatial_dims(self) -> int:
        """2 for an image model, 3 for a volume model (its ``spatial_dims`` build option, default 2)."""
        return int(self.kwargs.get("spatial_dims", 2))

    @property
    def datasets(self) -> tuple[str, ...]:
        """The zoo datasets this architecture is trained on (those of its :attr:`spatial_dims`)."""
        return DATASETS_BY_DIMS[self.spatial_dims]

    def training_for(self, dataset: str) -> Training:
        """The training hyper-parameters for ``dataset`` (defaults plus that dataset's overrides).

        Parameters
        ----------
        dataset : str
            A name of :attr:`datasets`.
        """
        training = dataclasses.replace(self.training, **DATASET_TRAINING.get(dataset, {}))
        training = dataclasses.replace(training, epochs=min(training.epochs, EPOCH_CAP.get(dataset, training.epochs)))
        return dataclasses.replace(training, **self.overrides.get(dataset, {}))

    def build(self) -> nn.Module:
        """A freshly initialised architecture (``builder(**kwargs)``)."""
        return self.builder(**self.kwargs)

    def as_dict(self, dataset: str) -> dict[str, Any]:
        """JSON-able description stored in checkpoints and the manifest.

        Parameters
        ----------
        dataset : str
            The dataset whose training hyper-parameters are described.
        """
        return {"name": self.name, "family": self.family, "paper": self.paper,
                "builder": f"{self.builder.__module__}.{self.builder.__qualname__}",
                "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()},
                "training": dataclasses.asdict(self.training_for(dataset))}


def _recipe(name: str, family: str, paper: str, builder: Callable[..., nn.Module], bias: str,
            training: Training = Training(), overrides: Mapping[str, Mapping[str, Any]] | None = None,
            **kwargs: Any) -> Recipe:
    return Recipe(name, family, paper, builder, MappingProxyType(kwargs), bias, training,
                  MappingProxyType(dict(overrides or {})))


#: Adjustments of every 2-D recipe's training for one dataset (before the recipe's own overrides).
#: ``brain`` has 65 training slices: an epoch repeats them to 192 images (12 optimiser steps).
DATASET_TRAINING: Mapping[str, Mapping[str, Any]] = MappingProxyType({"brain": {"min_epoch_images": 192}})
#: At most this many epochs on a dataset: the ``cues`` sets (320 images of 128 x 128) cost 1.8 times
#: the 96-pixel sets per epoch.
EPOCH_CAP: Mapping[str, int] = MappingProxyType(dict.fromkeys(("cues", "cues_global", "cues_sequential"), 20))

#: Training of the volume recipes: the 3-D sets have 94 to 160 training volumes, so an epoch repeats
#: them to at least 256 (enough optimiser steps); 8 volumes of 32^3 a step keep a step near 0.1 s.
VOLUME_TRAINING = Training(epochs=40, patience=10, batch_size=8, min_epoch_images=256)

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    _recipe("unet", "cnn", "U-Net (MONAI UNet)", _monai.UNet,
            "local convolutions, 3 strided downsamplings, concatenated skips", Training(epochs=40, patience=10),
            channels=(16, 32, 64, 128), num_res_units=1),
    _recipe("unet_bn", "cnn", "U-Net with BatchNorm (MONAI UNet, norm=batch)", _monai.UNet,
            "the U-Net above with BatchNorm (local at inference, unlike InstanceNorm's whole-image statistics)",
            Training(epochs=40, patience=10), channels=(16, 32, 64, 128), num_res_units=1, norm="batch"),
    _recipe("segnet", "cnn", "SegNet", _cnn.SegNet,
            "local convolutions; the decoder gets only max-pooling indices, no encoder features",
            Training(epochs=20, patience=6), channels=(8, 16, 32, 64)),
    _recipe("attention_unet", "cnn", "Attention U-Net (MONAI AttentionUnet)", _monai.AttentionUnet,
            "U-Net whose skips are gated by additive attention computed from the coarser level",
            Training(epochs=25, patience=6), channels=(8, 16, 32, 64, 128)),
    _recipe("unetpp", "deep-cnn", "U-Net++ (MONAI BasicUNetPlusPlus)", _monai.BasicUNetPlusPlus,
            "nested, densely connected skip pathways between all encoder depths", Training(epochs=12, patience=4),
            features=(8, 16, 32, 48, 64, 8)),
    _recipe("segresnet", "deep-cnn", "SegResNet (MONAI)", _monai.SegResNet,
            "deep residual encoder (large receptive field), light decoder with additive skips",
            init_filters=8, blocks_down=(1, 2, 2, 4)),
    _recipe("hrnet", "deep-cnn", "HRNet", _cnn.HRNet,
            "parallel 1/2..1/16 resolution branches with repeated multi-scale fusion, no decoder",
            width=10, stages=4, blocks=1),
    _recipe("unext", "token-mlp", "UNeXt", _mlp.unext,
            "early convolutions, then tokenised MLPs whose mixing is axial shifts + depth-wise conv",
            channels=(8, 16, 32, 64, 96), blocks=1, shift=5),
    _recipe("ukan", "token-mlp", "U-KAN", _mlp.ukan,
            "early convolutions, then tokenised Kolmogorov-Arnold (Gaussian-RBF) layers + depth-wise conv",
            channels=(8, 16, 32, 48, 64), blocks=1, grid=6),
    _recipe("segformer", "transformer", "SegFormer", _transformers.SegFormer,
            "global efficient self-attention from the first stage (keys/values spatially reduced), "
            "all-MLP decoder", dims=(16, 32, 64, 96), heads=(1, 2, 4, 4), srs=(8, 4, 2, 1),
            depths=(1, 1, 1, 1), stride=2, decoder_dim=48),
    _recipe("transunet", "transformer", "TransUNet", _transformers.transunet,
            "CNN stem, then global self-attention over all 1/16 tokens in the bottleneck",
            channels=(8, 16, 32, 64), dim=96, depth=2, heads=4),
    _recipe("swin_unet", "transformer", "Swin-UNet", _transformers.swin_unet,
            "pure transformer U-Net; attention restricted to shifted 6x6-token windows",
            Training(epochs=25, patience=6), dims=(12, 24, 48, 96), heads=(1, 2, 4, 8), depths=(2, 2, 2, 2), window=6,
            patch=2),
    _recipe("vm_unet", "state-space", "VM-UNet", _ssm.vm_unet,
            "visual state-space blocks: selective scans run token by token along 4 directions",
            Training(lr=2e-3, grad_clip=1.0), dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), d_state=4, patch=4),
    # volumes: one channel, small widths so that a PdCR map's thousands of forwards stay cheap on a CPU
    _recipe("unet3d", "cnn", "3-D U-Net (MONAI UNet)", _monai.UNet,
            "local 3x3x3 convolutions, 3 strided downsamplings, concatenated skips; instance norm "
            "(whole-volume statistics)", VOLUME_TRAINING,
            channels=(8, 16, 32, 64), num_res_units=1, in_channels=1, spatial_dims=3),
    _recipe("segresnet3d", "deep-cnn", "3-D SegResNet (MONAI SegResNet)", _monai.SegResNet,
            "deep residual encoder with group norm (whole-volume statistics), light decoder with additive skips",
            VOLUME_TRAINING, init_filters=4, blocks_down=(1, 2, 2, 2), norm_groups=4, in_channels=1, spatial_dims=3),
]}
