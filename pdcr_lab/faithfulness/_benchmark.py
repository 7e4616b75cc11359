"""The faithfulness comparison: every method on every zoo model and embedded dataset, one table.

Protocol *(ours)*: for each dataset (``lesions``, ``vessels``) the test images at the fixed indices
``images`` (default 0, 1) are explained in a 16 x 16 RoI on the ground truth's boundary
(:func:`pdcr_lab.rois.boundary_roi`, block 8), with the ground truth as the outcome's reference.
Every method gets the same image, RoI, target, natural bank (the dataset's) and seed. Each map is
scored by :func:`deletion_insertion` under the ``natural``, ``zero`` and ``blur`` policies with a
random ranking as control, and (on the first ``sanity_images`` images) by the randomisation check.
Summaries are means over images with a 95% percentile bootstrap interval (``n_boot`` resamples of
the images, seeded).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..baselines import gradcam, misure, occlusion, rise
from ..call import RoiOutcome, evaluation, finish, prepare
from ..defaults import PAPER
from ..engine import explain
from ..rois import boundary_roi
from ._curves import CURVES, POLICIES, deletion_insertion, support_scores
from ._sanity import randomization_check

__all__ = ["default_methods", "random_ranking", "faithfulness_benchmark", "summarize", "write_table", "LOWER_IS_BETTER"]

Explainer = Callable[..., xr.Dataset]

#: Metrics where a lower value means a more faithful map.
LOWER_IS_BETTER = ("deletion",)


def random_ranking(model: Any, image: Any, *, roi: Any, target: Any = None, block: int = PAPER.block, seed: int = 0,
                   device: Any = None, **_: Any) -> xr.Dataset:
    """The random-ranking control as an explainer: uniform random block scores (method "random").

    It ignores the model (beyond recording ``m0``), so it should fail the randomisation check.
    """
    call = prepare(model, image, roi=roi, target=target, seed=seed, device=device, caller="random_ranking", block=block)
    with evaluation(model, call.device):
        state = RoiOutcome(call)
    values = np.random.default_rng(seed).random((len(call.rois), *call.grid))
    return finish(call, method="random", block_map=values, m0=state.m0, forwards=state.forwards, support_sign=1,
                  units="rank score")


def default_methods(*, fine: int = 5, coarse: int = PAPER.coarse, rise_masks: int = 300, misure_steps: int = 60,
                    device: Any = None) -> dict[str, Explainer]:
    """The benchmark's methods, each as ``f(model, image, *, roi, target, bank, seed) -> effects``.

    ``pdcr`` uses the natural bank with `coarse` screening and `fine` estimation draws; the
    baselines use their documented defaults except `rise_masks` and `misure_steps` (CPU budget).
    """

    def pdcr(model, image, *, roi, target=None, bank=None, seed=0):
        return explain(model, image, roi=roi, target=target, bank=bank, coarse=coarse, fine=fine, seed=seed,
                       device=device)

    def occlusion_zero(model, image, *, roi, target=None, bank=None, seed=0):
        return occlusion(model, image, roi=roi, target=target, occluder="zero", seed=seed, device=device)

    def occlusion_blur(model, image, *, roi, target=None, bank=None, seed=0):
        return occlusion(model, image, roi=roi, target=target, occluder="blur", seed=seed, device=device)

    def gradcam_relu(model, image, *, roi, target=None, bank=None, seed=0):
        return gradcam(model, image, roi=roi, target=target, seed=seed, device=device)

    def gradcam_signed(model, image, *, roi, target=None, bank=None, seed=0):
        return gradcam(model, image, roi=roi, target=target, relu=False, seed=seed, device=device)

    def misure_(model, image, *, roi, target=None, bank=None, seed=0):
        return misure(model, image, roi=roi, target=target, bank=bank, steps=misure_steps, seed=seed, device=device)

    def rise_(model, image, *, roi, target=None, bank=None, seed=0):
        return rise(model, image, roi=roi, target=target, n_masks=rise_masks, seed=seed, device=device)

    def random_(model, image, *, roi, target=None, bank=None, seed=0):
        return random_ranking(model, image, roi=roi, target=target, seed=seed, device=device)

    return {"pdcr": pdcr, "occlusion_zero": occlusion_zero, "occlusion_blur": occlusion_blur, "gradcam": gradcam_relu,
            "gradcam_signed": gradcam_signed, "misure": misure_, "rise": rise_, "random": random_}


def faithfulness_benchmark(
    *,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] = ("lesions", "vessels"),
    images: Sequence[int] = (0, 1),
    methods: Mapping[str, Explainer] | None = None,
    policies: Sequence[str] = POLICIES,
    steps: int | None = 7,
    sanity_images: int = 1,
    roi_size: int = 16,
    min_images_per_s: float = 0.0,
    seed: int = 0,
    device: Any = None,
    progress: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Run the comparison; returns one xarray Dataset (see the module notes for the protocol).

    Parameters
    ----------
    models : names of zoo models; None: ``pdcr_lab.zoo.list()``. Pairs without a checkpoint are
        skipped and listed in ``attrs["missing"]``.
    datasets : embedded dataset names.
    images : indices into each dataset's test split.
    methods : name -> explainer; None: :func:`default_methods`.
    policies, steps : passed to :func:`deletion_insertion` (``steps`` points per curve).
    sanity_images : the randomisation check runs on this many of the images.
    roi_size : side of the boundary RoI in pixels.
    min_images_per_s : skip models whose recorded CPU throughput (the zoo manifest's
        ``images_per_s``) is lower (CPU budget); they are listed in ``attrs["skipped"]``.
    seed : shared by every method, the natural draws and the tie-breaking.

    Returns
    -------
    xarray.Dataset
        ``auc`` (model, dataset, image, method, policy, curve), ``seconds`` and ``forwards`` (model,
        dataset, image, method), ``m0`` (model, dataset, image), ``ate`` support scores (model,
        dataset, image, method, block_y, block_x), ``spearman`` and ``sanity_passed`` (model,
        dataset, method; mean over the checked images), ``roi_box`` (dataset, image, side).
    """
    from .. import datasets as data_registry
    from .. import zoo

    methods = dict(methods or default_methods(device=device))
    names = list(models) if models is not None else list(zoo.list())
    say = progress or (lambda _msg: None)
    labels = list(methods)
    policies = list(policies)
    missing: list[str] = []
    skipped: list[str] = []
    failures: dict[str, str] = {}

    def load(name: str, d: str) -> Any:
        """The model, or None (missing / too slow, recorded); loaded when its dataset's turn comes,
        so checkpoints that appear while the benchmark runs are used."""
        try:
            model, meta = zoo.load(name, d)
        except FileNotFoundError:
            missing.append(f"{name}/{d}")
            return None
        speed = meta.get("images_per_s")
        if speed is not None and float(speed) < min_images_per_s:
            skipped.append(f"{name}/{d} ({float(speed):.1f} images/s)")
            return None
        return model

    present = names
    shape_i = (len(present), len(datasets), len(images))
    auc = np.full((*shape_i, len(labels), len(policies), len(CURVES)), np.nan)
    seconds = np.full((*shape_i, len(labels)), np.nan)
    forwards = np.full((*shape_i, len(labels)), -1, dtype=np.int64)
    m0 = np.full(shape_i, np.nan)
    spearman = np.full((len(present), len(datasets), len(labels), max(sanity_images, 1)), np.nan)
    constant = np.full(spearman.shape, np.nan)
    roi_box = np.zeros((len(datasets), len(images), 4), dtype=np.int64)
    maps: np.ndarray | None = None
    start = time.perf_counter()
    for di, d in enumerate(datasets):
        data = data_registry.load(d)
        test_images, test_masks, bank = data.images("test"), data.masks("test"), data.bank
        for ii, index in enumerate(images):
            roi_box[di, ii] = boundary_roi(test_masks[index], size=roi_size, block=bank.block)
        for mi, name in enumerate(present):
            model = load(name, d)
            if model is None:
                continue
            for ii, index in enumerate(images):
                image, target, roi = test_images[index], test_masks[index], tuple(int(v) for v in roi_box[di, ii])
                results = {}
                for ki, label in enumerate(labels):
                    say(f"{d} {name} image {index}: {label}")
                    t0 = time.perf_counter()
                    try:
                        results[label] = methods[label](model, image, roi=roi, target=target, bank=bank, seed=seed)
                    except (ValueError, TypeError) as exc:  # the method does not apply to this model
                        failures[f"{name}/{d}/{label}"] = str(exc)
                        continue
                    seconds[mi, di, ii, ki] = time.perf_counter() - t0
                    forwards[mi, di, ii, ki] = int(results[label]["forwards"])
                    if maps is None:
                        maps = np.full((*shape_i, len(labels), *results[label]["ate"].shape), np.nan)
                    maps[mi, di, ii, ki] = support_scores(results[label])
                say(f"{d} {name} image {index}: deletion/insertion")
                curves = deletion_insertion(model, image, results, target=target, policies=policies, bank=bank,
                                            steps=steps, random_control=False, seed=seed)
                done = [k for k, label in enumerate(labels) if label in results]
                auc[mi, di, ii, done] = curves["auc"].sel({"method": [labels[k] for k in done]}).values
                m0[mi, di, ii] = float(curves["m0"])
                if ii < sanity_images:
                    for ki, label in enumerate(labels):
                        if label not in results:
                            continue
                        say(f"{d} {name} image {index}: randomisation check of {label}")
                        check = randomization_check(methods[label], model, image, roi=roi, target=target, bank=bank,
                                                    seed=seed)
                        spearman[mi, di, ki, ii] = float(check["spearman"])
                        constant[mi, di, ki, ii] = float(check["constant_after"])
    ran = [i for i in range(len(present)) if np.isfinite(m0[i]).any()]
    present = [present[i] for i in ran]
    auc, seconds, forwards, m0, spearman, constant = (a[ran] for a in (auc, seconds, forwards, m0, spearman, constant))
    if maps is not None:
        maps = maps[ran]
    shape_i = (len(present), len(datasets), len(images))
    grid = maps.shape[-2:] if maps is not None else (0, 0)
    dims_i = ("model", "dataset", "image")
    checked = np.isfinite(spearman)
    counts = np.maximum(checked.sum(axis=-1), 1)
    spearman_mean = np.where(checked.any(axis=-1), np.where(checked, spearman, 0).sum(axis=-1) / counts, np.nan)
    low = checked & (np.abs(np.nan_to_num(spearman, nan=1.0)) < 0.5)
    passed = np.where(checked.any(axis=-1), low.sum(axis=-1) / counts, np.nan)
    return xr.Dataset(
        {
            "auc": ((*dims_i, "method", "policy", "curve"), auc,
                    {"long_name": "normalised AUC of the RoI outcome (deletion: lower is better; insertion: higher)"}),
            "seconds": ((*dims_i, "method"), seconds, {"long_name": "wall time of the explanation", "units": "s"}),
            "forwards": ((*dims_i, "method"), forwards, {"long_name": "forward passes of the explanation"}),
            "m0": (dims_i, m0, {"long_name": "factual outcome M0", "units": "DSC points"}),
            "ate": ((*dims_i, "method", "block_y", "block_x"),
                    maps if maps is not None else np.zeros((*shape_i, len(labels), 0, 0)),
                    {"long_name": "support score (support_sign * map): larger = supports the RoI more"}),
            "spearman": (("model", "dataset", "method"), spearman_mean,
                         {"long_name": "Spearman correlation of the map before/after weight randomisation"}),
            "sanity_passed": (("model", "dataset", "method"), passed,
                              {"long_name": "fraction of checked images with |spearman| < 0.5"}),
            "sanity_constant": (("model", "dataset", "method"),
                                np.where(checked.any(axis=-1), np.nan_to_num(constant).sum(axis=-1) / counts, np.nan),
                                {"long_name": "fraction of checked images whose randomised-model map is constant"}),
            "roi_box": (("dataset", "image", "side"), roi_box),
        },
        coords={"model": present, "dataset": list(datasets), "image": list(images), "method": labels,
                "policy": policies, "curve": list(CURVES), "side": ["row", "col", "height", "width"],
                "block_y": np.arange(grid[0]), "block_x": np.arange(grid[1])},
        attrs={"seed": seed, "steps": "all" if steps is None else int(steps), "sanity_images": sanity_images,
               "roi_size": roi_size, "missing": json.dumps(missing), "skipped": json.dumps(skipped),
               "failures": json.dumps(failures),
               "wall_seconds": round(time.perf_counter() - start, 1),
               "protocol": __doc__.split("\n\n", 1)[1].strip()},
    )


