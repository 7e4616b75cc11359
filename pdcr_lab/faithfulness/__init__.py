"""Faithfulness of explanations: deletion/insertion curves, the randomisation check, planted causes.

- :func:`deletion_insertion`: curves of the RoI outcome as the blocks a map ranks most supportive
  are replaced (deletion) or restored (insertion), under several replacement policies, batched.
- :func:`randomization_check`: the map must change when the model's weights are re-initialised.
- :func:`planted_benchmark`: attribution accuracy (AUROC / AUPRC) against a planted cause.
- :func:`paired_tests`, :func:`verdicts`, :func:`format_paired`: image-paired differences between methods (PdCR
  minus each baseline, each method minus random) with Wilcoxon p-values, Holm-adjusted.
- :func:`summarize`, :func:`format_table`, :func:`write_table`: the
  summary and table of the comparison of PdCR with the baselines on the zoo, which
  :func:`pdcr_lab.studies.faithfulness_study` runs (``pdcr-lab benchmark faithfulness``).

Every definition is written in the docstring of the module that implements it.
"""

from ._benchmark import LOWER_IS_BETTER, format_table, summarize, write_table
from ._curves import CURVES, POLICIES, curve_auc, deletion_insertion, random_map, ranking, support_scores
from ._paired import VERDICTS, comparisons, format_paired, paired_tests, verdicts
from ._planted import (
    TASKS,
    GateOracle,
    PlantedNet,
    attribution_accuracy,
    auroc,
    average_precision,
    load_planted,
    make_planted,
    planted_benchmark,
    planted_models,
    save_planted,
    train_planted,
)
from ._sanity import randomization_check, randomize_weights, rank_correlation

__all__ = [
    "VERDICTS",
    "CURVES",
    "LOWER_IS_BETTER",
    "POLICIES",
    "TASKS",
    "GateOracle",
    "PlantedNet",
    "attribution_accuracy",
    "auroc",
    "average_precision",
    "comparisons",
    "curve_auc",
    "deletion_insertion",
    "format_paired",
    "format_table",
    "load_planted",
    "make_planted",
    "paired_tests",
    "verdicts",
    "planted_benchmark",
    "planted_models",
    "random_map",
    "randomization_check",
    "randomize_weights",
    "rank_correlation",
    "ranking",
    "save_planted",
    "summarize",
    "support_scores",
    "train_planted",
    "write_table",
]
