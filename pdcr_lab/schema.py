"""The effects data model: one xarray schema that every producer writes and every consumer reads.

An *effects dataset* holds treatment effects in raw, signed outcome units (DSC points for the
paper's outcome). Negative ATE: the original content SUPPORTS the RoI's segmentation (replacing it
lowers the outcome); positive: it HURTS it; 0: irrelevant (docs/method.md section 4).

Dimensions (always in this order; every one but the effect grid is optional)::

    model, dataset, image, roi, method, layer, unit,  [block_z,] block_y, block_x   (effect grid)
                                                      [z,] y, x                     (pixel grid of the RoI mask)

* ``block_y``/``block_x``: row/column index of the b x b block; coords ``y_start``/``x_start`` give
  the block's top-left pixel. Component effects (network layers) use ``layer`` (+ ``unit``) instead.
* Volumes (3-D images) add ``block_z`` (coord ``z_start``) and ``z``; their blocks are cuboids whose
  sides are in ``attrs["block_shape"]`` (JSON ``[bz, by, bx]``; ``attrs["block"]`` is bx) and their
  RoI box adds ``roi_z`` and ``roi_depth``. :func:`grid_dims` and :func:`block_shape` read either kind.
* ``model``/``dataset``/``image``/``roi``/``method``: added when results are stacked with
  :func:`stack`; facts that differ between stacked results become coordinates along the new
  dimension, so nothing is silently dropped by ``xarray.concat``.

Data variables:

=============  ==============================  ==========================================================
name           dims (+ leading stack dims)     meaning
=============  ==============================  ==========================================================
ate            block_y, block_x                the map: the ATE estimate after screening and tau-zeroing
ate_raw        block_y, block_x                mean(M_b - M0) over the draws used, before zeroing
stderr         block_y, block_x                standard error of ate_raw (sample std / sqrt(n), ddof=1)
n_draws        block_y, block_x                draws in the estimate (S if screened, N otherwise, 0 RoI)
screened       block_y, block_x                True where the coarse stage declared the block irrelevant
roi_block      block_y, block_x                True for blocks overlapping the RoI (never perturbed)
m0             ()                              factual outcome M0
forwards       ()                              forward passes the explanation used (shared by its RoIs)
roi_mask       y, x                            the RoI as a pixel mask
roi_row, ...   ()                              RoI bounding box: roi_row, roi_col, roi_height, roi_width
=============  ==============================  ==========================================================

Attrs (run provenance): ``schema_version``, ``pdcr_lab_version``, ``method``, ``block``, ``coarse``,
``fine``, ``tau``, ``outcome``, ``units``, ``intervention``, ``threshold``, ``class_index``, ``seed``,
``bank_id``, ``bank_size``, ``bank_provenance`` (JSON), ``target_source``, ``image_height``,
``image_width`` (and ``image_depth``, ``block_shape`` for volumes). Attrs are plain str/int/float so netCDF and Zarr round-trip them losslessly.

Example
-------
>>> import numpy as np, pdcr_lab
>>> ds = pdcr_lab.schema.empty_effects(grid=(2, 3), block=4)
>>> ds.ate.dims
('block_y', 'block_x')
>>> int(ds.x_start[-1])
8
>>> pdcr_lab.schema.validate(ds) is ds
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "SCHEMA_VERSION",
    "STACK_DIMS",
    "GRID_DIMS",
    "GRID_DIMS_3D",
    "PIXEL_DIMS",
    "PIXEL_DIMS_3D",
    "BOX_VARS",
    "SchemaError",
    "validate",
    "empty_effects",
    "stack",
    "to_pixels",
    "grid_dims",
    "block_shape",
]

SCHEMA_VERSION = 1
STACK_DIMS: tuple[str, ...] = ("model", "dataset", "image", "roi", "method", "layer", "unit")
GRID_DIMS: tuple[str, str] = ("block_y", "block_x")
#: The effect grid of a volume: depth first, like (C, D, H, W) images.
GRID_DIMS_3D: tuple[str, str, str] = ("block_z", "block_y", "block_x")
#: Attr of a result whose outcome is meaningless as it stands (the OutcomeWarning the computation raised).
NOTE_ATTR = "outcome_warning"
PIXEL_DIMS: tuple[str, str] = ("y", "x")
PIXEL_DIMS_3D: tuple[str, str, str] = ("z", "y", "x")
_ORDER = (*STACK_DIMS, *GRID_DIMS_3D)
_STARTS = {"block_z": "z_start", "block_y": "y_start", "block_x": "x_start"}

_BLOCK_VARS = {"ate": "f", "ate_raw": "f", "stderr": "f", "n_draws": "i", "screened": "b", "roi_block": "b"}
_SCALAR_VARS = {"m0": "f", "forwards": "i", "roi_row": "i", "roi_col": "i", "roi_height": "i", "roi_width": "i",
                "roi_z": "i", "roi_depth": "i"}
#: Names of the RoI box scalars, in the order of a box: (row, col, height, width) or (z, row, col, depth, height, width).
BOX_VARS = {2: ("roi_row", "roi_col", "roi_height", "roi_width"),
            3: ("roi_z", "roi_row", "roi_col", "roi_depth", "roi_height", "roi_width")}
_REQUIRED_ATTRS = ("schema_version", "method", "block", "outcome", "units", "seed")


class SchemaError(ValueError):
    """An object does not follow the effects schema; the message says which rule it breaks."""


def _order_dims(dims: Sequence[str], what: str) -> None:
    unknown = [d for d in dims if d not in _ORDER and d not in PIXEL_DIMS_3D]
    if unknown:
        raise SchemaError(f"{what} has unknown dims {unknown}; allowed: {list(_ORDER)} and {list(PIXEL_DIMS_3D)}")
    positions = [_ORDER.index(d) for d in dims if d in _ORDER]
    if positions != sorted(positions):
        raise SchemaError(f"{what} has dims {tuple(dims)} out of the canonical order {_ORDER}")


def validate(ds: xr.Dataset) -> xr.Dataset:
    """Check that `ds` is an effects dataset; return it unchanged or raise :class:`SchemaError`.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of any explainer, or a stack of them.

    Examples
    --------
    >>> ds = empty_effects(grid=(2, 2), block=4)
    >>> validate(ds.drop_vars("m0"))
    Traceback (most recent call last):
    ...
    pdcr_lab.schema.SchemaError: missing variable 'm0'
    """
    if not isinstance(ds, xr.Dataset):
        raise SchemaError(f"expected an xarray.Dataset of effects, got {type(ds).__name__}")
    if "ate" not in ds:
        raise SchemaError(f"the dataset has no 'ate' variable (variables: {list(ds.data_vars)})")
    missing = [a for a in _REQUIRED_ATTRS if a not in ds.attrs and a not in ds.coords]
    if missing:
        raise SchemaError(f"missing attrs {missing}")
    ate_dims = ds["ate"].dims
    _order_dims(ate_dims, "'ate'")
    on_grid = all(d in ate_dims for d in GRID_DIMS)
    if on_grid:
        _validate_grid(ds, ate_dims)
    elif "layer" not in ate_dims:
        raise SchemaError(f"'ate' must have the block grid {GRID_DIMS} or a 'layer' dim, got {ate_dims}")
    for name, kind in {**_BLOCK_VARS, **_SCALAR_VARS}.items():
        if name not in ds:
            if name in ("ate", "stderr", "n_draws", "m0"):
                raise SchemaError(f"missing variable {name!r}")
            continue
        var = ds[name]
        _order_dims(var.dims, repr(name))
        if var.dtype.kind not in (kind + ("u" if kind == "i" else "")):
            raise SchemaError(f"variable {name!r} has dtype {var.dtype}, expected kind {kind!r}")
    if "roi_block" in ds and on_grid:
        bad = (ds["roi_block"] & (ds["ate"] != 0)).any()
        if bool(bad):
            raise SchemaError("RoI blocks must have ate == 0 (they are never perturbed)")
    return ds


def _validate_grid(ds: xr.Dataset, ate_dims: tuple) -> None:
    grid = GRID_DIMS_3D if "block_z" in ate_dims else GRID_DIMS
    if ate_dims[-len(grid):] != grid:
        raise SchemaError(f"'ate' must end with dims {grid}, got {ate_dims}")
    try:
        sides = block_shape(ds)
    except (ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"attrs 'block'/'block_shape' do not give the block's sides: {exc}") from None
    for dim, side in zip(grid, sides):
        name = _STARTS[dim]
        if name not in ds.coords:
            raise SchemaError(f"missing coordinate {name!r} (pixel position of each block)")
        expected = np.arange(ds.sizes[dim]) * side
        if not np.array_equal(np.asarray(ds[name]).reshape(-1)[: expected.size], expected):
            raise SchemaError(f"{name} does not match block={side} (the block side along {dim})")


def grid_dims(obj: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The effect-grid dims of `obj`: ``(block_y, block_x)`` for images, ``(block_z, block_y, block_x)`` for volumes.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        Effects on a block grid.

    Examples
    --------
    >>> grid_dims(empty_effects(grid=(2, 2, 2), block=4))
    ('block_z', 'block_y', 'block_x')
    """
    if not set(GRID_DIMS) <= set(obj.dims):
        raise SchemaError(f"expected effects on a block grid {GRID_DIMS}, got dims {tuple(obj.dims)}")
    return GRID_DIMS_3D if "block_z" in obj.dims else GRID_DIMS


