"""The paper's defaults, in one place (METHOD.md sections 2-4).

Every public function takes its defaults from :data:`PAPER`, and every result echoes the values it
used in its attrs, so a map can always be traced back to the estimator that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PAPER", "PaperDefaults", "HISTOGRAM_EDGES"]


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


PAPER = PaperDefaults()

#: Histogram edges of the reference's statistics file, with tau as the inner edge.
HISTOGRAM_EDGES = np.array([-np.inf, -3.0, -1.0, -0.3, -PAPER.tau, PAPER.tau, 0.3, 1.0, 3.0, np.inf])
