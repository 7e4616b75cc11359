"""Summaries and the table of the faithfulness comparison (``pdcr-lab benchmark faithfulness``).

The comparison itself (every method on every zoo model and embedded dataset) is run by
:func:`pdcr_lab.studies.faithfulness_study`; this module reads its result:

* :func:`pdcr_lab.statistics.bootstrap_interval` (used here): estimate and percentile bootstrap interval of a statistic of one or
  more independent samples (``scipy.stats.bootstrap``), with degenerate samples handled;
* :func:`summarize`: mean and 95% bootstrap interval over images per (model, dataset, method,
  metric), and over all (model, image) pairs of a dataset;
* :func:`format_table` / :func:`write_table`: the Markdown table (overall, wins, sanity, planted
  causes, per model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..atomic import write_text
from ..statistics import bootstrap_interval

__all__ = ["LOWER_IS_BETTER", "summarize", "format_table", "write_table"]

#: Metrics where a lower value means a more faithful map.
LOWER_IS_BETTER = ("deletion",)


def summarize(result: xr.Dataset, *, n_boot: int = 2000, seed: int = 0) -> xr.Dataset:
    """Mean and 95% bootstrap interval over images per (model, dataset, method, metric).

    Metrics: ``<curve>_<policy>`` AUCs and ``seconds``. Also ``overall`` per (dataset, method,
    metric), resampling all (model, image) pairs of a dataset. Images without a value (a method
    that failed, a pair that was not run) are left out.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`pdcr_lab.studies.faithfulness_study`: ``auc`` (model, dataset, image,
        method, policy, curve) and ``seconds`` (model, dataset, image, method).
    n_boot : int
        Bootstrap resamples (:func:`bootstrap_interval`).
    seed : int
        Seed of the resampling; recorded in the attrs.

    Returns
    -------
    xarray.Dataset
        ``summary`` (model, dataset, method, metric, stat) and ``overall`` (dataset, method, metric,
        stat) with ``stat`` = mean, lo, hi.
    """
    metrics = [f"{c}_{p}" for c in result["curve"].values for p in result["policy"].values] + ["seconds"]

    def metric_values(name: str) -> xr.DataArray:
        if name == "seconds":
            return result["seconds"]
        curve, policy = name.split("_", 1)
        return result["auc"].sel(curve=curve, policy=policy)

    def interval(values: np.ndarray) -> np.ndarray:
        return bootstrap_interval([values[np.isfinite(values)]], n_boot=n_boot, rng=rng)

    rng = np.random.default_rng(seed)
    models, dsets, methods = (list(result[d].values) for d in ("model", "dataset", "method"))
    per = np.full((len(models), len(dsets), len(methods), len(metrics), 3), np.nan)
    overall = np.full((len(dsets), len(methods), len(metrics), 3), np.nan)
    for k, name in enumerate(metrics):
        values = metric_values(name).transpose("model", "dataset", "image", "method").values
        for a in range(len(models)):
            for b in range(len(dsets)):
                for c in range(len(methods)):
                    per[a, b, c, k] = interval(values[a, b, :, c])
        for b in range(len(dsets)):
            for c in range(len(methods)):
                overall[b, c, k] = interval(values[:, b, :, c].ravel())
    stat = ["mean", "lo", "hi"]
    return xr.Dataset(
        {"summary": (("model", "dataset", "method", "metric", "stat"), per),
         "overall": (("dataset", "method", "metric", "stat"), overall)},
        coords={"model": models, "dataset": dsets, "method": methods, "metric": metrics, "stat": stat},
        attrs={"n_boot": n_boot, "seed": seed, "interval": "95% percentile bootstrap over images"},
    )


def _nanmean(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")


def _cell(values: np.ndarray, digits: int = 3) -> str:
    mean, lo, hi = values
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _best(metric: str, means: np.ndarray, methods: list[str]) -> str:
    """The best method (ties: all of them) for a metric, the random control excluded."""
    pool = [(m, v) for m, v in zip(methods, means) if m != "random" and np.isfinite(v)]
    if not pool:
        return "n/a"
    lower = metric.split("_", 1)[0] in LOWER_IS_BETTER
    target = min(v for _, v in pool) if lower else max(v for _, v in pool)
    return ", ".join(m for m, v in pool if np.isclose(v, target, atol=5e-4))


def _intro(result: xr.Dataset, command: str) -> list[str]:
    lines: list[str] = ["# Faithfulness benchmark", ""]
    if command:
        lines += [f"Produced by `{command}`.", ""]
    missing = json.loads(result.attrs.get("missing", "[]"))
    return lines + [
        f"Models: {', '.join(map(str, result['model'].values))}; "
        f"datasets: {', '.join(map(str, result['dataset'].values))}; "
        f"test images {list(map(int, result['image'].values))}; RoI {result.attrs['roi_size']} px on the ground-truth "
        f"boundary; seed {result.attrs['seed']}; curve points {result.attrs['steps']}; wall time "
        f"{result.attrs['wall_seconds']} s" + _cell_time(result.attrs) + ".",
        "",
        "Missing model/dataset pairs (no checkpoint when the benchmark ran): "
        + (", ".join(missing) if missing else "none") + ".",
        "",
        "Skipped as too slow for the CPU budget (zoo manifest throughput below the threshold): "
        + (", ".join(json.loads(result.attrs.get("skipped", "[]"))) or "none") + ".",
        "",
        "Methods that failed (not applicable to a model): "
        + (", ".join(f"{k}: {v}" for k, v in json.loads(result.attrs.get("failures", "{}")).items()) or "none") + ".",
        "",
        "Metrics: normalised AUC in [0, 1] of the RoI outcome (100 x DSC in the RoI vs the ground truth, "
        "divided by 100) "
        "against the fraction of non-RoI blocks changed, ranked by each method's support score. "
        "`deletion_*`: lower is better; `insertion_*`: higher is better; the suffix is the replacement policy. "
        "Cells: mean [95% bootstrap interval].",
        "",
    ]


def _wins(result: xr.Dataset, summary: xr.Dataset, ran: list[Any], metrics: list[str], methods: list[str]) -> list[str]:
    """The best-method table and the win counts, overall and by replacement policy."""
    lines = ["## Best method per model, dataset and metric (random control excluded)", "",
             "| model | dataset | " + " | ".join(metrics[:-1]) + " |", "|---" * (len(metrics) + 1) + "|"]
    wins = {m: 0 for m in methods}
    by_policy = {(m, p): 0 for m in methods for p in result["policy"].values}
    total = 0
    for mo in summary["model"].values:
        for d in ran:
            row = []
            for k in metrics[:-1]:
                best = _best(k, summary["summary"].sel(model=mo, dataset=d, metric=k, stat="mean").values, methods)
                row.append(best)
                if best != "n/a":
                    total += 1
                    for b in best.split(", "):
                        wins[b] += 1
                        by_policy[(b, k.split("_", 1)[1])] += 1
            if any(r != "n/a" for r in row):
                lines.append(f"| {mo} | {d} | " + " | ".join(row) + " |")
    lines += ["", "Wins (a tie counts for every tied method): "
              + ", ".join(f"{m} {wins[m]}/{total}" for m in methods if m != "random") + ".", "",
              "Wins by replacement policy of the score (deletion and insertion together):", "",
              "| method | " + " | ".join(map(str, result["policy"].values)) + " |",
              "|---" * (len(result["policy"]) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(str(by_policy[(m, p)]) for p in result["policy"].values) + " |"
              for m in methods if m != "random"]
    return [*lines, ""]


def _sanity(result: xr.Dataset, ran: list[Any], methods: list[str]) -> list[str]:
    lines = ["## Randomisation check (Spearman of the support scores before/after re-initialising the weights)", "",
             "| method | " + " | ".join(f"rho {d}" for d in ran) + " | passed: abs(rho) < 0.5 | randomised map constant |",
             "|---" * (len(ran) + 3) + "|"]
    for m in methods:
        rho = [_nanmean(result["spearman"].sel({"method": m, "dataset": d}).values) for d in ran]
        ok = _nanmean(result["sanity_passed"].sel({"method": m}).values)
        flat = _nanmean(result["sanity_constant"].sel({"method": m}).values)
        lines.append(f"| {m} | " + " | ".join(f"{r:.2f}" for r in rho) + f" | {ok:.0%} | {flat:.0%} |")
    return [*lines, ""]


def _planted_lines(planted: xr.Dataset, n_boot: int = 2000, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = ["## Planted-cause attribution accuracy (|map| vs the marker blocks)", "",
             planted.attrs.get("definition", ""), "",
             "| task | model | method | AUROC | AUPRC |", "|---|---|---|---|---|"]
    for t in planted["task"].values:
        for mo in planted["model"].values:
            for m in planted["method"].values:
                a = planted["auroc"].sel({"task": t, "model": mo, "method": m}).values
                if np.isnan(a).all():
                    continue
                p = planted["auprc"].sel({"task": t, "model": mo, "method": m}).values
                cells = [_cell(bootstrap_interval([v[np.isfinite(v)]], n_boot=n_boot, rng=rng)) for v in (a, p)]
                lines.append(f"| {t} | {mo} | {m} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def format_table(result: xr.Dataset, summary: xr.Dataset, *, planted: xr.Dataset | None = None,
                 command: str = "", paired: xr.Dataset | None = None) -> str:
    """The Markdown table: overall, wins, randomisation check, planted causes, per model.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`pdcr_lab.studies.faithfulness_study`.
    summary : xarray.Dataset
        Output of :func:`summarize` on `result`.
    planted : xarray.Dataset, optional
        Output of :func:`~pdcr_lab.faithfulness.planted_benchmark`.
    command : str
        The command line that produced the result, quoted at the top.
    paired : xarray.Dataset, optional
        Output of :func:`~pdcr_lab.faithfulness.paired_tests`: the paired comparisons follow the
        overall tables.
    """
    from ._paired import format_paired

    lines = _intro(result, command)
    metrics = list(summary["metric"].values)
    methods = list(summary["method"].values)
    header = "| method | " + " | ".join(metrics) + " |"
    rule = "|---" * (len(metrics) + 1) + "|"
    ran = [d for d in summary["dataset"].values if np.isfinite(summary["overall"].sel(dataset=d).values).any()]
    for d in ran:
        lines += [f"## Overall: {d} (all models and images)", "", header, rule]
        for m in methods:
            cells = [_cell(summary["overall"].sel({"dataset": d, "method": m, "metric": k}).values,
                           3 if k != "seconds" else 1) for k in metrics]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if paired is not None:
        lines += ["## Paired comparisons (image by image)", "", format_paired(paired)]
    lines += _wins(result, summary, ran, metrics, methods)
    lines += _sanity(result, ran, methods)
    if planted is not None:
        lines += _planted_lines(planted)
    lines += ["## Per model (mean [95% bootstrap interval over images])", "",
              "| model | dataset | " + header[2:], "|---|---" + rule]
    for mo in summary["model"].values:
        for d in ran:
            if np.isnan(summary["summary"].sel(model=mo, dataset=d).values[..., 0]).all():
                continue
            for m in methods:
                cells = [_cell(summary["summary"].sel({"model": mo, "dataset": d, "method": m, "metric": k}).values,
                               3 if k != "seconds" else 1) for k in metrics]
                lines.append(f"| {mo} | {d} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell_time(attrs: Mapping[str, Any]) -> str:
    """The (model, dataset) cells' own compute time, when it differs from the wall time (a resumed run)."""
    cells = float(attrs.get("cell_seconds", np.nan))
    if not np.isfinite(cells) or cells <= float(attrs.get("wall_seconds", 0)):
        return ""
    return f" (the cells, reused, took {cells / 3600:.1f} h to compute)"


def write_table(result: xr.Dataset, summary: xr.Dataset, path: str | os.PathLike, *,
                planted: xr.Dataset | None = None, command: str = "", paired: xr.Dataset | None = None) -> Path:
    """Write :func:`format_table` atomically to `path` and return the path.

    Parameters
    ----------
    result, summary, planted, command, paired
        As in :func:`format_table`.
    path : str or os.PathLike
        The Markdown file (its folder is created).
    """
    return write_text(path, format_table(result, summary, planted=planted, command=command, paired=paired))
