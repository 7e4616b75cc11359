"""Studies: one question asked of every zoo model on every embedded dataset, through one loop.

The analysis packages (:mod:`pdcr_lab.components`, :mod:`pdcr_lab.strategies`,
:mod:`pdcr_lab.faithfulness`) take effects datasets and return numbers and tables; the studies load
the zoo's models and the datasets, run an explainer or an analysis on fixed test images and RoIs,
and collect the results in the effects schema. They sit at the end of the data flow, beside the
figures and the command line.

The loop (:func:`run_pairs`): every (model, dataset) pair, the dataset's test images and masks
loaded once, RoIs on the ground truth's boundary (:func:`pick_rois`, the block of the dataset's
bank, the RoI size of :data:`pdcr_lab.defaults.WORKING`), one result per image stacked along
``image`` with :func:`pdcr_lab.schema.stack`, pairs without a usable checkpoint recorded, and every
cell saved atomically as it is done (:class:`CellStore`) so that a run can resume; :func:`grid`
stacks the cells into one (model, dataset, ...) result.

The studies on it (``pdcr-lab components``, ``pdcr-lab strategies``, ``pdcr-lab benchmark
faithfulness``):

* :func:`components_study` (:class:`ComponentsSettings`): effects of each main stage;
* :func:`strategies_study` (:class:`StrategiesSettings`): PdCR maps for the strategy labels;
* :func:`faithfulness_study` (:class:`FaithfulnessSettings`, :class:`Method`): every registered
  method scored by deletion/insertion curves and the randomisation check;
* :func:`cue_study` (:class:`CueSettings`): PdCR maps of the models trained on the cue-controlled
  sets, each model's reliance on each cue by ablation, and the agreement of the labels with it;
* :func:`cue_attribution`: the faithfulness study's baselines on the cue study's images, each map
  labelled by the same rule and scored against the same ablation truth (``pdcr-lab cue-attribution``).

Examples
--------
>>> from pdcr_lab.studies import StrategiesSettings, pick_rois
>>> StrategiesSettings(images=2).images
2
"""

from ._components import COMPONENTS, ComponentsSettings, components_study
from ._cue_attribution import ATTRIBUTION_METHODS, cue_attribution, format_cue_attribution
from ._cues import CUE_SETS, CueSettings, cue_agreement, cue_reliance_study, cue_study, cue_truth, format_cues
from ._faithfulness import METHODS, FaithfulnessSettings, Method, faithfulness_study, study_methods
from ._loop import (
    UNUSABLE,
    CellStore,
    Item,
    Pair,
    PairRun,
    View,
    cells_folder,
    fill_value,
    grid,
    load_view,
    pick_rois,
    reindex_filled,
    run_pairs,
)
from ._strategies import StrategiesSettings, strategies_study

__all__ = [
    "ATTRIBUTION_METHODS",
    "COMPONENTS",
    "CUE_SETS",
    "METHODS",
    "UNUSABLE",
    "CellStore",
    "CueSettings",
    "ComponentsSettings",
    "FaithfulnessSettings",
    "Item",
    "Method",
    "Pair",
    "PairRun",
    "StrategiesSettings",
    "View",
    "cells_folder",
    "components_study",
    "cue_agreement",
    "cue_attribution",
    "cue_reliance_study",
    "cue_study",
    "cue_truth",
    "faithfulness_study",
    "format_cue_attribution",
    "format_cues",
    "fill_value",
    "grid",
    "load_view",
    "pick_rois",
    "reindex_filled",
    "run_pairs",
    "strategies_study",
    "study_methods",
]
