"""Descriptors of the spatial layout of an effect map around its RoI (docs/method.md section 8).

Every descriptor is computed from the raw, signed map ``ate`` (outcome units, docs/method.md section 4),
the RoI blocks, and optionally a structure mask, for every map of a dataset at once: the leading
stack dims (``model``, ``dataset``, ``image``, ``roi``, ``method``, ...) are carried through by
:func:`xarray.apply_ufunc` and the numpy kernels work on ``(..., block_y, block_x)`` arrays of images
and ``(..., block_z, block_y, block_x)`` arrays of volumes alike (every kernel is written for n
spatial axes), so no Python loop runs over maps. Notation, for one map on a grid of blocks
p = (row, col), or p = (z, row, col) for a volume (n = 2 or 3 grid axes):

* w(p) = |ATE(p)| outside the RoI (RoI blocks are 0 by the schema), W = sum_p w(p): the effect mass.
* C = the candidate (non-RoI) blocks, n_C = |C|.
* d(p) = min over RoI blocks q of ||p - q||_2, the distance in blocks between block centres
  (1 for an edge neighbour of the RoI, sqrt(2) for a diagonal one, 0 inside the RoI; in a volume
  1 for a face neighbour, sqrt(2) for an edge one and sqrt(3) for a corner one). Distances count
  *blocks along each axis*, whatever the block's sides in pixels (voxels): with the cuboid blocks of
  a volume (``attrs["block_shape"]``, e.g. 2 x 4 x 4 voxels) one step along z counts 1 like one step
  along y or x. The block is PdCR's unit of intervention and the thresholds (the near radius) are in
  blocks; measuring in voxels would make them depend on the block's shape, and the schema records
  no voxel spacing in mm to measure physical distance anyway.
* Connectivity is 8-neighbour connectivity on a 2-D block grid and 26-neighbour connectivity on a
  3-D one (the 3^n - 1 blocks sharing an edge or a corner, in 3-D a face, an edge or a corner); a
  set is "connected to the RoI" when it is reached from the RoI blocks by steps between such
  neighbours inside the set.
* Strong blocks: w(p) > 0 and w(p) >= path_level * max_q w(q). The *path component* K is the set of
  blocks connected to the RoI inside the 3 x 3 (3 x 3 x 3 in a volume) morphological closing of
  (strong blocks + RoI): the closing bridges gaps of one or two blocks, which PdCR leaves in a chain
  wherever the structure is redundant (a thick vessel straddling two block rows survives the
  replacement of either block).
* The mass's second moment M = sum_p w(p) (p - c)(p - c)^T around the RoI's centre c is n x n (2 x 2
  or 3 x 3); anisotropy = 1 - l_min / l_max of its eigenvalues. In 3-D mass on one plane through c
  is as degenerate as mass on one line (l_min = 0, anisotropy 1); 0 needs mass spread in every
  direction (a shell or a ball around the RoI).
* Radial rings k - 1 < d <= k, k = 1 .. ceil(grid diagonal), are shells in 3-D.
* **The mass by its geometry** (the shares :func:`~pdcr_lab.strategies.classify` labels with). The
  *spread level* f = the median of w over the candidate blocks beyond the near radius (d > near):
  the effect every block has when the model pools the whole image (0 unless more than half of the
  far blocks carry an effect). The *ring level* b(p) = the median of w over the candidate blocks of
  p's half-block ring (round(2 d) equal; rings of fewer than ``ring_blocks`` candidates fall back to
  f), raised to f: what an effect depending on the distance alone would give p. Every block's
  w(p) then splits into a spread part min(w, f), a ring part min(w, b) - min(w, f) and an excess
  e(p) = max(w - b, 0): what singles the block out among those at its distance.
* **The chain** leading away from the RoI lies on the excess: chain blocks support the RoI
  (ATE < 0) with e(p) > 0 and e(p) >= path_level * (the largest excess of a supporting block
  beyond the near radius), so that a weak chain next to a strong neighbourhood is still seen (the
  strong neighbourhood's ring levels take its own mass out). The chain component C is the set of
  blocks connected to the RoI inside the closing of (chain blocks + RoI), as for the path component;
  its far part C_far = C beyond the near radius, its *route* = the blocks of C within the near
  radius on a shortest path (inside C) from the RoI to the first blocks of C_far, and their
  neighbours in C (the width of the chain). ``chain_*``
  describe C_far (extent, steps spanned from its first to its last block, blocks, linearity) and
  the shares of the mass it and its route hold above the ring levels.

A volume of one slice of blocks (block_z = 1) has the descriptors of the same 2-D map: on one slice
26- and 8-neighbours, the 3 x 3 x 3 and 3 x 3 closings, distances and rings coincide. The one
exception is ``anisotropy``: the slice's mass has no spread along z (l_min = 0), so it is 1, as for
a 2-D map on a grid of one row.

Only ratios of masses (shares, entropies, balances) are scale-free; masses are kept in outcome units.
Maps without any effect (W = 0) get NaN for every scale-free descriptor. Images and volumes cannot
be described in one call (a ValueError says so): their distances and shares do not compare.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import reduce
from typing import Any

import numpy as np
import xarray as xr

from ..schema import BOX_VARS, GRID_DIMS, GRID_DIMS_3D, STACK_DIMS, block_shape, grid_dims, stack, validate

__all__ = ["DESCRIPTORS", "descriptors", "effect_grid", "structure_blocks"]

#: Defaults of :func:`descriptors`, shared with :class:`~pdcr_lab.strategies.StrategyThresholds`
#: (which documents why): the near radius in blocks, the fraction of the reference peak a block
#: needs to be *strong* (to join the RoI's path component, or its chain), and the fewest candidate
#: blocks of a ring whose median is its ring level.
DEFAULT_NEAR = 2.5
DEFAULT_PATH_LEVEL = 0.1
DEFAULT_RING_BLOCKS = 4

#: Descriptor name -> (long name, units). ``"DSC points"`` is replaced by the map's own units.
DESCRIPTORS: dict[str, tuple[str, str]] = {
    "mass": ("effect mass W = sum |ATE| outside the RoI", "outcome"),
    "support": ("S = sum of |ATE| over blocks with ATE < 0 (blocks that support the RoI)", "outcome"),
    "harm": ("H = sum of ATE over blocks with ATE > 0 (blocks that hurt the RoI)", "outcome"),
    "balance": ("signed balance (S - H) / (S + H): +1 all support, -1 all harm", "1"),
    "radial_mass": ("effect mass in the distance ring k - 1 < d <= k", "outcome"),
    "d50": ("distance from the RoI (blocks) within which half of the mass lies", "blocks"),
    "d50_uniform": ("d50 of a map with equal mass on every candidate block", "blocks"),
    "d50_rel": ("d50 / d50_uniform: about 1 for mass spread evenly, near 0 for mass next to the RoI", "1"),
    "mean_distance": ("mass-weighted mean distance sum w d / W", "blocks"),
    "near_share": ("share of the mass within the near radius (d <= near)", "1"),
    "nonzero_fraction": ("fraction of candidate blocks with ATE != 0", "1"),
    "n_eff": ("effective number of blocks exp(-sum p log p), p = w / W", "blocks"),
    "n_eff_fraction": ("n_eff / n_C", "1"),
    "anisotropy": ("1 - l_min / l_max of the mass-weighted second moment around the RoI centre", "1"),
    "structure_share": ("share of the mass on structure blocks connected to the RoI", "1"),
    "structure_chance": ("share of candidate blocks on structure connected to the RoI (chance level)", "1"),
    "path_mass": ("share of the mass in the RoI-connected component of strong blocks", "1"),
    "path_near_share": ("share of the mass in that component within the near radius (d <= near)", "1"),
    "path_blocks": ("number of blocks in the RoI-connected component of strong blocks", "blocks"),
    "path_extent": ("largest distance d from the RoI of a block of that component with an effect", "blocks"),
    "path_far_share": ("share of that component's mass beyond the near radius (d > near)", "1"),
    "path_steps": ("largest number of 8-neighbour steps from the RoI inside that component", "blocks"),
    "path_linearity": ("path_steps / path_blocks: 1 for a thin chain, ~1/(pi r) for a blob of radius r", "1"),
    "path_on_structure": ("fraction of that component's blocks on structure connected to the RoI", "1"),
    "floor": ("spread level f: median |ATE| of the candidate blocks beyond the near radius", "outcome"),
    "spread_share": ("share of the mass under the spread level: sum min(w, f) / W", "1"),
    "ring_near_share": ("share of the mass within the near radius explained by its ring level above f", "1"),
    "ring_far_share": ("share of the mass beyond the near radius explained by its ring level above f", "1"),
    "excess_near_share": ("share of the mass within the near radius above its ring level, off the chain's route",
                          "1"),
    "excess_far_share": ("share of the mass beyond the near radius above its ring level, off the chain", "1"),
    "chain_share": ("share of the mass above the ring levels on the chain beyond the near radius", "1"),
    "chain_route_share": ("share of the mass above the ring levels on the chain's route within the near radius",
                          "1"),
    "chain_blocks": ("number of blocks of the chain beyond the near radius", "blocks"),
    "chain_steps": ("8-neighbour steps spanned by the chain beyond the near radius (last - first + 1)", "blocks"),
    "chain_linearity": ("chain_steps / chain_blocks: 1 for a thin chain, 1/2 for a band two blocks wide", "1"),
    "chain_extent": ("largest distance d from the RoI of a chain block with an effect", "blocks"),
    "chain_on_structure": ("fraction of the chain's blocks (far part and route) on structure connected to the RoI",
                           "1"),
}

#: ``long_name`` of the descriptors whose wording changes on a volume's grid (26-neighbour steps).
_LONG_NAMES_3D = {
    name: DESCRIPTORS[name][0].replace("8-neighbour", "26-neighbour") for name in ("path_steps", "chain_steps")
}


# -- input checks ---------------------------------------------------------------------------------
def _label_of(da: xr.DataArray, index: tuple[int, ...]) -> str:
    """Human-readable position of one map in the stack dims, for error messages."""
    parts = []
    for dim, i in zip(da.dims, index):
        value = da[dim].values[i] if dim in da.coords else i
        parts.append(f"{dim}={value.item() if isinstance(value, np.generic) else value!r}")
    return "{" + ", ".join(parts) + "}" if parts else "the map"


def _bad_maps(flags: xr.DataArray, limit: int = 4) -> str:
    index = np.argwhere(np.asarray(flags))
    names = [_label_of(flags, tuple(int(v) for v in row)) for row in index[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(names) + more


def _times(values: Iterable[Any]) -> str:
    """``6x6x6`` from (6, 6, 6)."""
    return "x".join(str(v) for v in values)


def _rank_of(item: xr.Dataset) -> tuple[str, ...]:
    """Grid dims of one map, without validating it yet (a map off the grid gets the 2-D dims)."""
    return GRID_DIMS_3D if "ate" in item and "block_z" in item["ate"].dims else GRID_DIMS


def _as_dataset(effects: Any, dim: str) -> xr.Dataset:
    """A Dataset of maps; a sequence or mapping of results must share one grid, then is stacked."""
    if isinstance(effects, xr.Dataset):
        return effects
    if isinstance(effects, Mapping):
        labels, items = list(effects.keys()), list(effects.values())
    elif isinstance(effects, Sequence) and not isinstance(effects, (str, bytes)):
        items = list(effects)
        labels = list(range(len(items)))
    else:
        raise TypeError(f"effects must be an effects Dataset or a list/dict of them, got {type(effects).__name__}")
    if not items or not all(isinstance(item, xr.Dataset) for item in items):
        raise TypeError("effects must be a non-empty list/dict of effects Datasets")
    ranks = sorted({len(_rank_of(item)) for item in items})
    if len(ranks) > 1:
        raise ValueError(
            "maps of different rank were mixed in one call: 2-D maps on (block_y, block_x) and 3-D maps "
            "on (block_z, block_y, block_x); describe images and volumes separately (distances and "
            "shares in blocks do not compare between them)"
        )
    unit = "px" if ranks == [2] else "voxels"
    grids = []
    for item in items:
        sides = item.attrs.get("block")
        if ranks == [3]:
            try:
                sides = _times(block_shape(item))
            except (ValueError, TypeError, KeyError):  # validate() says what is wrong with the map
                pass
        grids.append((tuple(item.sizes.get(d) for d in _rank_of(item)), str(sides)))
    if len(set(grids)) > 1:
        described = sorted({f"{_times(g)} blocks of {b} {unit}" for g, b in grids})
        raise ValueError(
            f"maps of different grids were mixed in one call: {described}; "
            "describe each grid separately (descriptors compare distances in blocks)"
        )
    return stack(items, dim=dim, labels=labels)


def _check_grid(ds: xr.Dataset, dims: tuple[str, ...]) -> None:
    """Refuse stacks of maps that do not share one block grid."""
    for key in ("block", "block_shape", "image_depth", "image_height", "image_width"):
        if key in ds.coords and ds.coords[key].ndim > 0 and np.unique(np.asarray(ds.coords[key])).size > 1:
            values = sorted({str(v) for v in np.asarray(ds.coords[key]).ravel()})
            raise ValueError(
                f"maps of different grids were mixed in one call: {key!r} takes the values {values}; "
                "describe each grid separately (descriptors compare distances in blocks)"
            )
    missing = ds["ate"].isnull()
    if bool(missing.any()):
        bad = missing.any(dims)
        raise ValueError(
            f"'ate' has NaN blocks in the maps {_bad_maps(bad)}: maps of different grids were mixed "
            "(stacking pads the smaller grid with NaN) or a map is incomplete; describe each grid separately"
        )


def _start(dim: str) -> str:
    """Coordinate of a grid dim's first pixel: ``block_y`` -> ``y_start``."""
    return dim.removeprefix("block_") + "_start"


