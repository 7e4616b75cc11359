"""Labelling effect maps with a perceptual strategy: local, global, sequential, mixed or no effect.

The rule splits a map's effect mass W into three shares that sum to 1, from the geometry of the map
around its RoI (the descriptors of :mod:`pdcr_lab.strategies._descriptors`: spread level, ring
levels, excess and the chain on the excess):

* **global** share = the *spread* part (every block's |ATE| up to the median of the blocks beyond
  the near radius: what a model pooling the whole image gives every block, the near ones included),
  the rest of the mass beyond the near radius that depends on the distance alone (ring levels), and
  the far excess off a chain (remote sites without a chain to the RoI: a single remote cause such as
  :class:`pdcr_lab.testing.PlantedCauseModel`'s marker is global too: the RoI depends on content far
  away, not on its neighbourhood or a path).
* **sequential** share = the excess over the ring levels on the RoI's *chain* (beyond the near
  radius) and on its route through the near radius, when the chain *leads away*: it reaches at
  least ``min_chain_length`` blocks beyond the near radius (``chain_extent >= near +
  min_chain_length``), its far part is chain-like (``chain_linearity >= min_linearity``) and, when
  a structure mask is given, it runs on structure connected to the RoI (``chain_on_structure >=
  min_on_structure``); otherwise 0: a chain too short to lead away is part of the neighbourhood
  (local), the excess of one that is not chain-like or off the structure is local within the near
  radius and global beyond it.
* **local** share = the rest of the mass within the near radius: its ring levels above the spread
  level and its excess off the chain's route.

Chain blocks are judged against the far field (their excess over their ring's level, relative to
the largest such excess beyond the near radius), not against the map's peak: a chain of -3 to -5
DSC points leading away from a neighbourhood of -30 is a chain, and its share is what it carries
(so such a map is "local" with "sequential" present, not "local" alone). The ring levels keep an
isotropic neighbourhood out of the chain, and the spread level keeps a global floor out of the
local share (a model with effects on 90% of the blocks is "global" even where its near blocks
are stronger).

The label is the strategy whose share is at least ``dominance``; none -> ``"mixed"``; W = 0 ->
``"no effect"`` (the map carries no evidence, so no strategy is guessed). A strategy is *present*
when its share is at least ``present`` (a present strategy besides the label's is the map's
*secondary* strategy), and ``ambiguous`` flags the maps that show two strategies (a ``"mixed"``
label or two present): the label alone would force one.

Confidence (in [0, 1]) is the margin of the decision, measured in shares:
``(s_max - dominance) / (1 - dominance)`` for a strategy label (0 on the decision boundary, 1 when
all the mass has that strategy), ``(dominance - s_max) / (dominance - 1/3)`` for ``"mixed"`` (1 when
the three shares are equal), and 1 for ``"no effect"``.

The rule was validated on a systematic family of hand-built models whose strategy is known by
construction (:mod:`pdcr_lab.strategies._family`, ``docs/strategy_family.md``: accuracy before and
after this rule, on held-out members).

**Volumes.** The rule and the thresholds table are the same for 3-D maps (grid (block_z, block_y,
block_x), distances in blocks along each axis, 26-neighbour connectivity, rings are shells; see
:mod:`pdcr_lab.strategies._descriptors`). The shares, ``dominance``, ``present``, ``path_level``,
``min_on_structure`` and ``structure_fraction`` are ratios that mean the same on any grid and
apply unchanged; ``min_chain_length`` is a length along the chain and ``ring_blocks`` a count of
blocks, both unchanged. Two thresholds are tied to the 2-D geometry:

* ``near`` (2.5 blocks) is kept as a *radius*: the reach, in blocks along each axis, of a few
  stacked 3 x 3 x 3 convolutions is what it is in 2-D. The ball it covers is larger (81 blocks
  around a one-block RoI instead of 21) but a much smaller fraction of the grid (about 9% of the
  candidate blocks of a 12 x 12 x 12 grid with a 2 x 2 x 2 RoI, against about a fifth in 2-D).
* ``min_linearity`` is compared with ``chain_linearity`` as ``min_linearity ** (n - 1)`` on a grid
  of n axes: the same number in 2-D (0.3) and 0.09 in 3-D (n counts the axes with more than one
  block: a one-slice volume, block_z = 1, keeps 0.3 and the 2-D labels). The linearity of a
  straight chain w blocks thick is 1 / w in 2-D (a band) but 1 / w**2 in 3-D (a w x w tube), so
  the threshold is carried as the *thickness* it accepts (up to about 3 blocks, 1 / 0.3): a vessel
  straddling two block rows and two block slices (a 2 x 2 tube, 1/4) is a chain as the 2-blocks-wide
  band (1/2) is in 2-D, and a filled ball is refused. The value used is in
  ``attrs["threshold_min_linearity_grid"]`` of the result of :func:`classify`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..checks import check_float, check_int
from ._descriptors import DEFAULT_NEAR, DEFAULT_PATH_LEVEL, DEFAULT_RING_BLOCKS, descriptors

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
    #: candidate blocks. The same radius on a volume's grid holds about 9% of the candidates of a
    #: 12 x 12 x 12 grid (module docstring, *Volumes*).
    near: float = DEFAULT_NEAR
    #: Strength a block needs, as a fraction of a reference peak: to join the path component
    #: (descriptor ``path_*``: of the map's largest |ATE|), and to join the chain (of the largest
    #: excess over the ring levels of a supporting block beyond the near radius). 0.1 ignores the
    #: faint halo natural replacements leave around a chain and keeps its weakest tenth.
    path_level: float = DEFAULT_PATH_LEVEL
    #: Chain-likeness of the chain's far part (steps spanned / blocks): a chain one block wide
    #: scores 1, a band two blocks wide 1/2, a staircase about 1/2 to 2/3, a disc of radius 3
    #: blocks around 0.1; 0.3 accepts bands up to about 3 blocks thick and refuses blobs. On a
    #: volume's grid the rule compares with ``min_linearity ** 2`` (0.09): a tube w x w blocks thick
    #: scores 1 / w**2 there (module docstring, *Volumes*).
    min_linearity: float = 0.3
    #: How far (blocks) beyond the near radius the chain must reach to *lead away* from the RoI: one
    #: block, so a chain ending within 3.5 blocks is part of the neighbourhood. A compact cluster
    #: at the RoI with one block just past the near radius is no chain.
    min_chain_length: float = 1.0
    #: With a structure mask: fraction of the chain's blocks (far part and route) that must lie on
    #: structure connected to the RoI (the chain follows the image structure, not an arbitrary line).
    min_on_structure: float = 0.5
    #: Share of the mass a strategy needs to name the map; below it in all three the map is
    #: "mixed". 0.6 asks for a clear majority, not a plurality.
    dominance: float = 0.6
    #: Share of the mass a strategy needs to be reported *present* (the secondary strategy, or a
    #: component of a mixed map): a tenth of the evidence. A chain below it is not mentioned.
    present: float = 0.1
    #: Fewest candidate blocks a half-block ring needs for its median to be the ring level (the
    #: isotropic part at that distance): 4, the blocks at one distance from a 2 x 2 RoI's corners;
    #: smaller rings (grid corners) take the spread level, so their blocks keep their excess.
    ring_blocks: int = DEFAULT_RING_BLOCKS
    #: Pixels of a block that must be on the structure mask for the block to count (0: any pixel).
    structure_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            check_float(name, value, minimum=0.0)
        if not 1 / 3 < self.dominance <= 1:
            raise ValueError(f"dominance={self.dominance} must lie in (1/3, 1]: a strategy must beat the other two")
        for name in ("path_level", "min_linearity", "min_on_structure", "present", "structure_fraction"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name}={getattr(self, name)} is a fraction; expected a value in [0, 1]")
        check_int("ring_blocks", self.ring_blocks, minimum=1)


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
        :func:`pdcr_lab.strategies.structure_blocks`); without it, chains are judged by shape only.
    thresholds : StrategyThresholds
        The rule's thresholds (module docstring).
    dim : str
        Stack dimension of a list/dict of maps (default ``"image"``).

    Returns
    -------
    xarray.Dataset
        Aligned with the stack dims of `effects`: every descriptor of
        :func:`pdcr_lab.strategies.descriptors`, ``share`` over a ``strategy`` dim (local, global,
        sequential; NaN for maps without effect), ``label`` (str), ``confidence`` in [0, 1],
        ``is_path`` (the RoI's chain leads away from it), ``present`` (bool, over ``strategy``: the
        share is at least ``present``; a present strategy other than the label's is the map's
        *secondary* strategy) and ``ambiguous`` (``"mixed"``, or two strategies present). Only
        booleans and numbers are added (a stack relabelled by
        :func:`~pdcr_lab.strategies.label_maps` with pairs not explained stays storable).
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

    A strong neighbourhood with a weak chain leading away: "local", with "sequential" present.

    >>> ds = pdcr_lab.schema.empty_effects(grid=(12, 12), block=4)
    >>> ds["roi_block"][5:7, 9:11] = True
    >>> ds["ate"][4:8, 8:12] = -30.0                     # the blocks around the RoI
    >>> ds["ate"][5:7, 9:11] = 0.0                       # (RoI blocks are never perturbed)
    >>> ds["ate"][5, 0:8] = -6.0                         # a chain leading away
    >>> out = pdcr_lab.strategies.classify(ds)
    >>> str(out.label.values), out.strategy[out.present].values.tolist(), bool(out.ambiguous)
    ('local', ['local', 'sequential'], True)

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
        effects, structure, near=t.near, path_level=t.path_level, structure_fraction=t.structure_fraction, dim=dim,
        ring_blocks=int(t.ring_blocks),
    )
    # A chain w blocks thick has linearity 1 / w**(n - 1) on n grid axes: carry the threshold as a
    # thickness. Axes of one block do not count (a one-slice volume is a 2-D grid for this rule).
    sizes = [int(g) for g in str(out.attrs["grid"]).split("x")]
    n = max(2, sum(g > 1 for g in sizes))
    min_linearity = t.min_linearity ** (n - 1)
    short = out.chain_extent < t.near + t.min_chain_length
    is_path = ~short & (out.chain_linearity >= min_linearity)
    if structure is not None:
        is_path = is_path & (out.chain_on_structure >= t.min_on_structure)
    # The chain's excess is sequential when the chain leads away. A chain too short to lead away is
    # the neighbourhood's (local); one that is not chain-like or off the structure is like any
    # other excess: local within the near radius, global beyond it.
    sequential = xr.where(is_path, out.chain_share + out.chain_route_share, 0.0)
    local = (out.ring_near_share + out.excess_near_share + xr.where(is_path, 0.0, out.chain_route_share)
             + xr.where(short, out.chain_share, 0.0))
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
    out["is_path"] = is_path.assign_attrs(long_name="the RoI's chain leads away from it")
    present = (out["share"].fillna(0.0) >= t.present) & (out["share"].fillna(0.0) > 0)
    out["present"] = present.assign_attrs(long_name="the strategy carries at least the share 'present'")
    out["ambiguous"] = ((label == "mixed") | (present.sum("strategy") >= 2)).assign_attrs(
        long_name="the map shows two strategies (mixed, or a secondary strategy present)"
    )
    out.attrs.update({f"threshold_{k}": float(v) for k, v in asdict(t).items()})
    if n != 2:
        out.attrs["threshold_min_linearity_grid"] = float(min_linearity)
    return out
