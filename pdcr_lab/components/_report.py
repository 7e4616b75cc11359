"""The component report: effects of the main stages of every zoo architecture on both embedded datasets.

Protocol (fixed, so that reruns are comparable):

* datasets ``lesions`` and ``vessels`` (96 x 96, block 8); explained: the first ``images`` test images
  whose ground truth has both foreground and background; one RoI each, ``roi_size`` x ``roi_size``
  on the ground truth's boundary (:func:`pdcr_lab.rois.boundary_roi`); the outcome is measured
  against the ground truth;
* donors: the first ``donors`` train images (the natural distribution; never explained);
* ``unit="module"`` over the model's main stages (:func:`~pdcr_lab.components.find_components`:
  the zoo's declared stages without the head and without blocks nested inside a stage),
  natural intervention, ``coarse`` + ``fine`` draws, tau = 0.02, seed 0.

Layers are relabelled ``<role><k>`` (k counts the stages of that role in the order their forward
passes finish, so ``encoder1`` is the shallowest encoder and ``decoder1`` the first decoder to run,
the deepest; a single stem or bottleneck is labelled ``stem`` / ``bottleneck``), which makes architectures comparable on one
``layer`` axis; the module path is kept in the coordinate ``layer_path``. A stage an architecture
does not have is NaN in ``ate`` (``n_draws`` 0, ``layer_path`` "").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..defaults import PAPER
from ..rois import boundary_roi
from ..schema import stack
from ._discover import ROLES, Component, find_components
from ._explain import explain_components

__all__ = ["ReportSettings", "REPORT", "run_report", "summarize", "format_summary", "stage_labels", "pick_images"]

Loader = Callable[[str, str], tuple[torch.nn.Module, dict[str, Any]]]
_SINGLE = ("stem", "bottleneck", "head")  # roles most models have once: labelled without a number


@dataclass(frozen=True)
class ReportSettings:
    """The report's protocol (module docstring)."""

    images: int = 3
    roi_size: int = 16
    donors: int = 16
    coarse: int = PAPER.coarse
    fine: int = 20
    tau: float = PAPER.tau
    seed: int = 0


REPORT = ReportSettings()


def pick_images(masks: torch.Tensor, count: int, roi_size: int, block: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(index, RoI) of the first `count` masks holding both foreground and background."""
    picks = []
    for index, mask in enumerate(masks):
        if mask.any() and not mask.all():
            picks.append((index, boundary_roi(mask, size=roi_size, block=block)))
            if len(picks) == count:
                break
    return picks


def stage_labels(components: Sequence[Component]) -> dict[str, str]:
    """Module path -> ``<role><k>`` label; a single stem or bottleneck keeps its bare role name."""
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


def _label_key(label: str) -> tuple[int, int]:
    role = label.rstrip("0123456789")
    k = label[len(role):]
    return (ROLES.index(role) if role in ROLES else len(ROLES), int(k) if k else 0)


def _pad(ds: xr.Dataset, layers: list[str]) -> xr.Dataset:
    """Reindex onto the union of stage labels: absent stages are NaN / 0 draws / "" paths."""
    strings = {name: dict(zip(ds.layer.values, ds[name].values)) for name in ("layer_role", "layer_output", "layer_path")}
    out = ds.drop_vars(list(strings)).reindex(layer=layers, fill_value={"n_draws": 0, "screened": False})
    return out.assign_coords({name: ("layer", [str(m.get(k, "")) for k in layers]) for name, m in strings.items()})


def _absent(template: xr.Dataset) -> xr.Dataset:
    """A result of the same shape with no estimate (a model whose checkpoint is missing)."""
    out = template.copy(deep=True)
    for name in ("ate", "ate_raw", "stderr", "m0"):
        out[name] = out[name].where(False)
    out["n_draws"] = xr.zeros_like(out["n_draws"])
    out["screened"] = xr.zeros_like(out["screened"])
    out["forwards"] = xr.zeros_like(out["forwards"])
    return out.assign_coords(layer_path=("layer", [""] * out.sizes["layer"]), layer_role=("layer", [""] * out.sizes["layer"]),
                             layer_output=("layer", [""] * out.sizes["layer"]))


def run_report(
    models: Sequence[str] | None = None,
    datasets: Sequence[str] = ("lesions", "vessels"),
    *,
    settings: ReportSettings = REPORT,
    device: str | torch.device | None = None,
    loader: Loader | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[xr.Dataset, list[str]]:
    """Run the report; returns the stacked dataset (model, dataset, image, layer) and the missing pairs.

    Parameters
    ----------
    models : names of zoo architectures (default: all of ``pdcr_lab.zoo.list()``)
    datasets : embedded dataset names
    loader : callable (name, dataset) -> (model, metadata), default ``pdcr_lab.zoo.load``
        A pair whose loader raises FileNotFoundError is skipped and listed as missing.
    """
    from .. import datasets as datasets_module

    if loader is None or models is None:
        from .. import zoo

        loader = loader or zoo.load
        models = list(zoo.list()) if models is None else models
    results: dict[str, dict[str, xr.Dataset]] = {}
    missing: list[str] = []
    for dataset in datasets:
        data = datasets_module.load(dataset)
        images, masks, ids = data.images("test"), data.masks("test"), data.ids("test")
        block = data.bank.block
        picks = pick_images(masks, settings.images, settings.roi_size, block)
        donors = data.images("train")[: settings.donors]
        for name in models:
            try:
                model, _ = loader(name, dataset)
            except FileNotFoundError as exc:
                missing.append(f"{name}/{dataset}")
                echo(f"  skip {name} on {dataset}: {exc}")
                continue
            main = [c for c in find_components(model, images[0]) if c.main]
            labels = stage_labels(main)
            per_image = []
            for index, roi in picks:
                ds = explain_components(
                    model, images[index], roi=roi, target=masks[index], layers=[c.path for c in main], unit="module",
                    donors=donors, block=block, coarse=settings.coarse, fine=settings.fine, tau=settings.tau,
                    seed=settings.seed, device=device,
                )
                ds = ds.assign_coords(layer_path=("layer", list(ds.layer.values)))
                ds = ds.assign_coords(layer=[labels[p] for p in ds.layer.values])
                per_image.append(ds.assign_attrs(image_id=ids[index], image_index=index))
            results.setdefault(name, {})[dataset] = stack(per_image, "image", labels=list(range(len(per_image))))
            echo(f"  {name} on {dataset}: {len(main)} stages x {len(picks)} images")
    if not results:
        raise ValueError(f"no zoo model could be loaded for {list(models)} on {list(datasets)}")
    union = sorted({str(k) for by_data in results.values() for ds in by_data.values() for k in ds.layer.values}, key=_label_key)
    templates = {d: _pad(ds, union) for by_data in results.values() for d, ds in by_data.items()}
    by_dataset = {}
    for dataset in [d for d in datasets if d in templates]:
        per_model = {name: _pad(by_data[dataset], union) if dataset in by_data else _absent(templates[dataset])
                     for name, by_data in results.items()}
        by_dataset[dataset] = stack(per_model, "model")
    report = stack(by_dataset, "dataset")
    return report.assign_attrs(report_settings=str(settings), missing=", ".join(missing) or "none"), missing


def summarize(report: xr.Dataset) -> list[dict[str, Any]]:
    """Per (model, dataset): the stage with the largest mean |ATE| over the images (``top``), its mean
    signed ATE, its share of the summed mean |ATE| of all stages, and the runner-up stage."""
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
    """A fixed-width text table of :func:`summarize` rows."""
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
