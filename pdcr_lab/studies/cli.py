"""The studies' sub-commands: ``components``, ``strategies``, ``cues``, ``cue-attribution``, ``benchmark faithfulness``.

Each is a thin layer over :mod:`pdcr_lab.studies` (run the study) and the analysis package that
reads its result (summaries, tables); every one saves each (model, dataset) cell as it is done in a
hidden ``.<stem>.cells`` folder beside ``--out``, and ``--resume`` reuses the cells computed with the
same settings and checkpoints.

The faithfulness defaults are sized for a shared 2-core CPU: 2 test images per dataset, PdCR with
S = 3 screening and N = 5 fine draws (paper: 50), RISE with 300 masks, MiSuRe with 60 Adam steps,
deletion/insertion curves at 7 points, the randomisation check on the first image, 3 images per
planted task, and zoo models slower than 5 images/s (zoo manifest) skipped and listed. Every one of
these is an option, to scale up on a bigger machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._components import COMPONENTS
from ._faithfulness import FaithfulnessSettings
from ._loop import CellStore, cells_folder
from ._strategies import StrategiesSettings

__all__ = ["add_subparser"]

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ["lesions", "vessels"]
_THREADS = "torch intra-op CPU threads (default 1: on a shared machine more threads spin-wait for each other)"
_RESUME = "reuse the (model, dataset) cells already computed beside --out with the same settings"


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``components``, ``strategies``, ``cues`` and ``benchmark faithfulness`` sub-commands.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``pdcr-lab`` parser's sub-commands.
    """
    _add_components(subparsers)
    _add_strategies(subparsers)
    _add_cues(subparsers)
    _add_cue_attribution(subparsers)
    _add_faithfulness(subparsers)


def _set_threads(threads: int) -> None:
    import torch

    if threads < 0:
        raise SystemExit(f"--threads {threads}: expected an integer >= 0")
    if threads:
        torch.set_num_threads(threads)


# -- components ------------------------------------------------------------------------------------
def _add_components(subparsers: argparse._SubParsersAction) -> None:
    out = Path("data/results/components.nc")
    p = subparsers.add_parser(
        "components",
        help="PdCR effects of the main stages of every zoo model on the embedded datasets",
        description="Component study: for every zoo architecture on lesions and vessels, the ATE of each main "
        "stage (its output replaced by the stage's output on donor train images) on fixed test images and "
        "boundary RoIs. Writes one stacked effects dataset and prints which stage carries most of the effect.",
    )
    p.add_argument("--models", nargs="+", default=None, help="zoo architectures (default: all of `pdcr-lab zoo list`)")
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--images", type=int, default=COMPONENTS.images, help="test images per dataset")
    p.add_argument("--roi-size", type=int, default=COMPONENTS.roi_size)
    p.add_argument("--donors", type=int, default=COMPONENTS.donors, help="train images whose activations are the donors")
    p.add_argument("--coarse", type=int, default=COMPONENTS.coarse)
    p.add_argument("--fine", type=int, default=COMPONENTS.fine)
    p.add_argument("--seed", type=int, default=COMPONENTS.seed)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--threads", type=int, default=1, help=_THREADS + "; 0: torch's choice")
    p.add_argument("--out", type=Path, default=out, help=f"result file (default: {out})")
    p.add_argument("--resume", action="store_true", help=_RESUME)
    p.set_defaults(func=_run_components)


def _run_components(args: argparse.Namespace) -> int:
    import dataclasses

    from ..components import format_summary, summarize
    from ..storage import save
    from ._components import components_study

    _set_threads(args.threads)
    settings = dataclasses.replace(COMPONENTS, images=args.images, roi_size=args.roi_size, donors=args.donors,
                                   coarse=args.coarse, fine=args.fine, seed=args.seed)
    store = CellStore(cells_folder(args.out), settings.cell_key(), reuse=args.resume)
    start = time.perf_counter()
    report, missing = components_study(args.models, args.datasets, settings=settings, device=args.device, store=store)
    path = save(report, args.out)
    print()
    print(format_summary(summarize(report)))
    print(f"\n{time.perf_counter() - start:.0f} s; wrote {path}")
    if missing:
        print(f"missing checkpoints (skipped): {', '.join(missing)}")
    return 0


