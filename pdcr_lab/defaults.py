"""Defaults in one place: the paper's settings, the working settings, and the named choices.

* :data:`PAPER`: PdCR's published settings (docs/method.md sections 2-3). Every estimator option of
  every explainer defaults to these, and every result echoes the values it used in its attrs.
* :data:`WORKING`: the settings of the embedded data and of quick interactive use (the CLI's
  automatic RoI, the reports, the widgets and the dashboard). They are ours, chosen so that a map
  takes seconds on two CPU cores; where they differ from :data:`PAPER`, the result says so in its
  attrs like any other setting.
* The ``Literal`` choices (:data:`Mode`, :data:`Precision`, :data:`Policy`, ...) name the allowed
  string options once; :func:`check_literal` validates a value against one of them at run time.

Examples
--------
>>> from pdcr_lab.defaults import PAPER, WORKING, Mode, check_literal
>>> PAPER.block, PAPER.coarse, PAPER.fine, PAPER.tau
(8, 3, 50, 0.02)
>>> WORKING.image_size // WORKING.block   # the embedded data's block grid
12
>>> check_literal("mode", "adaptive", Mode)
'adaptive'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from .checks import check_choice

__all__ = [
    "PAPER",
    "PaperDefaults",
    "WORKING",
    "WorkingDefaults",
    "HISTOGRAM_EDGES",
    "Mode",
    "Precision",
    "Policy",
    "Intervention",
    "ComponentUnit",
    "OutcomeName",
    "choices",
    "check_literal",
]


@dataclass(frozen=True)
class PaperDefaults:
    """PdCR's published settings (Jiang et al., arXiv 2602.20511)."""

    block: int = 8  #: block side b in pixels
    coarse: int = 3  #: S, draws of the screening stage
    fine: int = 50  #: N, fresh draws of the estimation stage
    tau: float = 0.02  #: screening / zeroing threshold, in outcome units (DSC points)
    threshold: float = 0.5  #: binarisation of a one-channel model output
    roi_size: int = 32  #: side of the paper's square RoI at 256 x 256
    image_size: int = 256  #: the paper's working size
    bank_per_image: int = 100  #: blocks the reference cuts from each bank image


@dataclass(frozen=True)
class WorkingDefaults:
    """The project's working settings for its embedded data and for interactive use (ours).

    The embedded datasets are 96 x 96 with an 8-pixel block (a 12 x 12 grid), so the paper's RoI
    of four blocks per side would cover a third of the image; the working RoI is two blocks.
    ``fine`` is the number of estimation draws the dashboard asks for: the paper's N, since a paper-mode
    map of a zoo model at 96 x 96 answers in about two seconds on two CPU cores (docs/benchmarks.md,
    item a); the CLI and the API keep the paper's N too.
    """

    block: int = 8  #: block side b of the embedded data
    roi_size: int = 16  #: side of an automatic RoI (two blocks)
    image_size: int = 96  #: side of the embedded datasets' images
    coarse: int = 3  #: S of quick interactive maps (the paper's)
    fine: int = 50  #: N of interactive maps (the paper's)
    donors: int = 16  #: donor images of component effects
    seed: int = 0  #: seed of reports and demos


PAPER = PaperDefaults()
WORKING = WorkingDefaults()

#: Histogram edges of the reference's statistics file, with tau as the inner edge.
HISTOGRAM_EDGES = np.array([-np.inf, -3.0, -1.0, -0.3, -PAPER.tau, PAPER.tau, 0.3, 1.0, 3.0, np.inf])

#: Estimator of the input-block engine: the paper's two stages, or sequential sampling (ours).
Mode = Literal["paper", "adaptive"]
#: Autocast dtype of the forward passes.
Precision = Literal["float32", "bfloat16", "float16"]
#: How :func:`pdcr_lab.explain` runs the perturbed images: incrementally where the model allows it.
Incremental = Literal["auto", "on", "off"]
#: What replaces the deleted or inserted blocks of a faithfulness curve.
Policy = Literal["natural", "zero", "blur"]
#: What replaces an input block (:mod:`pdcr_lab.interventions`).
Intervention = Literal["natural", "zero", "mean", "blur"]
#: What a component effect replaces: a whole module output, channel groups, or feature cells.
ComponentUnit = Literal["module", "channels", "cells"]
#: The built-in RoI outcomes (:mod:`pdcr_lab.outcomes`; more can be registered).
OutcomeName = Literal["dice", "soft_dice", "iou", "probability"]


def choices(literal: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` type, in order.

    Parameters
    ----------
    literal : typing.Literal
        One of this module's choice types, e.g. :data:`Mode`.

    Examples
    --------
    >>> choices(Precision)
    ('float32', 'bfloat16', 'float16')
    """
    values = get_args(literal)
    if not values:
        raise TypeError(f"literal must be a typing.Literal, got {literal!r}")
    return tuple(values)


def check_literal(name: str, value: Any, literal: Any) -> Any:
    """`value` if it is one of the choices of `literal`, else a ``ValueError`` naming `name`.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed.
    literal : typing.Literal
        The allowed values.

    Examples
    --------
    >>> check_literal("precision", "float64", Precision)
    Traceback (most recent call last):
    ...
    ValueError: precision='float64' is not supported; expected one of ['float32', 'bfloat16', 'float16']
    """
    return check_choice(name, value, choices(literal))
