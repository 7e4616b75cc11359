"""Perceptual strategies of effect maps: local, global and sequential (docs/method.md section 8).

* :func:`descriptors`: how the effect mass of each map lies around its RoI (radial profile and d50,
  spread, anisotropy, support/harm balance, alignment with image structure, the path leading away
  from the RoI), vectorised over the stack dims, for maps of images (block_y, block_x) and of
  volumes (block_z, block_y, block_x) alike (distances in blocks in 3-D, 26-neighbour paths).
* :func:`classify`: a label per map (``local``, ``global``, ``sequential``, ``mixed`` or
  ``no effect``) with a confidence, by the documented :class:`StrategyThresholds`.
* :func:`path_task`, :class:`ConnectivityModel`, :class:`GlobalContrastModel`: a generated task and
  hand-built models whose strategy is known by construction; they validate the labels
  (``tests/test_strategies.py``).
* :func:`family_members`, :class:`FamilyModel`, :func:`run_family`, :func:`summarize_family`,
  :func:`write_family_report`: a systematic family of hand-built models (local windows, global
  statistics, chains of every shape, width, range and strength, and their mixtures) whose strategy
  is known by construction, and the measured accuracy of the labels on it before and after the
  rule of issue 17 (``docs/strategy_family.md``; :func:`legacy_classify` is the rule before).
* :func:`heterogeneity`, :func:`format_heterogeneity`: permutation tests of whether strategies
  differ across architectures (paired by image) and across datasets per model, with effect sizes
  and Holm-adjusted p-values.
* :func:`label_maps`, :func:`summarize`, :func:`format_table`: labels of a stack of maps, shares
  and descriptors with bootstrap intervals per architecture and dataset, the shift between
  datasets, and the Markdown report. The study that explains the zoo for them (``pdcr-lab
  strategies``) is :func:`pdcr_lab.studies.strategies_study`.

Examples
--------
>>> import pdcr_lab
>>> ds = pdcr_lab.schema.empty_effects(grid=(12, 12), block=8)
>>> ds["roi_block"][5:7, 5:7] = True
>>> ds["ate"][5, 7:12] = -20.0          # a chain of supporting blocks leading away from the RoI
>>> out = pdcr_lab.strategies.classify(ds)
>>> str(out.label.values), float(out.d50)
('sequential', 3.0)
"""

from ._classify import LABELS, STRATEGIES, THRESHOLDS, StrategyThresholds, classify
from ._descriptors import DESCRIPTORS, descriptors, effect_grid, structure_blocks
from ._family import (
    FAMILIES,
    FamilyMember,
    FamilyModel,
    FamilyScene,
    family_bank,
    family_members,
    family_scene,
    format_family_report,
    legacy_classify,
    run_family,
    summarize_family,
    wilson_interval,
    write_family_report,
)
from ._heterogeneity import HETEROGENEITY_MEASURES, format_heterogeneity, heterogeneity
from ._report import MAP_VARIABLES, SHIFT_DESCRIPTORS, SUMMARY_DESCRIPTORS, format_table, label_maps, summarize
from ._tasks import ConnectivityModel, GlobalContrastModel, PathTask, path_task

__all__ = [
    "DESCRIPTORS",
    "FAMILIES",
    "FamilyMember",
    "FamilyModel",
    "FamilyScene",
    "HETEROGENEITY_MEASURES",
    "LABELS",
    "MAP_VARIABLES",
    "SHIFT_DESCRIPTORS",
    "STRATEGIES",
    "SUMMARY_DESCRIPTORS",
    "THRESHOLDS",
    "ConnectivityModel",
    "GlobalContrastModel",
    "PathTask",
    "StrategyThresholds",
    "classify",
    "descriptors",
    "effect_grid",
    "family_bank",
    "family_members",
    "family_scene",
    "heterogeneity",
    "format_family_report",
    "format_heterogeneity",
    "format_table",
    "legacy_classify",
    "label_maps",
    "path_task",
    "run_family",
    "structure_blocks",
    "summarize",
    "summarize_family",
    "wilson_interval",
    "write_family_report",
]