# -- strategies ------------------------------------------------------------------------------------
def _add_strategies(subparsers: argparse._SubParsersAction) -> None:
    d = StrategiesSettings()
    p = subparsers.add_parser(
        "strategies",
        help="label the zoo's PdCR maps local / global / sequential and compare architectures and datasets",
        description="Explain fixed test images of the embedded datasets with every zoo model, label each map's "
        "perceptual strategy, and write the maps (.nc), a Markdown table with bootstrap intervals and a figure.",
    )
    p.add_argument("--models", nargs="+", default=None, help="zoo architectures (default: all of `pdcr-lab zoo list`)")
    p.add_argument("--datasets", nargs="+", default=["lesions", "vessels", "brain"], help="embedded datasets")
    p.add_argument("--images", type=int, default=d.images, help="first N test images of each dataset")
    p.add_argument("--roi-size", type=int, default=d.roi_size, help="RoI side in pixels (on the ground-truth boundary)")
    p.add_argument("--coarse", type=int, default=d.coarse, help="S, screening draws")
    p.add_argument("--fine", type=int, default=d.fine, help="N, estimation draws (the paper's 50)")
    p.add_argument("--tau", type=float, default=d.tau)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the bank draws and of the bootstrap")
    p.add_argument("--bootstrap", type=int, default=d.n_boot, help="bootstrap resamples")
    p.add_argument("--permutations", type=int, default=9999,
                   help="permutations of the heterogeneity tests (across architectures, across datasets)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the model's, cpu)")
    p.add_argument("--threads", type=int, default=1, help=_THREADS)
    p.add_argument("--out", type=Path, default=Path("data/results/strategies.nc"), help="maps, descriptors and labels")
    p.add_argument("--table", type=Path, default=Path("docs/strategies_table.md"), help="Markdown table")
    p.add_argument("--figure", type=Path, default=Path("docs/strategies.png"), help="figure")
    p.add_argument("--resume", action="store_true", help=_RESUME + "; explain only what is missing")
    p.add_argument("--relabel", action="store_true",
                   help="do not explain: relabel and summarise the maps already in --out")
    p.add_argument("--stored-only", action="store_true",
                   help="do not explain: combine the cells a (long, resumable) run has stored so far; the pairs "
                   "without one are listed as not explained")
    p.set_defaults(func=_run_strategies)


def _strategies_command(args: argparse.Namespace) -> str:
    parts = ["pdcr-lab strategies"]
    if args.models:
        parts += ["--models", *args.models]
    parts += ["--datasets", *args.datasets, "--images", str(args.images), "--roi-size", str(args.roi_size),
              "--coarse", str(args.coarse), "--fine", str(args.fine), "--seed", str(args.seed),
              "--bootstrap", str(args.bootstrap), "--permutations", str(args.permutations)]
    if args.stored_only:
        parts.append("--stored-only")
    return " ".join(parts)


