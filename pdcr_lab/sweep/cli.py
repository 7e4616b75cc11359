"""``pdcr-lab sweep``: a thin layer over :func:`pdcr_lab.sweep.run_sweep`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_subparser"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be >= 1, got {value}")
    return value


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pdcr-lab sweep`` to the command line.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The sub-commands of ``pdcr-lab``.
    """
    p = subparsers.add_parser(
        "sweep",
        help="explain models x datasets x images x RoIs x methods into one Zarr store (dask, resumable)",
        description=(
            "Run a sweep described by CONFIG (YAML or TOML) into the Zarr store PATH. Without --scheduler a "
            "local dask cluster is started; with it, the workers of a running scheduler are used. Rerunning "
            "the same command resumes an interrupted sweep."
        ),
    )
    p.add_argument("config", type=Path, nargs="?", help="sweep config (.yaml, .yml or .toml)")
    p.add_argument("--store", type=Path, metavar="PATH", help="output Zarr store (ends with .zarr); required with CONFIG")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler: its address (tcp://10.0.0.1:8786) or scheduler file")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="local cluster size (default: one per GPU, else one per core); with --scheduler: wait for N workers")
    p.add_argument("--dashboard", metavar="[ADDRESS:]PORT",
                   help="local cluster: serve the dask dashboard there (a bare PORT is on 127.0.0.1; default: no "
                        "dashboard). Every other service of the local cluster listens on 127.0.0.1 only")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh: replace an existing sweep store at PATH (only a sweep store; the new one is "
                        "built beside it and renamed into place once the config has been validated)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config (imports factories and explainers, calls none of them) and the store "
                        "location; compute and write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--schema", action="store_true",
                   help="print the JSON schema of sweep configs (for editors: pdcr-lab sweep --schema > sweep.schema.json) and exit")
    p.set_defaults(func=_run, usage=p.format_usage)


def _run(args: argparse.Namespace) -> int:
    from . import ConfigError, check_sweep, config_schema, run_sweep

    if args.schema:
        print(json.dumps(config_schema(), indent=2))
        return 0
    if args.config is None or args.store is None:
        print(f"{args.usage()}pdcr-lab sweep: error: give CONFIG and --store PATH (or --schema)", file=sys.stderr)
        return 2
    try:
        if args.dashboard is not None and args.scheduler:
            raise ConfigError("--dashboard serves the dashboard of a local cluster; a running scheduler serves its own")
        if args.dry_run:
            print(check_sweep(args.config, args.store, local=not args.scheduler, overwrite=args.overwrite))
            return 0
        summary = run_sweep(args.config, args.store, scheduler=args.scheduler, workers=args.workers,
                            progress=not args.no_progress, dashboard=args.dashboard, overwrite=args.overwrite)
    except ConfigError as exc:
        print(f"pdcr-lab sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished tasks are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    print(summary)
    return 0 if summary.complete else 1
