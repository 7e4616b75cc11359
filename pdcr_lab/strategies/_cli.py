"""``pdcr-lab strategies``: the zoo's perceptual strategies on the embedded datasets (a thin layer
over :mod:`pdcr_lab.strategies._report`)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_subparser"]


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    from ._report import ReportSettings

    d = ReportSettings()
    p = subparsers.add_parser(
        "strategies",
        help="label the zoo's PdCR maps local / global / sequential and compare architectures and datasets",
        description="Explain fixed test images of the embedded datasets with every zoo model, label each map's "
        "perceptual strategy, and write the maps (.nc), a Markdown table with bootstrap intervals and a figure.",
    )
    p.add_argument("--models", nargs="+", default=None, help="zoo architectures (default: all of `pdcr-lab zoo list`)")
    p.add_argument("--datasets", nargs="+", default=["lesions", "vessels"], help="embedded datasets")
    p.add_argument("--images", type=int, default=d.images, help="first N test images of each dataset")
    p.add_argument("--roi-size", type=int, default=d.roi_size, help="RoI side in pixels (on the ground-truth boundary)")
    p.add_argument("--coarse", type=int, default=d.coarse, help="S, screening draws")
    p.add_argument("--fine", type=int, default=d.fine, help="N, estimation draws (paper: 50; reduced for CPU cost)")
    p.add_argument("--tau", type=float, default=d.tau)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the bank draws and of the bootstrap")
    p.add_argument("--bootstrap", type=int, default=d.n_boot, help="bootstrap resamples")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the model's, cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op CPU threads (default 1: on a shared machine more threads spin-wait "
                   "for each other and run several times slower)")
    p.add_argument("--out", type=Path, default=Path("data/results/strategies.nc"), help="maps, descriptors and labels")
    p.add_argument("--table", type=Path, default=Path("docs/strategies_table.md"), help="Markdown table")
    p.add_argument("--figure", type=Path, default=Path("docs/strategies.png"), help="figure")
    p.add_argument("--resume", action="store_true",
                   help="reuse the maps already in --out (same settings) and explain only what is missing")
    p.add_argument("--relabel", action="store_true",
                   help="do not explain: relabel and summarise the maps already in --out")
    p.set_defaults(func=_run)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _command(args: argparse.Namespace) -> str:
    parts = ["pdcr-lab strategies"]
    if args.models:
        parts += ["--models", *args.models]
    parts += ["--datasets", *args.datasets, "--images", str(args.images), "--roi-size", str(args.roi_size),
              "--coarse", str(args.coarse), "--fine", str(args.fine), "--seed", str(args.seed),
              "--bootstrap", str(args.bootstrap)]
    return " ".join(parts)


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..storage import load, save
    from ..viz._strategies import strategies_figure
    from ._report import ReportSettings, explain_zoo, format_table, label_maps, summarize

    settings = ReportSettings(images=args.images, roi_size=args.roi_size, coarse=args.coarse, fine=args.fine,
                              tau=args.tau, seed=args.seed, n_boot=args.bootstrap)
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: expected an integer >= 1")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    skipped: dict[tuple[str, str], str] = {}
    if args.relabel:
        if not args.out.exists():
            raise SystemExit(f"--relabel needs an earlier result at {args.out}; run without --relabel first")
        maps = load(args.out)
        print(f"relabelling {args.out}: models {list(map(str, maps.model.values))}")
    else:
        previous = load(args.out) if args.resume and args.out.exists() else None
        device = torch.device(args.device) if args.device else None

        def checkpoint(partial):
            # Save after every model, so an interrupted run can be resumed with --resume.
            save(label_maps(partial), args.out)

        print(f"explaining {settings.images} test images per dataset with PdCR "
              f"(S={settings.coarse}, N={settings.fine})")
        maps, skipped = explain_zoo(args.models, args.datasets, settings, device=device, previous=previous,
                                    on_model=checkpoint)
    result = label_maps(maps)
    save(result, args.out)
    summary = summarize(result, n_boot=settings.n_boot, seed=settings.seed, level=settings.level)
    seconds = time.perf_counter() - start
    # A resumed or relabelled run's own time says little; the table reports the explaining time per pair.
    fresh = not (args.relabel or args.resume)
    table = format_table(summary, result, command=_command(args), skipped=skipped, seconds=seconds if fresh else None)
    _atomic(args.table, lambda path: path.write_text(table))
    fig = strategies_figure(result, summary, title="PdCR perceptual strategies of the zoo")
    _atomic(args.figure, lambda path: fig.savefig(path, dpi=130, format=args.figure.suffix.lstrip(".") or "png"))
    print(table)
    print(f"done in {seconds / 60:.1f} min; wrote {args.out}, {args.table} and {args.figure}")
    return 0
