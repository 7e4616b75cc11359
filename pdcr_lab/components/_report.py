"""Reading component results: comparable stage labels, and which stage carries most of the effect.

These take component effects (:func:`~pdcr_lab.components.explain_components` results, possibly
stacked over models, datasets and images) and return labels, numbers and tables. The study that
runs every zoo model on the embedded datasets is :func:`pdcr_lab.studies.components_study`
(``pdcr-lab components``).

Stage labels are ``<role><k>``: k counts the stages of that role in the order their forward passes
finish, so ``encoder1`` is the shallowest encoder and ``decoder1`` the first decoder to run (the
deepest); a single stem or bottleneck is labelled ``stem`` / ``bottleneck``. They make
architectures comparable on one ``layer`` axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ._discover import ROLES, Component

__all__ = ["stage_labels", "stage_order", "summarize", "format_summary"]

_SINGLE = ("stem", "bottleneck", "head")  # roles most models have once: labelled without a number


def stage_labels(components: Sequence[Component]) -> dict[str, str]:
    """Module path -> ``<role><k>`` label; a single stem, bottleneck or head keeps its bare role name.

    Parameters
    ----------
    components : sequence of Component
        The stages of one model (:func:`~pdcr_lab.components.find_components`), each with its role
        and the order in which its forward pass finished.

    Examples
    --------
    >>> from pdcr_lab.components import Component
    >>> stages = [Component("down1", "encoder", "(8, 48, 48)", order=0, main=True),
    ...           Component("down2", "encoder", "(16, 24, 24)", order=1, main=True),
    ...           Component("mid", "bottleneck", "(32, 12, 12)", order=2, main=True)]
    >>> stage_labels(stages)
    {'down1': 'encoder1', 'down2': 'encoder2', 'mid': 'bottleneck'}
    """
    counts: dict[str, int] = {}
    for comp in components:
        counts[comp.role] = counts.get(comp.role, 0) + 1
    seen: dict[str, int] = {}
    labels = {}
    for comp in sorted(components, key=lambda c: c.order):
        seen[comp.role] = seen.get(comp.role, 0) + 1
        bare = comp.role in _SINGLE and counts[comp.role] == 1
        labels[comp.path] = comp.role if bare else f"{comp.role}{seen[comp.role]}"
    return labels


def stage_order(label: str) -> tuple[int, int]:
    """Sort key of a stage label: by role (in :data:`ROLES` order), then by its number.

    Parameters
    ----------
    label : str
        A label of :func:`stage_labels`.

    Examples
    --------
    >>> sorted(["decoder1", "encoder2", "bottleneck", "encoder1"], key=stage_order)
    ['encoder1', 'encoder2', 'bottleneck', 'decoder1']
    """
    role = label.rstrip("0123456789")
    k = label[len(role):]
    return (ROLES.index(role) if role in ROLES else len(ROLES), int(k) if k else 0)


def summarize(report: xr.Dataset) -> list[dict[str, Any]]:
    """Which stage carries most of the effect, per (model, dataset).

    Per pair with any draw: the stage with the largest mean |ATE| over the images (``top``), its
    module path, its mean signed ATE, its share of the summed mean |ATE| of all stages, the
    runner-up stage, the number of stages and the mean factual outcome M0.

    Parameters
    ----------
    report : xarray.Dataset
        Component effects with dims (model, dataset, image, layer) and a ``layer_path``
        coordinate ("" for a stage a model does not have), e.g. from
        :func:`pdcr_lab.studies.components_study`.

    Returns
    -------
    list of dict
        One row per (model, dataset) pair that was explained.
    """
    rows = []
    for model in report.model.values:
        for dataset in report.dataset.values:
            part = report.sel(model=model, dataset=dataset)
            if int(part.n_draws.sum()) == 0:
                continue
            magnitude = np.abs(part.ate).mean("image", skipna=True).fillna(0.0)
            mean = part.ate.mean("image", skipna=True)
            total = float(magnitude.sum())
            ranked = [str(k) for k in magnitude.sortby(-magnitude).layer.values if float(magnitude.sel(layer=k)) > 0]
            top = ranked[0] if ranked else "none"
            paths = part.layer_path.values
            rows.append({
                "model": str(model),
                "dataset": str(dataset),
                "stages": int((paths != "").sum()),
                "m0": float(part.m0.mean()),
                "top": top,
                "path": str(part.layer_path.sel(layer=top).item()) if top != "none" else "",
                "ate": float(mean.sel(layer=top)) if top != "none" else 0.0,
                "share": float(magnitude.sel(layer=top)) / total if total > 0 else 0.0,
                "second": ranked[1] if len(ranked) > 1 else "-",
            })
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`summarize` rows.

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`summarize`.

    Examples
    --------
    >>> row = {"model": "unet", "dataset": "lesions", "stages": 6, "m0": 99.6, "top": "encoder1",
    ...        "path": "net.model.0", "ate": -79.3, "share": 0.29, "second": "encoder2"}
    >>> print(format_summary([row]).splitlines()[2])
    unet            lesions       6   99.6  encoder1     net.model.0   -79.30    29%  encoder2
    """
    width = max([len("module path"), *(len(r["path"]) for r in rows)])
    header = (f"{'model':<15} {'dataset':<8} {'stages':>6} {'M0':>6}  {'top stage':<12} {'module path':<{width}} "
              f"{'ATE':>8} {'share':>6}  {'runner-up':<12}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<15} {r['dataset']:<8} {r['stages']:>6} {r['m0']:>6.1f}  {r['top']:<12} "
            f"{r['path']:<{width}} {r['ate']:>8.2f} {100 * r['share']:>5.0f}%  {r['second']:<12}"
        )
    return "\n".join(lines)