def _bootstrap(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval of the finite values."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan, np.nan)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(result: xr.Dataset, *, n_boot: int = 2000, seed: int = 0) -> xr.Dataset:
    """Mean and 95% bootstrap interval over images per (model, dataset, method, metric).

    Metrics: ``<curve>_<policy>`` AUCs and ``seconds``. Also ``overall`` per (dataset, method,
    metric), resampling all (model, image) pairs of a dataset.
    """
    metrics = [f"{c}_{p}" for c in result["curve"].values for p in result["policy"].values] + ["seconds"]

    def metric_values(name: str) -> xr.DataArray:
        if name == "seconds":
            return result["seconds"]
        curve, policy = name.split("_", 1)
        return result["auc"].sel(curve=curve, policy=policy)

    rng = np.random.default_rng(seed)
    models, dsets, methods = (list(result[d].values) for d in ("model", "dataset", "method"))
    per = np.full((len(models), len(dsets), len(methods), len(metrics), 3), np.nan)
    overall = np.full((len(dsets), len(methods), len(metrics), 3), np.nan)
    for k, name in enumerate(metrics):
        values = metric_values(name).transpose("model", "dataset", "image", "method").values
        for a in range(len(models)):
            for b in range(len(dsets)):
                for c in range(len(methods)):
                    per[a, b, c, k] = _bootstrap(values[a, b, :, c], n_boot, rng)
        for b in range(len(dsets)):
            for c in range(len(methods)):
                overall[b, c, k] = _bootstrap(values[:, b, :, c].ravel(), n_boot, rng)
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


def write_table(result: xr.Dataset, summary: xr.Dataset, path: str | os.PathLike, *,
                planted: xr.Dataset | None = None, command: str = "") -> Path:
    """Write the Markdown table (overall, wins, per model, sanity, planted) atomically to `path`."""
    lines: list[str] = ["# Faithfulness benchmark", ""]
    if command:
        lines += [f"Produced by `{command}`.", ""]
    missing = json.loads(result.attrs.get("missing", "[]"))
    lines += [
        f"Models: {', '.join(map(str, result['model'].values))}; "
        f"datasets: {', '.join(map(str, result['dataset'].values))}; "
        f"test images {list(map(int, result['image'].values))}; RoI {result.attrs['roi_size']} px on the ground-truth "
        f"boundary; seed {result.attrs['seed']}; curve points {result.attrs['steps']}; wall time "
        f"{result.attrs['wall_seconds']} s.",
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
    lines += ["## Best method per model, dataset and metric (random control excluded)", "",
              "| model | dataset | " + " | ".join(metrics[:-1]) + " |", "|---" * (len(metrics) + 1) + "|"]
    wins = {m: 0 for m in methods}
    by_policy = {(m, p): 0 for m in methods for p in result["policy"].values}
    total = 0
    for mo in summary["model"].values:
        for d in ran:
            row = []
            for k in metrics[:-1]:
                means = summary["summary"].sel(model=mo, dataset=d, metric=k, stat="mean").values
                best = _best(k, means, methods)
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
    lines.append("")
    lines += ["## Randomisation check (Spearman of the support scores before/after re-initialising the weights)", "",
              "| method | " + " | ".join(f"rho {d}" for d in ran)
              + " | passed: abs(rho) < 0.5 | randomised map constant |",
              "|---" * (len(ran) + 3) + "|"]
    for m in methods:
        rho = [_nanmean(result["spearman"].sel({"method": m, "dataset": d}).values) for d in ran]
        ok = _nanmean(result["sanity_passed"].sel({"method": m}).values)
        flat = _nanmean(result["sanity_constant"].sel({"method": m}).values)
        lines.append(f"| {m} | " + " | ".join(f"{r:.2f}" for r in rho) + f" | {ok:.0%} | {flat:.0%} |")
    lines.append("")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


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
                cells = f"{_cell(_bootstrap(a, n_boot, rng))} | {_cell(_bootstrap(p, n_boot, rng))}"
                lines.append(f"| {t} | {mo} | {m} | {cells} |")
    return [*lines, ""]
