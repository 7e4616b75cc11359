"""A zoo of small trained segmentation models with different inductive biases.

Thirteen architectures: twelve from the families the PdCR paper compares (plain and deep CNNs,
token-MLP and KAN mixers, transformers with global or windowed attention, and a state-space model),
plus ``unet_bn``, the U-Net with BatchNorm (the paper's own U-Net normalisation; spatially local at
inference, unlike the instance norm of ``unet``), each trained on the 2-D datasets :data:`DATASETS`
(``lesions``, ``vessels``, ``brain`` and the cue-controlled ``cues``). Every model is a :class:`ZooModel`: an image in [0, 1] (RGB, or the channels it was built for) goes in, a foreground
probability comes out.

Two volume architectures, ``unet3d`` and ``segresnet3d`` (MONAI's UNet and SegResNet with
``spatial_dims=3``), take (B, 1, D, H, W) volumes and are trained on the 3-D datasets
:data:`DATASETS_3D` (``brain3d``, ``vessels3d``). ``zoo.list()`` names the 2-D models, which the
2-D studies iterate over; ``zoo.list(3)`` the volume models, ``zoo.list(None)`` all.

Examples
--------
>>> from pdcr_lab import zoo
>>> zoo.list()[:3], zoo.list(3)
(['unet', 'unet_bn', 'segnet'], ['unet3d', 'segresnet3d'])
>>> model, meta = zoo.load("unet", "lesions")  # doctest: +SKIP
>>> model(images).shape  # (B, 1, H, W) probabilities  # doctest: +SKIP
"""

from ._base import ROLES, ZooModel
from ._registry import ALL_DATASETS, DATASETS, DATASETS_3D, RECIPES, Recipe, Training
from ._training import predict
from ._store import (
    USER_ZOO,
    MAX_PARAMETERS,
    MAX_RECIPE_INTEGER,
    MAX_RECIPE_LENGTH,
    ChecksumError,
    ManifestError,
    benchmark,
    build,
    check_recipe_size,
    info,
    load,
    load_checkpoint,
    output_dir,
    read_manifest,
    shipped_zoo,
    train,
    trained,
    zoo_dir,
)
from ._store import list_models as list  # noqa: A001 - the public verb is zoo.list()

__all__ = ["ALL_DATASETS", "ChecksumError", "DATASETS", "DATASETS_3D", "MAX_PARAMETERS", "MAX_RECIPE_INTEGER", "MAX_RECIPE_LENGTH", "ManifestError", "RECIPES",
           "ROLES", "Recipe", "Training", "ZooModel", "benchmark", "build", "check_recipe_size", "info", "list", "load",
           "load_checkpoint", "output_dir", "predict", "read_manifest", "shipped_zoo", "USER_ZOO", "train", "trained", "zoo_dir"]
