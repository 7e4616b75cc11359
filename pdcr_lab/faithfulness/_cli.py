"""``pdcr-lab benchmark faithfulness``: the comparison table of PdCR and the baselines.

The defaults are sized for a shared 2-core CPU: 2 test images per dataset, PdCR with S = 3
screening and N = 5 fine draws (paper: 50), RISE with 300 masks, MiSuRe with 60 Adam steps,
deletion/insertion curves at 7 points, the randomisation check on the first image, 3 images per
planted task, and zoo models slower than 5 images/s (zoo manifest) skipped and listed. Every one
of these is an option, to scale up on a bigger machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

__all__ = ["add_subparser"]

ROOT = Path(__file__).resolve().parents[2]


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


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    p = _benchmark_subparsers(subparsers).add_parser(
        "faithfulness",
        help="PdCR vs Seg-Grad-CAM, MiSuRe, occlusion and RISE: deletion/insertion, sanity, planted causes",
        description="Run every method on every zoo model and embedded dataset; write an xarray result and a "
        "Markdown table (mean and 95%% bootstrap interval per model, dataset, method and metric).",
    )
    p.add_argument("--models", nargs="*", default=None, help="zoo models (default: all of pdcr_lab.zoo.list())")
    p.add_argument("--datasets", nargs="*", default=["lesions", "vessels"])
    p.add_argument("--images", type=int, nargs="*", default=[0, 1], help="test-image indices per dataset")
    p.add_argument("--fine", type=int, default=5, help="PdCR fine draws N (paper: 50)")
    p.add_argument("--coarse", type=int, default=3, help="PdCR screening draws S (paper: 3)")
    p.add_argument("--rise-masks", type=int, default=300)
    p.add_argument("--misure-steps", type=int, default=60)
    p.add_argument("--steps", type=int, default=7, help="points per deletion/insertion curve (0: every block)")
    p.add_argument("--min-images-per-s", type=float, default=5.0,
                   help="skip zoo models slower than this on the CPU (zoo manifest throughput); 0: run all")
    p.add_argument("--sanity-images", type=int, default=1, help="images per model/dataset for the randomisation check")
    p.add_argument("--planted-images", type=int, default=3, help="images per planted task (0: skip)")
    p.add_argument("--train-planted", action="store_true",
                   help="retrain the planted-task models and rewrite data/planted/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "results" / "faithfulness.nc")
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "faithfulness_table.md")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import xarray as xr

    from . import (
        TASKS,
        default_methods,
        faithfulness_benchmark,
        planted_benchmark,
        save_planted,
        summarize,
        train_planted,
        write_table,
    )

    start = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    if args.train_planted:
        for task in TASKS:
            say(f"training the planted-task model for {task!r}")
            model, recipe = train_planted(task, seed=args.seed)
            say(f"wrote {save_planted(model, recipe)}")
    methods = default_methods(fine=args.fine, coarse=args.coarse, rise_masks=args.rise_masks,
                              misure_steps=args.misure_steps, device=args.device)
    result = faithfulness_benchmark(models=args.models, datasets=args.datasets, images=args.images, methods=methods,
                                    steps=args.steps or None, sanity_images=args.sanity_images, seed=args.seed,
                                    min_images_per_s=args.min_images_per_s,
                                    device=args.device, progress=say)
    planted = None
    if args.planted_images > 0:
        planted = planted_benchmark(methods, n_images=args.planted_images, seed=args.seed, progress=say)
    summary = summarize(result, seed=args.seed)
    models = f" --models {' '.join(args.models)}" if args.models is not None else ""
    command = (f"pdcr-lab benchmark faithfulness{models} --datasets {' '.join(args.datasets)} "
               f"--images {' '.join(map(str, args.images))} --coarse {args.coarse} --fine {args.fine} "
               f"--rise-masks {args.rise_masks} --misure-steps {args.misure_steps} --steps {args.steps} "
               f"--sanity-images {args.sanity_images} --planted-images {args.planted_images} "
               f"--min-images-per-s {args.min_images_per_s:g} --seed {args.seed}")
    table = write_table(result, summary, args.table, planted=planted, command=command)
    merged = xr.merge([result, summary], combine_attrs="override")
    if planted is not None:
        renamed = planted.rename({n: f"planted_{n}" for n in ("task", "model", "image", "method")})
        renamed = renamed.rename_vars({"auroc": "planted_auroc", "auprc": "planted_auprc"})
        merged = xr.merge([merged, renamed], combine_attrs="override")
    merged.attrs.update(fine=args.fine, coarse=args.coarse, rise_masks=args.rise_masks, misure_steps=args.misure_steps,
                        command=command, total_seconds=round(time.perf_counter() - start, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.", suffix=".tmp")
    os.close(fd)
    merged.to_netcdf(tmp, engine="h5netcdf")
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    say(f"wrote {args.out} and {table}")
    return 0
