"""Baseline explainers behind PdCR's call signature, on PdCR's block grid.

Every baseline is called as ``baseline(model, image, *, roi, target=None, <own options>, seed=0,
device=None)`` and returns the effects schema (:mod:`pdcr_lab.schema`) with ``attrs["method"]``
naming it, so the faithfulness metrics, ``viz`` and ``sweep`` accept any of them. They are
registered with their properties in :mod:`pdcr_lab.explainers`.

Maps keep each method's own units and sign; ``attrs["support_sign"]`` says which sign means "the
block supports the RoI" (PdCR's convention is -1: negative ATE = supports). The faithfulness
metrics rank blocks by ``support_sign * ate``, largest first:

============  ====================================================  ============  ===================
method        map (``ate``)                                         support_sign  ranking
============  ====================================================  ============  ===================
pdcr          ATE of natural block replacement (DSC points)         -1            most negative first
occlusion_*   M(block := zero / blur / mean) - M0 (DSC points)      -1            most negative first
gradcam       block mean of ReLU(Seg-Grad-CAM)                      +1            largest first
gradcam_signed block mean of the signed Seg-Grad-CAM               +1            largest first
misure        block mean of the minimally sufficient mask [0, 1]    +1            largest first
rise          block mean of RISE saliency (expected DSC points)     +1            largest first
random        uniform random scores (the control)                   +1            largest first
============  ====================================================  ============  ===================

Pixel-level maps are kept as extra variables on (y, x): ``cam``/``cam_signed``, ``mask``,
``saliency``.
"""

from ._gradcam import feature_layers, gradcam
from ._misure import misure
from ._occlusion import OCCLUDERS, occlusion
from ._random import random_scores
from ._rise import rise, rise_masks

__all__ = ["gradcam", "misure", "occlusion", "rise", "random_scores", "feature_layers", "rise_masks", "OCCLUDERS"]
