"""One stack of effect maps -> one map per label (shared by the interactive and the paper figures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr

from ..schema import STACK_DIMS, validate

__all__ = ["split_maps"]


def split_maps(
    results: xr.Dataset | Mapping[Any, xr.Dataset], dim: str | None = None, *, first_of_others: bool = False
) -> dict[str, xr.Dataset]:
    """label -> single map, from a mapping (kept as is) or a dataset stacked along `dim`.

    Without `dim`, a dataset must have exactly one stack dim (none: the dataset itself, labelled by
    its ``model`` attr); with ``first_of_others`` the first entry of every other stack dim is taken
    instead of refusing. Facts that :func:`pdcr_lab.schema.stack` turned into coordinates become
    attrs of each map again.

    Parameters
    ----------
    results : Dataset or mapping label -> Dataset
        Effects maps: a stack, a single map, or maps already labelled.
    dim : str, optional
        The stack dim to lay out (required when there are several and `first_of_others` is off).
    first_of_others : bool
        Take the first entry of every other stack dim instead of refusing.

    Examples
    --------
    >>> from pdcr_lab.schema import empty_effects, stack
    >>> both = stack({"unet": empty_effects((2, 2), 4, seed=1), "segnet": empty_effects((2, 2), 4, seed=2)},
    ...              dim="model")
    >>> maps = split_maps(both)
    >>> list(maps), maps["segnet"].attrs["seed"]
    (['unet', 'segnet'], 2)
    """
    if not isinstance(results, xr.Dataset):  # a Dataset is a Mapping too: test it first
        return {str(k): v for k, v in results.items()}
    validate(results)
    stacked = [d for d in results.ate.dims if d in STACK_DIMS]
    if not stacked:
        return {str(results.attrs.get("model", "map")): results}
    if dim is None:
        if len(stacked) > 1 and not first_of_others:
            raise ValueError(f"results has stack dims {stacked}; pass dim= to choose the one to lay out")
        dim = stacked[0]
    if dim not in results.dims:
        raise ValueError(f"dim={dim!r} is not a dimension of results (dims: {list(results.ate.dims)})")
    others = [d for d in stacked if d != dim]
    if others:
        if not first_of_others:
            raise ValueError(f"results has other stack dims {others}; select them first")
        results = results.isel({d: 0 for d in others})
    out = {}
    for label in results[dim].values:
        one = results.sel({dim: label})
        facts = {k: one[k].item() for k in one.coords if k not in one.dims and one[k].ndim == 0 and k not in ("y_start", "x_start")}
        out[str(label)] = one.drop_vars(list(facts)).assign_attrs({**results.attrs, **facts})
    return out