def _run_strategies(args: argparse.Namespace) -> int:
    import torch

    from ..atomic import atomic_path, write_text
    from ..storage import load, save
    from ..strategies import format_heterogeneity, format_table, heterogeneity, label_maps, summarize
    from ..viz import strategies_figure
    from ._strategies import strategies_study

    settings = StrategiesSettings(images=args.images, roi_size=args.roi_size, coarse=args.coarse, fine=args.fine,
                                  tau=args.tau, seed=args.seed, n_boot=args.bootstrap)
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: expected an integer >= 1")
    _set_threads(args.threads)
    start = time.perf_counter()
    skipped: dict[tuple[str, str], str] = {}
    if args.relabel:
        if not args.out.exists():
            raise SystemExit(f"--relabel needs an earlier result at {args.out}; run without --relabel first")
        maps = load(args.out)
        print(f"relabelling {args.out}: models {list(map(str, maps.model.values))}")
    else:
        store = CellStore(cells_folder(args.out), settings.cell_key(), reuse=args.resume,
                          stored_only=args.stored_only)
        print(f"explaining {settings.images} test images per dataset with PdCR (S={settings.coarse}, N={settings.fine})")
        maps, skipped = strategies_study(args.models, args.datasets, settings, store=store,
                                         device=torch.device(args.device) if args.device else None)
    result = label_maps(maps)
    het = heterogeneity(result, n_perm=args.permutations, seed=settings.seed)
    result = result.drop_vars([v for v in result.data_vars if str(v).startswith("het_")]).merge(het)
    result.attrs.update(het.attrs)  # merge keeps the maps' attrs only
    save(result, args.out)
    summary = summarize(result, n_boot=settings.n_boot, seed=settings.seed, level=settings.level)
    seconds = time.perf_counter() - start
    # A resumed or relabelled run's own time says little; the table reports the explaining time per pair.
    fresh = not (args.relabel or args.resume or args.stored_only)
    table = format_table(summary, result, command=_strategies_command(args), skipped=skipped,
                         seconds=seconds if fresh else None)
    table += "\n## Do strategies differ? (tests stored in the result as het_* variables)\n\n" + format_heterogeneity(het)
    write_text(args.table, table)
    fig = strategies_figure(result, summary, title="PdCR perceptual strategies of the zoo")
    with atomic_path(args.figure) as tmp:
        fig.savefig(tmp, dpi=130, format=args.figure.suffix.lstrip(".") or "png")
    print(table)
    print(f"done in {seconds / 60:.1f} min; wrote {args.out}, {args.table} and {args.figure}")
    return 0


# -- cues ------------------------------------------------------------------------------------------
def _add_cues(subparsers: argparse._SubParsersAction) -> None:
    from ._cues import CUE_SETS, CueSettings

    d = CueSettings()
    p = subparsers.add_parser(
        "cues",
        help="validate the strategy labels against cue ablation on the cue-controlled datasets",
        description="For every zoo model trained on the cue-controlled sets: its reliance on each cue (RoI Dice "
        "lost when the cue is ablated), the ground-truth strategy that follows, PdCR maps of test images, their "
        "labels, and the agreement of labels and truth with Wilson intervals.",
    )
    p.add_argument("--models", nargs="+", default=None, help="zoo architectures (default: all trained on cues)")
    p.add_argument("--datasets", nargs="+", default=list(CUE_SETS), help="cue datasets")
    p.add_argument("--images", type=int, default=d.images, help="test images explained per pair")
    p.add_argument("--roi-size", type=int, default=d.roi_size)
    p.add_argument("--coarse", type=int, default=d.coarse)
    p.add_argument("--fine", type=int, default=d.fine, help="N, estimation draws (the paper's 50)")
    p.add_argument("--truth-mode", default=d.truth_mode, choices=["contradicted", "absent"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=1, help=_THREADS)
    p.add_argument("--out", type=Path, default=Path("data/results/cues.nc"))
    p.add_argument("--table", type=Path, default=Path("docs/cues_table.md"))
    p.add_argument("--resume", action="store_true", help=_RESUME + "; explain only what is missing")
    p.set_defaults(func=_run_cues)


def _run_cues(args: argparse.Namespace) -> int:
    from ..storage import save
    from ._cues import FAR_FROM_SOURCE, CueSettings, cue_study, format_cues

    _set_threads(args.threads)
    settings = CueSettings(images=args.images, roi_size=args.roi_size, coarse=args.coarse, fine=args.fine,
                           truth_mode=args.truth_mode, seed=args.seed)
    key = settings.strategies().cell_key() | {"roi_region": f"far_from_source {FAR_FROM_SOURCE}"}
    store = CellStore(cells_folder(args.out), key, reuse=args.resume)
    start = time.perf_counter()
    result = cue_study(args.models, settings, datasets=args.datasets, store=store)
    save(result, args.out)
    command = " ".join(["pdcr-lab cues", *(["--models", *args.models] if args.models else []),
                        "--datasets", *args.datasets, "--images", str(args.images), "--fine", str(args.fine),
                        "--truth-mode", args.truth_mode, "--seed", str(args.seed)])
    table = format_cues(result, command=command)
    return _report(args, table, start)


def _report(args: argparse.Namespace, table: str, start: float) -> int:
    """Write and print a study's Markdown table; say where the result went and how long it took."""
    from ..atomic import write_text

    write_text(args.table, table)
    print(table)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min; wrote {args.out} and {args.table}")
    return 0


# -- cue attribution -------------------------------------------------------------------------------
def _add_cue_attribution(subparsers: argparse._SubParsersAction) -> None:
    from ._cue_attribution import ATTRIBUTION_METHODS

    d = FaithfulnessSettings()
    p = subparsers.add_parser(
        "cue-attribution",
        help="attribution accuracy of PdCR and the baselines against the cue study's ablation ground truth",
        description="Explain the cue study's images and RoIs with every baseline, label each map with the strategy "
        "classifier and score it against the ablation truth (Wilson intervals; exact McNemar tests against PdCR).",
    )
    p.add_argument("--cues", type=Path, default=ROOT / "data" / "results" / "cues.nc",
                   help="a `pdcr-lab cues` result: images, RoIs, truth and PdCR labels")
    p.add_argument("--methods", nargs="+", default=list(ATTRIBUTION_METHODS), help="baselines (registry names)")
    p.add_argument("--rise-masks", type=int, default=d.rise_masks)
    p.add_argument("--misure-steps", type=int, default=d.misure_steps)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1, help=_THREADS)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "results" / "cue_attribution.nc")
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "cue_attribution_table.md")
    p.add_argument("--resume", action="store_true", help=_RESUME)
    p.set_defaults(func=_run_cue_attribution)


