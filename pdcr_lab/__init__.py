"""pdcr_lab: a workbench for PdCR causal explanations of segmentation models (arXiv 2602.20511).

The data flows one way: ``datasets`` -> ``zoo`` (models) -> ``engine`` -> xarray results
(``schema``) -> analysis (``components``, ``strategies``, ``faithfulness``) -> ``viz`` / ``widgets`` /
``dashboard``. Modules, one concept each:

- ``banks``: natural-distribution patch banks (:class:`PatchBank`)
- ``interventions``: what replaces a block and how perturbed images are composed
- ``outcomes``: the RoI state M (Dice, soft Dice, IoU)
- ``adapters``: how a model's input and output are read (bring your own model)
- ``estimator``: the coarse-to-fine ATE estimator (paper and adaptive modes) shared by all explainers
- ``engine``: :func:`explain`, the input-block explainer
- ``schema``: the xarray effects data model and its validator
- ``storage``: :func:`save` / :func:`load`
- ``statistics``: support/harm counts and histograms of maps
- ``rois``: regions of interest (e.g. a block on the lesion boundary)
- ``datasets``: embedded generated datasets and loaders of the paper's datasets
- ``zoo``: trained segmentation models of twelve architectures
- ``components``: PdCR on network components (stages, layers, channels)
- ``strategies``: local / global / sequential perceptual strategies of maps
- ``baselines``: Grad-CAM, occlusion, RISE, MiSuRe on the same RoI outcome
- ``faithfulness``: deletion/insertion curves, randomisation check, planted causes
- ``sweep``: studies on dask.distributed into one zarr store
- ``viz``, ``widgets``, ``dashboard``: figures, notebook widgets, the ``pdcr-lab serve`` app
- ``cli``: the ``pdcr-lab`` command

Submodules other than the engine's are imported on first use (``pdcr_lab.zoo``), so
``import pdcr_lab`` stays light.
"""

import importlib
from typing import Any

from . import schema
from .version import __version__
from .banks import PatchBank
from .defaults import PAPER
from .engine import explain
from .outcomes import Outcome, register_outcome
from .schema import SchemaError, stack, to_pixels, validate
from .statistics import statistics
from .storage import load, save

_LAZY = (
    "adapters", "banks", "baselines", "components", "dashboard", "datasets", "engine", "estimator",
    "faithfulness", "interventions", "outcomes", "rois", "storage", "strategies", "sweep", "testing",
    "viz", "widgets", "zoo",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    # modules
    "schema",
    # functions
    "explain",
    "save",
    "load",
    "validate",
    "stack",
    "to_pixels",
    "statistics",
    "register_outcome",
    # classes
    "PatchBank",
    "Outcome",
    # exceptions
    "SchemaError",
    # constants
    "PAPER",
    "__version__",
]
