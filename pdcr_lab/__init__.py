"""pdcr_lab: a workbench for PdCR causal explanations of segmentation models (arXiv 2602.20511).

Modules, one concept each:

- ``banks``: natural-distribution patch banks (:class:`PatchBank`)
- ``interventions``: what replaces a block and how perturbed images are composed
- ``outcomes``: the RoI state M (Dice, soft Dice, IoU)
- ``adapters``: how a model's input and output are read
- ``estimator``: the coarse-to-fine ATE estimator shared by all PdCR explainers
- ``engine``: :func:`explain`, the input-block explainer
- ``schema``: the xarray effects data model and its validator
- ``storage``: :func:`save` / :func:`load`
- ``statistics``: support/harm counts and histograms of maps
- ``datasets``: embedded generated datasets and loaders of the paper's datasets
- ``zoo``: trained segmentation models of many architectures
- ``viz``: static figures
- ``cli``: the ``pdcr-lab`` command
"""

from . import schema
from ._version import __version__
from .banks import PatchBank
from .defaults import PAPER
from .engine import explain
from .outcomes import Outcome, register_outcome
from .schema import SchemaError, stack, to_pixels, validate
from .statistics import statistics
from .storage import load, save

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