def _run_cue_attribution(args: argparse.Namespace) -> int:
    from ..storage import load, save
    from ._cue_attribution import cue_attribution, format_cue_attribution
    from ._faithfulness import study_methods

    _set_threads(args.threads)
    cues = load(args.cues)
    settings = FaithfulnessSettings(methods=tuple(args.methods), rise_masks=args.rise_masks,
                                    misure_steps=args.misure_steps, seed=int(cues.attrs.get("cue_seed", 0)))
    # the cells hold the baselines' maps: they depend on the methods, the seed and the images and RoIs
    # (checked against the cue study's boxes when the result is assembled), besides the checkpoint
    key = {"study": "cue-attribution", "methods": settings.methods, "options": settings.method_options(),
           "seed": settings.seed, "images": int(cues.sizes["image"]), "roi_size": int(cues.attrs["cue_roi_size"])}
    store = CellStore(cells_folder(args.out), key, reuse=args.resume)
    start = time.perf_counter()
    result = cue_attribution(cues, study_methods(settings, args.device), device=args.device, store=store)
    save(result, args.out, effects=False)
    command = " ".join(["pdcr-lab cue-attribution", "--methods", *args.methods, "--rise-masks", str(args.rise_masks),
                        "--misure-steps", str(args.misure_steps)])
    table = format_cue_attribution(result, command=command)
    return _report(args, table, start)


# -- faithfulness ----------------------------------------------------------------------------------
def _benchmark_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``benchmark`` command's own sub-commands (created here unless another module did)."""
    parser = subparsers.choices.get("benchmark")
    if parser is None:
        parser = subparsers.add_parser("benchmark", help="benchmarks (faithfulness, ...)",
                                       description="Benchmarks of the explainers.")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")