def block_shape(obj: xr.Dataset | xr.DataArray) -> tuple[int, ...]:
    """The block's side along each grid dim, from ``attrs["block_shape"]`` or the cube/square ``attrs["block"]``.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        Effects carrying the run's attrs.

    Examples
    --------
    >>> block_shape(empty_effects(grid=(2, 3), block=8)), block_shape(empty_effects(grid=(2, 2, 2), block=(2, 4, 4)))
    ((8, 8), (2, 4, 4))
    """
    dims = grid_dims(obj)
    if "block_shape" in obj.attrs:
        sides = tuple(int(v) for v in json.loads(obj.attrs["block_shape"]))
        if len(sides) != len(dims):
            raise SchemaError(f"attrs['block_shape']={obj.attrs['block_shape']} does not match the grid dims {dims}")
        return sides
    if "block" not in obj.attrs:
        raise SchemaError("the block's sides need the 'block' attr of an effects dataset")
    return (int(obj.attrs["block"]),) * len(dims)


def _sides(block: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    sides = (int(block),) * ndim if np.ndim(block) == 0 else tuple(int(b) for b in block)  # type: ignore[arg-type]
    if len(sides) != ndim:
        raise ValueError(f"block={block!r} gives {len(sides)} sides for a {ndim}-D grid")
    return sides


def empty_effects(grid: tuple[int, ...], block: int | tuple[int, ...], **attrs: Any) -> xr.Dataset:
    """An all-zero effects dataset on a `grid` of blocks (a template for producers and tests).

    Parameters
    ----------
    grid : (int, int) or (int, int, int)
        Blocks along each axis: (block_y, block_x) for an image, (block_z, block_y, block_x) for a volume.
    block : int or tuple of int
        Block side in pixels (a volume may give one side per axis).
    **attrs
        Attrs that override or extend the defaults (``method="pdcr"``, ``outcome="dice"``, ...).

    Examples
    --------
    >>> ds = empty_effects(grid=(3, 4), block=8, method="demo")
    >>> dict(ds.ate.sizes), ds.attrs["method"], ds.roi_mask.shape
    ({'block_y': 3, 'block_x': 4}, 'demo', (24, 32))
    >>> empty_effects(grid=(2, 3, 4), block=4).roi_mask.shape
    (8, 12, 16)
    """
    grid = tuple(int(g) for g in grid)
    if len(grid) not in (2, 3):
        raise ValueError(f"grid={grid!r} must give 2 (image) or 3 (volume) block counts")
    sides = _sides(block, len(grid))
    # one array per variable: shared arrays would make writing one variable write the others
    data = {
        "ate": np.zeros(grid),
        "ate_raw": np.zeros(grid),
        "stderr": np.zeros(grid),
        "n_draws": np.zeros(grid, dtype=np.int32),
        "screened": np.zeros(grid, dtype=bool),
        "roi_block": np.zeros(grid, dtype=bool),
    }
    base_attrs: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": "pdcr",
        "block": sides[-1],
        "outcome": "dice",
        "units": "DSC points",
        "seed": 0,
    }
    if len(grid) == 3:
        base_attrs["block_shape"] = json.dumps(list(sides))
    base_attrs.update(attrs)
    return effects_dataset(
        data,
        m0=0.0,
        forwards=0,
        roi_mask=np.zeros(tuple(g * b for g, b in zip(grid, sides)), dtype=bool),
        roi_box=(0,) * (2 * len(grid)),
        attrs=base_attrs,
    )