def _roi_blocks(ds: xr.Dataset, dims: tuple[str, ...]) -> xr.DataArray:
    """The RoI on the block grid: ``roi_block``, else the blocks overlapping the recorded RoI box."""
    box = BOX_VARS[len(dims)]
    if "roi_block" in ds:
        roi = ds["roi_block"].astype(bool)
    elif all(k in ds for k in box):
        n = len(dims)
        overlaps = []
        for dim, side, first, size in zip(dims, block_shape(ds), box[:n], box[n:]):
            pos, a, length = ds[_start(dim)], ds[first], ds[size]
            overlaps += [(pos < a + length) & (pos + side > a), length > 0]
        roi = reduce(lambda x, y: x & y, overlaps)
    else:
        raise ValueError(
            f"the effects have no recorded RoI: neither 'roi_block' nor the RoI box "
            f"({', '.join(box)}); strategies are defined relative to the RoI"
        )
    roi = roi.broadcast_like(ds["ate"]).transpose(*ds["ate"].dims)
    empty = ~roi.any(dims)
    if bool(empty.any()):
        raise ValueError(
            f"no RoI is recorded for the maps {_bad_maps(empty)} (roi_block is all False); "
            "strategies are defined relative to the RoI"
        )
    if bool(roi.all(dims).any()):
        raise ValueError("the RoI covers the whole grid in some maps: there is no block outside it to describe")
    return roi


