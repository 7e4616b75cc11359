"""Labelling effect maps with a perceptual strategy: local, global, sequential, mixed or no effect.

The rule splits a map's effect mass W into three shares that sum to 1 (descriptors of
:mod:`pdcr_lab.strategies._descriptors`):

* **sequential** share = ``path_mass`` when the RoI's path component K *is a path*: it leads away
  from the RoI (at least ``min_path_far`` of its mass lies beyond the near radius:
  ``path_far_share >= min_path_far``), is chain-like (``path_linearity >= min_linearity``) and,
  when a structure mask is given, runs on structure connected to the RoI
  (``path_on_structure >= min_on_structure``); otherwise 0.
* **local** share = the mass within the near radius (d <= near) that is not already counted as
  sequential.
* **global** share = the rest: mass beyond the near radius that does not follow a path from the
  RoI: spread over the image (a model pooling whole-image statistics), or at remote sites without
  a chain to the RoI (a single remote cause such as :class:`pdcr_lab.testing.PlantedCauseModel`'s
  marker is global too: the RoI depends on content far away, not on its neighbourhood or a path).

The label is the strategy whose share is at least ``dominance``; none -> ``"mixed"``; W = 0 ->
``"no effect"`` (the map carries no evidence, so no strategy is guessed).

Confidence (in [0, 1]) is the margin of the decision, measured in shares:
``(s_max - dominance) / (1 - dominance)`` for a strategy label (0 on the decision boundary, 1 when
all the mass has that strategy), ``(dominance - s_max) / (dominance - 1/3)`` for ``"mixed"`` (1 when
the three shares are equal), and 1 for ``"no effect"``.

**Volumes.** The rule and the thresholds table are the same for 3-D maps (grid (block_z, block_y,
block_x), distances in blocks along each axis, 26-neighbour connectivity; see
:mod:`pdcr_lab.strategies._descriptors`). The shares, ``dominance``, ``path_level``,
``min_path_far``, ``min_on_structure`` and ``structure_fraction`` are ratios that mean the same on
any grid and apply unchanged. Two thresholds are tied to the 2-D geometry:

* ``near`` (2.5 blocks) is kept as a *radius*: the reach, in blocks along each axis, of a few
  stacked 3 x 3 x 3 convolutions is what it is in 2-D. The ball it covers is larger (81 blocks
  around a one-block RoI instead of 21) but a much smaller fraction of the grid (about 9% of the
  candidate blocks of a 12 x 12 x 12 grid with a 2 x 2 x 2 RoI, against about a fifth in 2-D), so a
  map spread evenly over a volume has a local share near 0.09, not 0.2: it reads "global" even
  more clearly.
* ``min_linearity`` is compared with ``path_linearity`` as ``min_linearity ** (n - 1)`` on a grid
  of n axes: the same number in 2-D (0.3, so 2-D labels do not move) and 0.09 in 3-D (n counts the
  axes with more than one block: a one-slice volume, block_z = 1, keeps 0.3 and the 2-D labels).
  ``path_linearity`` of a straight path w blocks thick is 1 / w in 2-D (a band) but 1 / w**2 in
  3-D (a w x w tube), so the threshold is carried as the *thickness* it accepts (up to about 3
  blocks, 1 / 0.3): a vessel straddling two block rows and two block slices (a 2 x 2 tube, 1/4) is
  a path as the 2-blocks-wide band (1/2) is in 2-D, and a filled ball of radius r (about
  3 / (4 pi r^2)) is refused from r of about 1.6 blocks. The value used is in
  ``attrs["threshold_min_linearity_grid"]`` of the result of :func:`classify`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_float
from ._descriptors import DEFAULT_NEAR, DEFAULT_PATH_LEVEL, descriptors

__all__ = ["LABELS", "STRATEGIES", "StrategyThresholds", "THRESHOLDS", "classify"]

#: The three strategies, in the order of the ``strategy`` dim of the shares.
STRATEGIES: tuple[str, ...] = ("local", "global", "sequential")
#: Every label :func:`classify` can give.
LABELS: tuple[str, ...] = (*STRATEGIES, "mixed", "no effect")


@dataclass(frozen=True)
class StrategyThresholds:
    """The classifier's thresholds (distances in blocks of the map's grid).

    Calibrated for grids of about 12 x 12 blocks with a 2 x 2-block RoI (the embedded datasets:
    96 x 96 images, block 8, RoI 16 x 16; the tests: 48 x 48, block 4, RoI 8 x 8). Each field is
    documented where it is declared; how they carry to volumes (3-D grids) is in the module
    docstring (*Volumes*): one table serves both, ``min_linearity`` is applied per thickness.

    Examples
    --------
    >>> StrategyThresholds(dominance=0.5).near
    2.5
    >>> StrategyThresholds(dominance=0.3)
    Traceback (most recent call last):
    ...
    ValueError: dominance=0.3 must lie in (1/3, 1]: a strategy must beat the other two
    """

    #: Radius of the RoI's neighbourhood: blocks with d <= near are "next to the RoI" (the 5 x 5
    #: blocks around a one-block RoI without the corners; 2 blocks = 16 pixels at block 8, the reach
    #: of a few stacked 3 x 3 convolutions). On a 12 x 12 grid it holds about a fifth of the
    #: candidate blocks, so a map spread evenly has a local share near 0.2. The same radius on a
    #: volume's grid (the 5 x 5 x 5 blocks around a one-block RoI without the 44 farthest) holds
    #: about 9% of the candidates of a 12 x 12 x 12 grid (module docstring, *Volumes*).
    near: float = DEFAULT_NEAR
    #: A block joins the path component when |ATE| >= path_level * max |ATE|: strong enough to be
    #: part of the chain, ignoring the faint halo natural replacements leave around it.
    path_level: float = DEFAULT_PATH_LEVEL
    #: Chain-likeness of the path component (steps from the RoI / blocks): a chain one block wide
    #: scores 1, a band two blocks wide 1/2, a disc of radius 3 blocks around 0.1; 0.3 accepts
    #: staircase (diagonal) chains and a small halo at the RoI, and refuses blobs. On a volume's
    #: grid the rule compares with ``min_linearity ** 2`` (0.09): a tube w x w blocks thick scores
    #: 1 / w**2 there (module docstring, *Volumes*).
    min_linearity: float = 0.3
    #: Share of the path component's own mass that must lie beyond the near radius: a chain leading
    #: away from the RoI, not a compact cluster around it that the closing happens to make
    #: chain-shaped. A chain of equal blocks crossing the near disc (about 2.5 blocks) and running k
    #: blocks past it has a far share of about k / (k + 2.5): 1/3 asks for k >= 1.25 blocks.
    min_path_far: float = 1 / 3
    #: With a structure mask: fraction of the path's blocks that must lie on structure connected
    #: to the RoI (the chain follows the image structure, not an arbitrary line).
    min_on_structure: float = 0.5
    #: Share of the mass a strategy needs to name the map; below it in all three the map is
    #: "mixed". 0.6 asks for a clear majority, not a plurality.
    dominance: float = 0.6
    #: Pixels of a block that must be on the structure mask for the block to count (0: any pixel).
    structure_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            check_float(name, value, minimum=0.0)
        if not 1 / 3 < self.dominance <= 1:
            raise ValueError(f"dominance={self.dominance} must lie in (1/3, 1]: a strategy must beat the other two")
        for name in ("path_level", "min_linearity", "min_path_far", "min_on_structure", "structure_fraction"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name}={getattr(self, name)} is a fraction; expected a value in [0, 1]")


THRESHOLDS = StrategyThresholds()


def _label_kernel(shares: np.ndarray, mass: np.ndarray, dominance: float) -> tuple[np.ndarray, np.ndarray]:
    """Label and confidence from shares (..., 3) and the mass (...)."""
    safe = np.nan_to_num(shares, nan=0.0)
    best = safe.argmax(-1)
    top = safe.max(-1)
    names = np.asarray(STRATEGIES, dtype=object)[best]
    decided = top >= dominance
    label = np.where(decided, names, "mixed")
    confidence = np.where(
        decided,
        (top - dominance) / max(1 - dominance, 1e-12),
        (dominance - top) / (dominance - 1 / 3),
    )
    empty = ~(mass > 0)
    label = np.where(empty, "no effect", label).astype(str)
    confidence = np.clip(np.where(empty, 1.0, confidence), 0.0, 1.0)
    return label, confidence


def classify(
    effects: Any,
    structure: Any = None,
    *,
    thresholds: StrategyThresholds = THRESHOLDS,
    dim: str = "image",
) -> xr.Dataset:
    """Label every effect map local / global / sequential / mixed / no effect, with a confidence.

    Parameters
    ----------
    effects : xarray.Dataset (or a list/dict of them on one grid, stacked along `dim`)
        Effects in the schema (any producer: :func:`pdcr_lab.explain`, baselines, stacks of them),
        maps of images (block_y, block_x) or of volumes (block_z, block_y, block_x), not both.
    structure : DataArray or array, optional
        Foreground/structure mask for the alignment descriptors and the sequential rule (see
        :func:`pdcr_lab.strategies.structure_blocks`); without it, paths are judged by shape only.
    thresholds : StrategyThresholds
        The rule's thresholds (module docstring).
    dim : str
        Stack dimension of a list/dict of maps (default ``"image"``).

    Returns
    -------
    xarray.Dataset
        Aligned with the stack dims of `effects`: every descriptor of
        :func:`pdcr_lab.strategies.descriptors`, ``share`` over a ``strategy`` dim (local, global,
        sequential; NaN for maps without effect), ``label`` (str) and ``confidence`` in [0, 1].
        The thresholds are echoed in attrs (on a volume's grid also
        ``threshold_min_linearity_grid``, the linearity threshold the rule used: module docstring).
        Bad input raises the ``ValueError`` of :func:`pdcr_lab.strategies.descriptors` (no recorded
        RoI, grids or ranks mixed in one call).

    Examples
    --------
    An all-zero map is "no effect"; one block next to the RoI makes it "local":

    >>> import pdcr_lab
    >>> ds = pdcr_lab.schema.empty_effects(grid=(6, 6), block=4)
    >>> ds["roi_block"][2:4, 2:4] = True
    >>> str(pdcr_lab.strategies.classify(ds).label.values)
    'no effect'
    >>> ds["ate"][1, 2] = -5.0
    >>> str(pdcr_lab.strategies.classify(ds).label.values)
    'local'

    The same rule on a volume: a chain along x, one block thick, leading away from the RoI.

    >>> vol = pdcr_lab.schema.empty_effects(grid=(6, 6, 8), block=4)
    >>> vol["roi_block"][2:4, 2:4, 0:2] = True
    >>> vol["ate"][2, 2, 2:8] = -20.0
    >>> str(pdcr_lab.strategies.classify(vol).label.values)
    'sequential'
    """
    if not isinstance(thresholds, StrategyThresholds):
        raise TypeError(f"thresholds must be a StrategyThresholds, got {type(thresholds).__name__}")
    t = thresholds
    out = descriptors(
        effects, structure, near=t.near, path_level=t.path_level, structure_fraction=t.structure_fraction, dim=dim
    )
    # A path w blocks thick has linearity 1 / w**(n - 1) on n grid axes: carry the threshold as a
    # thickness. Axes of one block do not count (a one-slice volume is a 2-D grid for this rule).
    sizes = [int(g) for g in str(out.attrs["grid"]).split("x")]
    n = max(2, sum(g > 1 for g in sizes))
    min_linearity = t.min_linearity ** (n - 1)
    is_path = (out.path_far_share >= t.min_path_far) & (out.path_linearity >= min_linearity)
    if structure is not None:
        is_path = is_path & (out.path_on_structure >= t.min_on_structure)
    sequential = xr.where(is_path, out.path_mass, 0.0)
    # The near part of a path is sequential evidence, not local: remove it from the local share.
    near_on_path = xr.where(is_path, out.path_near_share, 0.0)
    local = out.near_share - near_on_path
    global_ = 1.0 - local - sequential
    shares = xr.concat([local, global_, sequential], dim="strategy").clip(0.0, 1.0)
    shares = shares.assign_coords(strategy=list(STRATEGIES)).where(out.mass > 0)
    out["share"] = shares.transpose(..., "strategy").assign_attrs(
        long_name="share of the effect mass per strategy", units="1"
    )
    label, confidence = xr.apply_ufunc(
        _label_kernel,
        out["share"],
        out["mass"],
        kwargs={"dominance": t.dominance},
        input_core_dims=[["strategy"], []],
        output_core_dims=[[], []],
        dask="forbidden",
    )
    out["label"] = label.assign_attrs(long_name="perceptual strategy", labels=", ".join(LABELS))
    out["confidence"] = confidence.assign_attrs(long_name="margin of the label's decision", units="1")
    out["is_path"] = is_path.assign_attrs(long_name="the RoI's strong component is a path leading away from it")
    out.attrs.update({f"threshold_{k}": float(v) for k, v in asdict(t).items()})
    if n != 2:
        out.attrs["threshold_min_linearity_grid"] = float(min_linearity)
    return out