def effects_dataset(
    blocks: Mapping[str, np.ndarray],
    *,
    m0: float | np.ndarray,
    forwards: int,
    roi_mask: np.ndarray,
    roi_box: tuple[int, int, int, int] | np.ndarray,
    attrs: Mapping[str, Any],
    roi_labels: Sequence[str] | None = None,
) -> xr.Dataset:
    """Assemble an effects dataset from per-block arrays (the one place results are built).

    With `roi_labels`, arrays carry a leading RoI axis and the result has a ``roi`` dim. A box of 6
    numbers (z, row, col, depth, height, width) makes a volume's dataset (``block_z``, ``z``; the
    block's sides from ``attrs["block_shape"]``).
    """
    ndim = np.asarray(roi_box).shape[-1] // 2
    grid_names, pixel_names = (GRID_DIMS_3D, PIXEL_DIMS_3D) if ndim == 3 else (GRID_DIMS, PIXEL_DIMS)
    sides = tuple(json.loads(attrs["block_shape"])) if "block_shape" in attrs and ndim == 3 else (int(attrs["block"]),) * ndim
    lead: tuple[str, ...] = ("roi",) if roi_labels is not None else ()
    first = np.asarray(next(iter(blocks.values())))
    grid = first.shape[-ndim:]
    pixels = np.asarray(roi_mask).shape[-ndim:]
    long_names = {
        "ate": "average treatment effect",
        "ate_raw": "mean effect before screening/zeroing",
        "stderr": "standard error of the mean effect",
    }
    units = str(attrs.get("units", ""))
    data_vars: dict[str, Any] = {}
    for name, values in blocks.items():
        var_attrs = {"long_name": long_names[name], "units": units} if name in long_names else {}
        data_vars[name] = ((*lead, *grid_names), np.asarray(values), var_attrs)
    data_vars["m0"] = (lead, np.asarray(m0, dtype=np.float64), {"long_name": "factual outcome M0", "units": units})
    data_vars["forwards"] = ((), np.int64(forwards), {"long_name": "forward passes"})
    data_vars["roi_mask"] = ((*lead, *pixel_names), np.asarray(roi_mask, dtype=bool))
    box = np.asarray(roi_box, dtype=np.int64).reshape(*([len(roi_labels)] if roi_labels is not None else []), 2 * ndim)
    for i, name in enumerate(BOX_VARS[ndim]):
        data_vars[name] = (lead, box[..., i])
    coords: dict[str, Any] = {}
    for dim, pixel, g, side, size in zip(grid_names, pixel_names, grid, sides, pixels):
        coords[dim] = np.arange(g)
        coords[_STARTS[dim]] = (dim, np.arange(g) * int(side))
        coords[pixel] = np.arange(size)
    if roi_labels is not None:
        coords["roi"] = list(roi_labels)
    clean = {k: _plain_attr(k, v) for k, v in attrs.items()}
    clean.setdefault("schema_version", SCHEMA_VERSION)
    return xr.Dataset(data_vars, coords=coords, attrs=clean)