def effect_grid(effects: Any, *, dim: str = "image") -> tuple[xr.DataArray, xr.DataArray, xr.Dataset]:
    """Check `effects` and return ``(ate, roi_block, dataset)`` on one shared block grid.

    Parameters
    ----------
    effects : effects Dataset, or a list/dict of them
        Maps in the schema, on a 2-D grid (block_y, block_x) or a volume's 3-D grid (block_z,
        block_y, block_x); a list or dict is stacked along `dim` after checking that the maps share
        one grid (images and volumes are never mixed).
    dim : str
        Stack dimension of a list/dict of maps (one of :data:`pdcr_lab.schema.STACK_DIMS`).

    Raises
    ------
    ValueError
        maps without a recorded RoI, maps of different grids or ranks, or component (``layer``) effects.
    """
    ds = _as_dataset(effects, dim)
    if "ate" in ds and set(GRID_DIMS) <= set(ds["ate"].dims):
        _check_grid(ds, grid_dims(ds["ate"]))  # before validate: padding a smaller grid also breaks the dtypes
    validate(ds)
    if not all(d in ds["ate"].dims for d in GRID_DIMS):
        raise ValueError(
            f"strategies need maps on the block grid {GRID_DIMS} (or {GRID_DIMS_3D} for a volume); got 'ate' "
            f"with dims {ds['ate'].dims} (component effects have no spatial layout)"
        )
    roi = _roi_blocks(ds, grid_dims(ds["ate"]))
    return ds["ate"], roi, ds


