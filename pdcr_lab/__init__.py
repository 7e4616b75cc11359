"""pdcr_lab: a workbench for PdCR causal explanations of segmentation models (arXiv 2602.20511).

The data flows one way: ``datasets`` -> ``zoo`` (models) -> explainers (``engine``, ``components``,
``baselines``, all on the ``call`` layer and in the ``explainers`` registry) -> xarray results
(``schema``) -> analysis (``strategies``, ``faithfulness``, ``statistics``) -> ``viz`` -> ``widgets``,
``studies``, ``sweep``, ``dashboard``, ``cli``. Modules, one concept each (docs/ARCHITECTURE.md):

- ``defaults``: the paper's settings, the working settings and the named choices
- ``checks``, ``atomic``: input checks at the public boundary; atomic writes
- ``locations``: where results and figures are written (a user folder, never the checkout)
- ``rois``: regions of interest (parsing, choosing, snapping, reading lists)
- ``schema``, ``storage``, ``statistics``: the effects data model, :func:`save` / :func:`load`, summaries
- ``banks``: natural-distribution patch banks (:class:`PatchBank`)
- ``interventions``: what replaces a block and how perturbed images are composed
- ``outcomes``: the RoI state M (Dice, soft Dice, IoU)
- ``adapters``: how a model's input and output are read (bring your own model)
- ``datasets``: embedded generated datasets and loaders of the paper's datasets
- ``zoo``: trained segmentation models of thirteen architectures
- ``estimator``: the coarse-to-fine ATE estimator (paper and adaptive modes) shared by the explainers
- ``call``: the call layer every explainer stands on (checks, RoIs, outcome, evaluation context, result)
- ``engine``: :func:`explain`, the input-block explainer
- ``components``: PdCR on network components (stages, layers, channels)
- ``baselines``: Grad-CAM, occlusion, RISE, MiSuRe and a random control on the same RoI outcome
- ``explainers``: the explainer contract and the one registry of explainers
- ``strategies``: local / global / sequential perceptual strategies of maps
- ``faithfulness``: deletion/insertion curves, randomisation check, planted causes
- ``viz``, ``widgets``: figures, notebook widgets
- ``teaching``: the exercises of the teaching notebook (checks, answers computed from the results)
- ``studies``: zoo-wide studies (components, strategies, faithfulness) on one shared loop
- ``sweep``: studies on dask.distributed into one zarr store
- ``dashboard``, ``cli``: the ``pdcr-lab serve`` app and the ``pdcr-lab`` command

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
from .storage import CorruptResultError, UnverifiedResultWarning, load, save

_LAZY = (
    "adapters", "atomic", "banks", "baselines", "call", "checks", "components", "dashboard", "datasets", "defaults",
    "engine", "estimator", "explainers", "faithfulness", "interventions", "locations", "outcomes", "rois", "storage",
    "strategies", "studies", "sweep", "teaching", "testing", "viz", "widgets", "zoo",
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
    "CorruptResultError",
    "UnverifiedResultWarning",
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