def _add_faithfulness(subparsers: argparse._SubParsersAction) -> None:
    d = FaithfulnessSettings()
    p = _benchmark_subparsers(subparsers).add_parser(
        "faithfulness",
        help="PdCR vs Seg-Grad-CAM, MiSuRe, occlusion and RISE: deletion/insertion, sanity, planted causes",
        description="Run every method on every zoo model and embedded dataset; write an xarray result and a "
        "Markdown table (mean and 95%% bootstrap interval per model, dataset, method and metric).",
    )
    p.add_argument("--models", nargs="*", default=None, help="zoo models (default: all of pdcr_lab.zoo.list())")
    p.add_argument("--datasets", nargs="*", default=DATASETS)
    p.add_argument("--images", type=int, nargs="*", default=list(d.images), help="test-image indices per dataset")
    p.add_argument("--fine", type=int, default=d.fine, help="PdCR fine draws N (paper: 50)")
    p.add_argument("--coarse", type=int, default=d.coarse, help="PdCR screening draws S (paper: 3)")
    p.add_argument("--rise-masks", type=int, default=d.rise_masks)
    p.add_argument("--misure-steps", type=int, default=d.misure_steps)
    p.add_argument("--steps", type=int, default=d.steps, help="points per deletion/insertion curve (0: every block)")
    p.add_argument("--min-images-per-s", type=float, default=5.0,
                   help="skip zoo models slower than this on the CPU (zoo manifest throughput); 0: run all")
    p.add_argument("--sanity-images", type=int, default=d.sanity_images,
                   help="images per model/dataset for the randomisation check")
    p.add_argument("--planted-images", type=int, default=d.planted_images, help="images per planted task (0: skip)")
    p.add_argument("--train-planted", action="store_true",
                   help="retrain the planted-task models and rewrite data/planted/")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "results" / "faithfulness.nc")
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "faithfulness_table.md")
    p.add_argument("--resume", action="store_true", help=_RESUME)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_faithfulness)


def _faithfulness_command(args: argparse.Namespace) -> str:
    models = f" --models {' '.join(args.models)}" if args.models is not None else ""
    return (f"pdcr-lab benchmark faithfulness{models} --datasets {' '.join(args.datasets)} "
            f"--images {' '.join(map(str, args.images))} --coarse {args.coarse} --fine {args.fine} "
            f"--rise-masks {args.rise_masks} --misure-steps {args.misure_steps} --steps {args.steps} "
            f"--sanity-images {args.sanity_images} --planted-images {args.planted_images} "
            f"--min-images-per-s {args.min_images_per_s:g} --seed {args.seed}")


def _run_faithfulness(args: argparse.Namespace) -> int:
    import xarray as xr

    from ..faithfulness import (TASKS, paired_tests, planted_benchmark, save_planted, summarize, train_planted,
                                write_table)
    from ..storage import save
    from ._faithfulness import faithfulness_study, study_methods

    start = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    if args.train_planted:
        for task in TASKS:
            say(f"training the planted-task model for {task!r}")
            model, recipe = train_planted(task, seed=args.seed)
            say(f"wrote {save_planted(model, recipe)}")
    settings = FaithfulnessSettings(images=tuple(args.images), coarse=args.coarse, fine=args.fine,
                                    rise_masks=args.rise_masks, misure_steps=args.misure_steps,
                                    steps=args.steps or None, sanity_images=args.sanity_images,
                                    planted_images=args.planted_images, min_images_per_s=args.min_images_per_s,
                                    seed=args.seed)
    methods = study_methods(settings, args.device)
    store = CellStore(cells_folder(args.out), settings.cell_key(), reuse=args.resume)
    result = faithfulness_study(args.models, args.datasets, settings, methods=methods, device=args.device,
                                store=store, progress=say)
    planted = None
    if settings.planted_images > 0:
        planted = planted_benchmark(methods, n_images=settings.planted_images, seed=settings.seed, progress=say)
    summary = summarize(result, n_boot=settings.n_boot, seed=settings.seed)
    paired = paired_tests(result, n_boot=settings.n_boot, seed=settings.seed)
    command = _faithfulness_command(args)
    table = write_table(result, summary, args.table, planted=planted, command=command, paired=paired)
    merged = xr.merge([result, summary, paired], combine_attrs="override", join="outer")
    if planted is not None:
        renamed = planted.rename({n: f"planted_{n}" for n in ("task", "model", "image", "method")})
        renamed = renamed.rename_vars({"auroc": "planted_auroc", "auprc": "planted_auprc"})
        merged = xr.merge([merged, renamed], combine_attrs="override", join="outer")
    merged.attrs.update(paired.attrs)  # merge kept only the first dataset's attrs
    merged.attrs.update(fine=args.fine, coarse=args.coarse, rise_masks=args.rise_masks, misure_steps=args.misure_steps,
                        command=command, total_seconds=round(time.perf_counter() - start, 1))
    # Not the effects schema (curves, summaries, planted scores): checksums and an atomic write all the same.
    save(merged, args.out, effects=False)
    say(f"wrote {args.out} and {table}")
    return 0
