"""``pdcr-lab components``: the component report (:mod:`pdcr_lab.components._report`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._report import REPORT

__all__ = ["add_subparser"]

DEFAULT_OUT = Path("data/results/components.nc")


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``components`` sub-command to the ``pdcr-lab`` parser."""
    p = subparsers.add_parser(
        "components",
        help="PdCR effects of the main stages of every zoo model on the embedded datasets",
        description="Component report: for every zoo architecture on lesions and vessels, the ATE of each main "
        "stage (its output replaced by the stage's output on donor train images) on fixed test images and "
        "boundary RoIs. Writes one stacked effects dataset and prints which stage carries most of the effect.",
    )
    p.add_argument("--models", nargs="+", default=None, help="zoo architectures (default: all of `pdcr-lab zoo list`)")
    p.add_argument("--datasets", nargs="+", default=["lesions", "vessels"])
    p.add_argument("--images", type=int, default=REPORT.images, help="test images per dataset")
    p.add_argument("--roi-size", type=int, default=REPORT.roi_size)
    p.add_argument("--donors", type=int, default=REPORT.donors, help="train images whose activations are the donors")
    p.add_argument("--coarse", type=int, default=REPORT.coarse)
    p.add_argument("--fine", type=int, default=REPORT.fine)
    p.add_argument("--seed", type=int, default=REPORT.seed)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the models are small and the machine is shared; 0: torch's choice)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"result file (default: {DEFAULT_OUT})")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..storage import save
    from ._report import format_summary, run_report, summarize

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dataclasses.replace(REPORT, images=args.images, roi_size=args.roi_size, donors=args.donors,
                                   coarse=args.coarse, fine=args.fine, seed=args.seed)
    start = time.perf_counter()
    report, missing = run_report(args.models, args.datasets, settings=settings, device=args.device)
    path = save(report, args.out)
    print()
    print(format_summary(summarize(report)))
    print(f"\n{time.perf_counter() - start:.0f} s; wrote {path}")
    if missing:
        print(f"missing checkpoints (skipped): {', '.join(missing)}")
    return 0