def _dims_text(dims: Sequence[str]) -> str:
    return "(" + ", ".join(dims) + ")"


def structure_blocks(structure: Any, effects: xr.Dataset, *, min_fraction: float = 0.0) -> xr.DataArray:
    """A structure mask (e.g. the ground truth or predicted mask) on the maps' block grid.

    Parameters
    ----------
    structure : DataArray or array
        Boolean pixels with dims ``(..., y, x)`` or blocks with dims ``(..., block_y, block_x)``
        (for volumes voxels ``(..., z, y, x)`` or blocks ``(..., block_z, block_y, block_x)``);
        leading dims must be stack dims of `effects` (e.g. ``image``) and broadcast against them.
        A plain (H, W) or (block_y, block_x) array ((D, H, W) or (block_z, block_y, block_x) for a
        volume) applies to every map.
    effects : xarray.Dataset
        The effects (they give the grid and the block's sides).
    min_fraction : float
        A block is structure when the fraction of its pixels on the mask exceeds this (default 0:
        any pixel, so thin vessels one or two pixels wide still mark their blocks).

    Examples
    --------
    >>> ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    >>> mask = np.zeros((8, 8), bool)
    >>> mask[1, 5] = True                                   # one pixel in the top-right block
    >>> structure_blocks(mask, ds).values
    array([[False,  True],
           [False, False]])
    >>> volume = pdcr_lab.schema.empty_effects(grid=(2, 1, 1), block=(2, 4, 4))
    >>> voxels = np.zeros((4, 4, 4), bool)
    >>> voxels[3, 0, 0] = True                              # one voxel in the second slice of blocks
    >>> structure_blocks(voxels, volume).values.ravel()
    array([False,  True])
    """
    dims = grid_dims(effects)
    n = len(dims)
    pixel_dims = tuple(d.removeprefix("block_") for d in dims)
    sides = block_shape(effects)
    grid = tuple(effects.sizes[d] for d in dims)
    pixels = "voxels" if n == 3 else "pixels"
    if not isinstance(structure, xr.DataArray):
        array = np.asarray(structure)
        if array.ndim != n:
            names = ("(H, W)", "(block_y, block_x)", "(..., y, x)") if n == 2 else (
                "(D, H, W)", "(block_z, block_y, block_x)", "(..., z, y, x)")
            raise ValueError(
                f"structure must be an {names[0]} or {names[1]} array, or a DataArray with dims "
                f"{names[2]}; got an array of shape {array.shape}"
            )
        structure = xr.DataArray(array, dims=dims if array.shape == grid else pixel_dims)
    if n == 2 and ("z" in structure.dims or "block_z" in structure.dims):
        raise ValueError(f"structure is a volume's mask (dims {structure.dims}) but the maps are 2-D")
    unknown = [d for d in structure.dims if d not in (*STACK_DIMS, *dims, *pixel_dims)]
    if unknown:
        raise ValueError(
            f"structure has unknown dims {unknown}; expected stack dims and {_dims_text(pixel_dims)} "
            f"or {_dims_text(dims)}"
        )
    if set(pixel_dims) <= set(structure.dims):
        size = tuple(structure.sizes[d] for d in pixel_dims)
        covered = tuple(g * b for g, b in zip(grid, sides))
        if size != covered:
            raise ValueError(
                f"structure is {_times(size)} {pixels} but the maps' grid covers {_times(covered)} {pixels}"
            )
        lead = [d for d in structure.dims if d not in pixel_dims]
        values = np.asarray(structure.transpose(*lead, *pixel_dims), dtype=float)
        split = [v for g, b in zip(grid, sides) for v in (g, b)]  # (g0, b0, g1, b1, ...): average each block
        blocks = values.reshape(*values.shape[:-n], *split).mean(axis=tuple(range(1 - 2 * n, 0, 2))) > min_fraction
        coords = {d: structure[d] for d in lead if d in structure.coords}
        return xr.DataArray(blocks, dims=(*lead, *dims), coords=coords)
    if set(dims) <= set(structure.dims):
        got = tuple(structure.sizes[d] for d in dims)
        if got != grid:
            raise ValueError(f"structure has a {_times(got)} block grid, the maps {_times(grid)}")
        grid_coords = [c for c in (*dims, *map(_start, dims)) if c in structure.coords]
        return structure.astype(bool).drop_vars(grid_coords)
    raise ValueError(
        f"structure must have dims (..., {', '.join(pixel_dims)}) or (..., {', '.join(dims)}), got {structure.dims}"
    )


