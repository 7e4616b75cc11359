"""PdCR on network components: the causal effect of a layer, a channel group or a feature cell on an RoI.

docs/method.md section 8 (ours): a component effect is do(A_l := a'), where A_l is the output of module
l (optionally only one channel group of it, or the feature cells under one input block) and a' is
the same module's output on another natural image of the dataset (a *donor*), or zero / the donors'
mean for ablation. ATE(l) = E[M(f(X) with A_l := a')] - M(f(X)) with the paper's outcome, screening
and sign convention, so component effects and input-block maps are in the same units.

* :func:`explain_components` - the explainer (forward hooks; batched; no change to the model);
* :func:`find_components` / :func:`list_components` - which modules of a model are its stages;
* :func:`stage_labels`, :func:`stage_order`, :func:`summarize`, :func:`format_summary` - reading
  component results: comparable stage labels and which stage carries most of the effect.

The study over the zoo (``pdcr-lab components``) is :func:`pdcr_lab.studies.components_study`.
"""

from ._discover import ROLES, Component, find_components, list_components
from ._explain import COMPONENT_INTERVENTIONS, UNITS, explain_components
from ._report import format_summary, stage_labels, stage_order, summarize

__all__ = [
    "COMPONENT_INTERVENTIONS",
    "Component",
    "ROLES",
    "UNITS",
    "explain_components",
    "find_components",
    "format_summary",
    "list_components",
    "stage_labels",
    "stage_order",
    "summarize",
]