def _plain_attr(key: str, value: Any) -> str | int | float:
    """Attrs must survive netCDF: keep str/int/float, JSON-encode the rest."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value.item() if isinstance(value, np.generic) else value
    if value is None:
        return "none"
    return json.dumps(value, sort_keys=True, default=str)


def stack(results: Mapping[Any, xr.Dataset] | Sequence[xr.Dataset], dim: str, labels: Sequence[Any] | None = None) -> xr.Dataset:
    """Concatenate effects datasets along a new stack dimension (``model``, ``image``, ...).

    Attrs that differ between the inputs become coordinates along `dim` instead of being dropped;
    the inputs' warnings (``attrs["outcome_warning"]``) are kept once each, in the result's attrs.

    Parameters
    ----------
    results : mapping label -> Dataset, or a sequence of Datasets (then give `labels`)
        Effects datasets on one grid.
    dim : one of ``model, dataset, image, roi, method, layer, unit``
        The new dimension.
    labels : sequence, optional
        Coordinate values along `dim`, one per result (required for a sequence).

    Examples
    --------
    >>> a = empty_effects(grid=(2, 2), block=4, seed=0)
    >>> b = empty_effects(grid=(2, 2), block=4, seed=1)
    >>> both = stack([a, b], dim="image", labels=["a", "b"])
    >>> both.ate.dims, both.seed.values.tolist()
    (('image', 'block_y', 'block_x'), [0, 1])
    """
    if dim not in STACK_DIMS:
        raise ValueError(f"dim={dim!r} is not a stack dimension; expected one of {list(STACK_DIMS)}")
    if isinstance(results, Mapping):
        labels, items = list(results.keys()), list(results.values())
    else:
        items = list(results)
        if labels is None or len(labels) != len(items):
            raise ValueError(f"labels must give one label per result ({len(items)}), got {labels!r}")
        labels = list(labels)
    if not items:
        raise ValueError("results is empty: nothing to stack")
    for i, item in enumerate(items):
        validate(item)
        if dim in item.dims:
            raise ValueError(f"results[{i}] already has a {dim!r} dim")
    # A note for the reader, not a setting: the stacked result keeps each distinct warning once (as an
    # attr), instead of a long text coordinate whose dim depends on the order of stacking.
    notes = [str(item.attrs[NOTE_ATTR]) for item in items if item.attrs.get(NOTE_ATTR)]
    items = [item.copy() for item in items]  # shallow: the attrs are the copies' own
    for item in items:
        item.attrs.pop(NOTE_ATTR, None)
    keys = set().union(*(item.attrs for item in items))
    varying = sorted(k for k in keys if any(not _same(item.attrs.get(k), items[0].attrs.get(k)) for item in items))
    fills = {key: _attr_fill([item.attrs[key] for item in items if key in item.attrs]) for key in varying}
    expanded = []
    for label, item in zip(labels, items):
        item = item.expand_dims({dim: [label]})
        for key in varying:
            if key not in item.attrs and key in item.variables:
                continue  # already a coordinate from an earlier stack: concat broadcasts it
            value = fills[key](item.attrs.pop(key, None))
            item = item.assign_coords({f"{key}": (dim, [value])})
        expanded.append(item)
    out = xr.concat(expanded, dim=dim, data_vars="all", coords="different", compat="equals", combine_attrs="drop_conflicts")
    order = [d for d in (*STACK_DIMS, *GRID_DIMS_3D, *PIXEL_DIMS_3D) if d in out.dims]
    out = out.transpose(*order)
    if notes:
        out.attrs[NOTE_ATTR] = " | ".join(dict.fromkeys(" | ".join(notes).split(" | ")))
    return out


def _attr_fill(present: list[Any]) -> Any:
    """How one varying attr becomes a coordinate of one dtype: numbers stay numbers (NaN where the
    attr is absent), anything else becomes text ("none" where absent)."""
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in present)
    if numeric:
        return lambda v: np.nan if v is None else v
    return lambda v: "none" if v is None else str(v)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(a == b))
    except Exception:
        return a is b


def to_pixels(obj: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
    """Pixel-resolution view of block variables: each block's value repeated over its b x b pixels.

    Gives the reference's (H, W) map layout, for plotting or comparing with pixel-level maps.
    Dims ``block_y, block_x`` become ``y, x`` (and ``block_z`` becomes ``z`` for a volume); other
    dims are kept.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        Effects, or a block variable, carrying the ``block`` attr (a variable taken out of a Dataset
        does not carry it: convert the Dataset, which keeps only its variables on the block grid).

    Examples
    --------
    >>> ds = empty_effects(grid=(1, 2), block=2)
    >>> ds["ate"][0, 1] = -1.0
    >>> to_pixels(ds)["ate"].values
    array([[ 0.,  0., -1., -1.],
           [ 0.,  0., -1., -1.]])
    """
    if not obj.attrs or not (obj.attrs.get("block") or obj.attrs.get("block_shape")):
        raise SchemaError("to_pixels needs the 'block' attr of an effects dataset")
    dims, sides = grid_dims(obj), block_shape(obj)
    if isinstance(obj, xr.Dataset):
        obj = obj[[v for v in obj.data_vars if set(dims) <= set(obj[v].dims)]]
    index = {}
    for dim, side in zip(dims, sides):
        size = obj.sizes[dim] * side
        pixel = dim.removeprefix("block_")
        index[dim] = xr.DataArray(np.arange(size) // side, dims=pixel, coords={pixel: np.arange(size)})
    drop = [*dims, *(_STARTS[d] for d in dims)]
    return obj.drop_vars(drop, errors="ignore").isel(index)