# -- numpy kernels on (..., *grid), n = 2 or 3 grid axes ---------------------------------------------
def _axes(n: int) -> tuple[int, ...]:
    """The last `n` axes: the block grid of the kernels' arrays."""
    return tuple(range(-n, 0))


def _dilate(mask: np.ndarray, n: int, erode: bool = False) -> np.ndarray:
    """Binary dilation by the 3^n cube (8-neighbours in 2-D, 26 in 3-D) over the last `n` axes (or
    erosion, the grid's outside counting as set so that the border does not erode)."""
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - n) + [(1, 1)] * n, constant_values=erode)
    shape = mask.shape[-n:]
    out = np.ones_like(mask) if erode else np.zeros_like(mask)
    for offset in itertools.product(range(3), repeat=n):
        window = padded[(..., *(slice(o, o + s) for o, s in zip(offset, shape)))]
        if erode:
            out &= window
        else:
            out |= window
    return out


def _close(mask: np.ndarray, n: int) -> np.ndarray:
    """3 x 3 (x 3) morphological closing: bridges gaps of up to two blocks in a chain of blocks."""
    return _dilate(_dilate(mask, n), n, erode=True) | mask


def _grow(seed: np.ndarray, allowed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of `allowed` connected to `seed`, and their number of neighbour steps from it
    (8-neighbours in 2-D, 26 in 3-D).

    One vectorised breadth-first search for all maps at once: each loop iteration is one step.
    Unreached blocks get step -1.
    """
    reached = seed.copy()
    steps = np.where(seed, 0, -1)
    front = seed
    k = 0
    while front.any():
        k += 1
        front = _dilate(front, n) & allowed & ~reached
        steps[front] = k
        reached |= front
    return reached, steps


def _distance(roi: np.ndarray, n: int) -> np.ndarray:
    """d(p): Euclidean distance in blocks from each block centre to the nearest RoI block (last `n` axes).

    The squared distance is separable, min_q sum_i (p_i - q_i)^2 taken one axis at a time (exact in
    integers, memory (..., G, side) instead of a G x G table of pairs); its square root is rounded
    to float32 like the distances the 2-D descriptors always had (so their values do not move).
    """
    sq = np.where(roi, 0.0, np.inf)
    for axis in _axes(n):
        side = np.arange(roi.shape[axis])
        cost = ((side[:, None] - side[None, :]) ** 2).astype(float)  # (to, from)
        along = np.moveaxis(sq, axis, -1)
        sq = np.moveaxis((along[..., None, :] + cost).min(-1), -1, axis)
    return np.sqrt(sq).astype(np.float32).astype(float)


def _mass_quantile(w: np.ndarray, d: np.ndarray, q: float) -> np.ndarray:
    """Smallest distance within which a share `q` of the mass lies (flattened grids (..., G))."""
    order = np.argsort(d, axis=-1, kind="stable")
    ds = np.take_along_axis(d, order, -1)
    cum = np.cumsum(np.take_along_axis(w, order, -1), axis=-1)
    total = cum[..., -1:]
    idx = np.argmax(cum >= q * total * (1 - 1e-12), axis=-1)
    out = np.take_along_axis(ds, idx[..., None], -1)[..., 0]
    return np.where(total[..., 0] > 0, out, np.nan)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN; NaN (no warning) where every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=-1)


def _ring_levels(w: np.ndarray, ring: np.ndarray, cand: np.ndarray, min_blocks: int) -> np.ndarray:
    """Median of w over the candidates of each ring, on every block of the ring (flattened (..., G));
    NaN on rings of fewer than `min_blocks` candidates and off the candidates."""
    out = np.full(w.shape, np.nan)
    for value in np.unique(ring[cand]):
        member = (ring == value) & cand
        median = _nanmedian(np.where(member, w, np.nan))
        median = np.where(member.sum(-1) >= min_blocks, median, np.nan)
        out = np.where(member, median[..., None], out)
    return out


def _chain(
    ate: np.ndarray, w: np.ndarray, roi: np.ndarray, cand: np.ndarray, d: np.ndarray, conn: np.ndarray,
    near: float, level: float, ring_blocks: int, n: int,
) -> dict[str, np.ndarray]:
    """The mass split by its geometry (spread, ring, excess) and the chain on the excess (module docstring)."""
    grid = _axes(n)
    lead, shape = w.shape[:-n], w.shape[-n:]
    size = int(np.prod(shape))
    flat = lambda a: a.reshape(*lead, size)  # noqa: E731
    far = cand & (d > near)
    floor = np.nan_to_num(_nanmedian(np.where(flat(far), flat(w), np.nan)), nan=0.0)
    ring = np.rint(2 * d).astype(int)
    levels = _ring_levels(flat(w), flat(np.broadcast_to(ring, w.shape)), flat(cand), ring_blocks)
    f = floor[(...,) + (None,) * n]
    b = np.maximum(np.where(np.isnan(levels), f.reshape(*lead, 1), levels).reshape(w.shape), f)
    spread = np.minimum(w, f)
    ring_part = np.minimum(w, b) - spread
    excess = w - np.minimum(w, b)
    support = (ate < 0) & cand
    peak = np.where(far & support, excess, 0.0).max(grid, keepdims=True)
    strong = support & (excess > 0) & (excess >= level * peak)
    closed = _close(strong | roi, n)
    comp, steps = _grow(roi, closed, n)
    comp &= cand
    comp_far = comp & far
    big = np.iinfo(steps.dtype).max
    entry_steps = np.where(comp_far, steps, big).min(grid, keepdims=True)
    last_steps = np.where(comp_far, steps, -1).max(grid, keepdims=True)
    has = comp_far.any(grid, keepdims=True)
    entry = comp_far & (steps == entry_steps)
    _, back = _grow(entry, closed, n)
    # The route: the near blocks of C on a shortest path from the RoI to C_far's first blocks, and
    # their neighbours in C (a chain two blocks wide, or a staircase, is more than one shortest path).
    geodesic = comp & ~far & (back >= 0) & (steps + back == entry_steps)
    route = _dilate(geodesic, n) & comp & ~far
    mass = w.sum(grid)
    near_c = cand & ~far
    chain_blocks = comp_far.sum(grid)
    chain_steps = np.where(has, last_steps - entry_steps + 1, 0).reshape(lead)
    on = comp_far | route
    return {
        "floor": floor,
        "spread_share": _safe_div(spread.sum(grid), mass),
        "ring_near_share": _safe_div(np.where(near_c, ring_part, 0.0).sum(grid), mass),
        "ring_far_share": _safe_div(np.where(far, ring_part, 0.0).sum(grid), mass),
        "excess_near_share": _safe_div(np.where(near_c & ~route, excess, 0.0).sum(grid), mass),
        "excess_far_share": _safe_div(np.where(far & ~comp_far, excess, 0.0).sum(grid), mass),
        "chain_share": _safe_div(np.where(comp_far, excess, 0.0).sum(grid), mass),
        "chain_route_share": _safe_div(np.where(route, excess, 0.0).sum(grid), mass),
        "chain_blocks": chain_blocks,
        "chain_steps": chain_steps,
        "chain_linearity": _safe_div(chain_steps.astype(float), chain_blocks.astype(float)),
        "chain_extent": np.where(comp_far & (w > 0), d, 0.0).max(grid),
        "chain_on_structure": _safe_div((on & conn).sum(grid).astype(float), on.sum(grid).astype(float)),
    }


def _kernel(
    ate: np.ndarray, roi: np.ndarray, structure: np.ndarray, near: float, level: float, n: int,
    ring_blocks: int = DEFAULT_RING_BLOCKS,
) -> tuple[np.ndarray, ...]:
    """All descriptors of maps ``ate`` (..., *grid) with `n` grid axes; in the order of ``DESCRIPTORS``."""
    ate, roi, structure = np.broadcast_arrays(ate, roi.astype(bool), structure.astype(bool))
    shape, lead, grid = ate.shape[-n:], ate.shape[:-n], _axes(n)
    size = int(np.prod(shape))
    cand = ~roi
    w = np.where(cand, np.abs(ate), 0.0)
    flat = lambda a: a.reshape(*lead, size)  # noqa: E731
    axes = np.meshgrid(*(np.arange(g, dtype=float) for g in shape), indexing="ij")
    pos = np.stack([a.ravel() for a in axes], axis=-1)  # (G, n)
    d = _distance(roi, n)

    mass = w.sum(grid)
    support = np.where(ate < 0, -ate, 0.0).sum(grid)
    harm = np.where(ate > 0, ate, 0.0).sum(grid)
    balance = _safe_div(support - harm, support + harm)

    diagonal = np.float32(np.sqrt(float(sum((g - 1) ** 2 for g in shape))))  # the largest d on the grid
    rings = int(np.ceil(diagonal))
    ring = np.where(cand, np.ceil(d - 1e-9), 0).astype(int)
    radial = (flat(w)[..., None] * (flat(ring)[..., None] == np.arange(1, rings + 1))).sum(-2)

    d50 = _mass_quantile(flat(w), flat(d), 0.5)
    d50_uniform = _mass_quantile(flat(cand).astype(float), flat(d), 0.5)
    mean_distance = _safe_div((w * d).sum(grid), mass)
    near_share = _safe_div(np.where(d <= near, w, 0.0).sum(grid), mass)

    n_cand = cand.sum(grid)
    nonzero_fraction = ((ate != 0) & cand).sum(grid) / n_cand
    p = flat(w) / np.where(mass > 0, mass, 1)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0).sum(-1)
    n_eff = np.where(mass > 0, np.exp(entropy), np.nan)
    n_eff_fraction = n_eff / n_cand

    centre = (flat(roi)[..., None] * pos).sum(-2) / flat(roi).sum(-1)[..., None]  # (..., n)
    off = pos - centre[..., None, :]  # (..., G, n)
    moment = np.einsum("...g,...gi,...gj->...ij", flat(w), off, off)  # (..., n, n)
    eig = np.linalg.eigvalsh(moment)  # ascending
    anisotropy = np.where(mass > 0, 1 - _safe_div(eig[..., 0], eig[..., -1]), np.nan)

    conn, _ = _grow(roi, structure | roi, n)
    conn &= cand
    structure_share = _safe_div(np.where(conn, w, 0.0).sum(grid), mass)
    structure_chance = conn.sum(grid) / n_cand

    peak = w.max(grid, keepdims=True)
    strong = (w > 0) & (w >= level * peak)
    # Thick structures are redundant (a vessel straddling two block rows survives the replacement of
    # either block), so a chain of strong blocks has gaps: close them before following the chain.
    comp, steps = _grow(roi, _close(strong | roi, n), n)
    comp &= cand
    path_mass = _safe_div(np.where(comp, w, 0.0).sum(grid), mass)
    path_near_share = _safe_div(np.where(comp & (d <= near), w, 0.0).sum(grid), mass)
    path_blocks = comp.sum(grid)
    path_extent = np.where(comp & (w > 0), d, 0.0).max(grid)  # bridged gaps carry no mass
    on_path = np.where(comp, w, 0.0)
    path_far_share = _safe_div(np.where(d > near, on_path, 0.0).sum(grid), on_path.sum(grid))
    path_steps = np.where(comp, steps, 0).max(grid)
    path_linearity = _safe_div(path_steps.astype(float), path_blocks.astype(float))
    path_on_structure = _safe_div((comp & conn).sum(grid).astype(float), path_blocks.astype(float))

    values = {
        "mass": mass, "support": support, "harm": harm, "balance": balance, "radial_mass": radial,
        "d50": d50, "d50_uniform": d50_uniform, "d50_rel": _safe_div(d50, d50_uniform),
        "mean_distance": mean_distance, "near_share": near_share, "nonzero_fraction": nonzero_fraction,
        "n_eff": n_eff, "n_eff_fraction": n_eff_fraction, "anisotropy": anisotropy,
        "structure_share": structure_share, "structure_chance": structure_chance,
        "path_mass": path_mass, "path_near_share": path_near_share, "path_blocks": path_blocks,
        "path_extent": path_extent, "path_far_share": path_far_share, "path_steps": path_steps,
        "path_linearity": path_linearity,
        "path_on_structure": path_on_structure,
        **_chain(ate, w, roi, cand, d, conn, near, level, ring_blocks, n),
    }
    return tuple(np.asarray(values[k], dtype=float) for k in DESCRIPTORS)


def descriptors(
    effects: Any,
    structure: Any = None,
    *,
    near: float = DEFAULT_NEAR,
    path_level: float = DEFAULT_PATH_LEVEL,
    structure_fraction: float = 0.0,
    dim: str = "image",
    ring_blocks: int = DEFAULT_RING_BLOCKS,
) -> xr.Dataset:
    r"""Spatial descriptors of every effect map, vectorised over the stack dims.

    Parameters
    ----------
    effects : xarray.Dataset (or a list/dict of them on one grid, stacked along `dim`)
        Effects in the schema of :mod:`pdcr_lab.schema` with ``ate`` over (block_y, block_x), or
        over (block_z, block_y, block_x) for a volume, and a recorded RoI (``roi_block`` or the RoI
        box). Raw signed effects; nothing is normalised.
    structure : DataArray or array, optional
        Foreground/structure mask (pixels or blocks, see :func:`structure_blocks`), e.g. the ground
        truth or the prediction; may carry stack dims such as ``image``. Without it the
        ``structure_*`` and ``path_on_structure`` descriptors are NaN.
    near : float
        Radius (blocks) of the RoI's neighbourhood for ``near_share``.
    path_level : float
        A block is *strong* when w(p) > 0 and w(p) >= path_level * max_q w(q); a block joins the
        chain when its excess is at least path_level times the largest excess of a supporting
        block beyond the near radius (module docstring).
    structure_fraction : float
        See :func:`structure_blocks`.
    dim : str
        Stack dimension of a list/dict of maps (default ``"image"``).
    ring_blocks : int
        Fewest candidate blocks of a half-block ring whose median is its ring level (module
        docstring); smaller rings take the spread level.

    Returns
    -------
    xarray.Dataset
        One variable per descriptor, over the stack dims of `effects` (``radial_mass`` also over
        ``ring``, k = 1..ceil(grid diagonal)). Definitions (w, W, C, d as in the module docstring;
        on a volume's grid p, c are 3-vectors, distances are in blocks along each axis and
        neighbours are the 26 blocks around a block):

        * ``mass`` :math:`W = \sum_p w(p)`; ``support`` :math:`S = \sum_{ATE<0} |ATE|`;
          ``harm`` :math:`H = \sum_{ATE>0} ATE`; ``balance`` :math:`(S-H)/(S+H)` in [-1, 1].
        * ``radial_mass`` :math:`R_k = \sum_{p: k-1 < d(p) \le k} w(p)`, the radial profile.
        * ``d50`` :math:`= \min\{t : \sum_{d(p) \le t} w(p) \ge W/2\}`; ``d50_uniform`` the same with
          w = 1 on C; ``d50_rel`` their ratio; ``mean_distance`` :math:`\sum_p w d / W`;
          ``near_share`` :math:`\sum_{d(p) \le near} w / W`.
        * ``nonzero_fraction`` :math:`|\{p \in C: ATE(p) \ne 0\}| / n_C`; ``n_eff``
          :math:`\exp(-\sum_p \pi_p \log \pi_p)`, :math:`\pi_p = w(p)/W` (1 for a single block, n_C for
          a flat map); ``n_eff_fraction`` :math:`n_{eff} / n_C`.
        * ``anisotropy`` :math:`1 - \lambda_{min}/\lambda_{max}` of
          :math:`M = \sum_p w(p) (p - c)(p - c)^T` with c the mean position of the RoI blocks: 0 for
          mass spread evenly around the RoI, 1 for mass on one line through c (or one side of it;
          in 3-D also for mass on one plane through c).
        * ``structure_share`` :math:`\sum_{p \in T} w / W` with T the structure blocks connected to
          the RoI (8-neighbour, in 3-D 26-neighbour, component of structure blocks reached from the
          RoI); ``structure_chance`` :math:`|T| / n_C`, the share a map spread evenly would get.
        * ``path_*``: K = the path component (module docstring: strong blocks and the gaps the
          closing bridges, connected to the RoI). ``path_mass`` :math:`\sum_K w / W`;
          ``path_near_share`` :math:`\sum_{K, d \le near} w / W`; ``path_far_share``
          :math:`\sum_{K, d > near} w / \sum_K w` (how much of the path's own mass lies beyond the
          near radius); ``path_blocks`` |K|; ``path_extent`` :math:`\max_{K, w > 0} d`;
          ``path_steps`` the largest number of 8-neighbour (3-D: 26-neighbour) steps from the RoI to
          a block of K inside K; ``path_linearity`` ``path_steps / path_blocks`` (1 for a one-block-wide
          chain leading away, 1/2 for a two-wide band, about 1/(pi r) for a filled disc of radius r;
          in 3-D 1/4 for a tube two blocks wide in both transverse axes, about 3/(4 pi r^2) for a
          filled ball); ``path_on_structure`` :math:`|K \cap T| / |K|`.
        * The mass by its geometry (module docstring: spread level f, ring level b(p), excess
          e(p)): ``floor`` f; ``spread_share`` :math:`\sum_p \min(w, f) / W`; ``ring_near_share`` and
          ``ring_far_share`` :math:`\sum (\min(w, b) - \min(w, f)) / W` within and beyond the near
          radius; ``excess_near_share`` the excess within the near radius off the chain's route,
          ``excess_far_share`` beyond it off the chain; ``chain_share`` and ``chain_route_share`` the
          excess on the chain's far part and on its route. These seven shares sum to 1.
        * ``chain_*``: C_far, the chain component beyond the near radius: ``chain_blocks`` |C_far|,
          ``chain_steps`` the neighbour steps from the RoI of its last block minus those of its first
          plus 1, ``chain_linearity`` their ratio, ``chain_extent`` :math:`\max_{C_{far}, w > 0} d`,
          ``chain_on_structure`` the fraction of C_far and the route on T.

        Scale-free descriptors are NaN for maps without any effect (W = 0). Attrs: the settings,
        ``block`` and ``grid`` (e.g. ``"12x12"``, ``"6x6x6"``; a volume adds ``block_shape``).

    Raises
    ------
    ValueError
        maps with no recorded RoI, maps of different grids or of different rank (images and
        volumes) mixed in one call.

    Examples
    --------
    >>> import numpy as np, pdcr_lab
    >>> ds = pdcr_lab.schema.empty_effects(grid=(6, 6), block=4)
    >>> ds["roi_block"][2:4, 2:4] = True
    >>> ds["ate"][2, 5] = -3.0
    >>> out = pdcr_lab.strategies.descriptors(ds)
    >>> float(out.d50), float(out.balance)
    (2.0, 1.0)

    A volume: one block 3 blocks down in z and 4 across in y from a one-block RoI is 5 blocks away.

    >>> vol = pdcr_lab.schema.empty_effects(grid=(6, 6, 6), block=4)
    >>> vol["roi_block"][0, 0, 0] = True
    >>> vol["ate"][3, 4, 0] = -1.0
    >>> out = pdcr_lab.strategies.descriptors(vol)
    >>> float(out.d50), out.attrs["grid"]
    (5.0, '6x6x6')
    """
    ate, roi, ds = effect_grid(effects, dim=dim)
    dims = grid_dims(ate)
    if structure is None:
        struct = xr.zeros_like(roi, dtype=bool)
        has_structure = False
    else:
        struct = structure_blocks(structure, ds, min_fraction=structure_fraction)
        has_structure = True
    names = list(DESCRIPTORS)
    outputs = xr.apply_ufunc(
        _kernel,
        ate.astype(float),
        roi,
        struct,
        kwargs={"near": float(near), "level": float(path_level), "n": len(dims), "ring_blocks": int(ring_blocks)},
        input_core_dims=[list(dims)] * 3,
        output_core_dims=[["ring"] if k == "radial_mass" else [] for k in names],
        dask="forbidden",
    )
    units = str(ds.attrs.get("units", ds["ate"].attrs.get("units", "")))
    out = xr.Dataset()
    for name, values in zip(names, outputs):
        long_name, unit = DESCRIPTORS[name]
        if len(dims) == 3:
            long_name = _LONG_NAMES_3D.get(name, long_name)
        if not has_structure and name in ("structure_share", "structure_chance", "path_on_structure",
                                          "chain_on_structure"):
            values = xr.full_like(values, np.nan)
        out[name] = values.assign_attrs(long_name=long_name, units=units if unit == "outcome" else unit)
    out = out.assign_coords(ring=np.arange(1, out.sizes["ring"] + 1))
    out["ring"].attrs = {"long_name": "distance ring k: k - 1 < d <= k", "units": "blocks"}
    out = out.drop_vars([c for c in (*map(_start, dims), *dims) if c in out.coords])
    out.attrs = {
        "near": float(near),
        "path_level": float(path_level),
        "ring_blocks": int(ring_blocks),
        "structure": "given" if has_structure else "none",
        "block": int(ds.attrs["block"]),
        "grid": _times(ds.sizes[d] for d in dims),
        "units": units,
    }
    if len(dims) == 3:
        out.attrs["block_shape"] = json.dumps(list(block_shape(ds)))
    return out
