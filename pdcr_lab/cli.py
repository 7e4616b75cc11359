"""The ``pdcr-lab`` command: thin sub-commands over the package API.

``pdcr-lab explain --demo`` is the main job on an embedded default. Other sub-commands (``zoo``,
``components``, ``strategies``, ``benchmark``, ``sweep``, ``serve``) are contributed by the modules
that own them through an ``add_subparser(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

#: Modules contributing sub-commands, each with ``add_subparser(subparsers)``.
PROVIDERS: tuple[str, ...] = (
    "pdcr_lab.zoo.cli",
    "pdcr_lab.studies.cli",
    "pdcr_lab.sweep.cli",
    "pdcr_lab.dashboard.cli",
)

DEMO = {"model": "unet", "dataset": "lesions", "index": 0}
#: Set to any value to see the traceback of an input error instead of its one-line message.
TRACEBACK_ENV = "PDCR_LAB_TRACEBACK"
#: Errors a bad input raises (a path, a SPEC, a file, an option value): printed as one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError, TypeError)


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else type(exc).__name__
    return head + (f" (and {len(lines) - 1} more line(s); set {TRACEBACK_ENV}=1 for details)" if len(lines) > 1 else "")


def _add_explain(subparsers: argparse._SubParsersAction) -> None:
    from .cli_files import add_file_options
    from .defaults import PAPER, WORKING, Intervention, choices
    from .explainers import get_explainer, list_explainers

    methods = [name for name in list_explainers() if get_explainer(name).on_grid]
    p = subparsers.add_parser(
        "explain",
        help="PdCR map of an embedded test image with a zoo model, or of your own files with your own model",
        description="Explain one RoI of an image with PdCR (or another registered explainer); writes the result "
        "(.nc) and a figure (.png). Without --image/--images: a test image of an embedded dataset and a zoo model.",
    )
    p.add_argument("--demo", action="store_true", help=f"the embedded default: {DEMO}")
    p.add_argument("--model", default=DEMO["model"], metavar="SPEC",
                   help="a zoo architecture (see `pdcr-lab zoo list`), a checkpoint (.pt) of `pdcr-lab zoo train`, "
                        "a torch.export program (.pt2) or module:function returning an nn.Module")
    p.add_argument("--dataset", default=DEMO["dataset"], help="embedded dataset: lesions, vessels, ...")
    p.add_argument("--index", type=int, default=DEMO["index"], help="index of the test image")
    p.add_argument("--method", default="pdcr", choices=methods,
                   help="explainer of pdcr_lab.explainers (default: pdcr); the PdCR options below apply to pdcr and zero")
    p.add_argument("--roi", type=int, nargs=4, metavar=("ROW", "COL", "HEIGHT", "WIDTH"), help="default: on the target's boundary")
    p.add_argument("--roi-size", type=int, default=WORKING.roi_size, help="side of the automatic RoI")
    p.add_argument("--intervention", default="natural", choices=choices(Intervention))
    p.add_argument("--coarse", type=int, default=PAPER.coarse)
    p.add_argument("--fine", type=int, default=PAPER.fine)
    p.add_argument("--tau", type=float, default=PAPER.tau)
    p.add_argument("--seed", type=int, default=WORKING.seed)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    add_file_options(p)
    p.set_defaults(func=_run_explain)


def _method_options(args: argparse.Namespace, spec: Any, bank: Any) -> dict[str, Any]:
    """The CLI's options that the chosen explainer takes (PdCR's estimator options for pdcr and zero)."""
    options: dict[str, Any] = {"bank": bank, "intervention": args.intervention, "coarse": args.coarse,
                               "fine": args.fine, "tau": args.tau, "progress": True}
    named = spec.parameters or set()
    return {k: v for k, v in options.items() if k in named and k not in spec.defaults}


def _run_explain(args: argparse.Namespace) -> int:
    import torch

    from . import datasets, save, statistics, zoo
    from .cli_files import UsageError, run_files
    from .explainers import get_explainer
    from .rois import boundary_roi
    from .viz import overlay_figure

    if args.image is not None or args.images is not None:
        if args.demo:
            raise UsageError("--demo explains an embedded image; it does not take --image or --images")
        if args.method != "pdcr":
            raise UsageError("--image/--images explain with PdCR (--method pdcr) only")
        return run_files(args)
    if args.demo:
        args.model, args.dataset, args.index = DEMO["model"], DEMO["dataset"], DEMO["index"]
    if args.model not in zoo.list():
        raise UsageError(f"--model {args.model!r} is not a zoo architecture; a checkpoint, .pt2 program or "
                         "module:function explains your own files: add --image FILE or --images DIR")
    data = datasets.load(args.dataset)
    images, masks, ids = data.images("test"), data.masks("test"), data.ids("test")
    if not 0 <= args.index < len(images):
        raise UsageError(f"--index {args.index} is out of range: the test split has {len(images)} images")
    image, target = images[args.index], masks[args.index]
    model, meta = zoo.load(args.model, args.dataset)
    block = data.bank.block
    roi = tuple(args.roi) if args.roi else boundary_roi(target, size=args.roi_size, block=block)
    spec = get_explainer(args.method)
    print(f"{args.method}: model {args.model} ({meta.get('params', '?')} parameters) on {args.dataset} "
          f"test image {ids[args.index]}, RoI {roi}")
    start = time.perf_counter()
    ds = spec.explain(model, image, roi=roi, target=target, block=block, seed=args.seed,
                      device=torch.device(args.device) if args.device else None,
                      **_method_options(args, spec, data.bank))
    seconds = time.perf_counter() - start
    ds = ds.assign_attrs(model=args.model, dataset=args.dataset, image_id=ids[args.index])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.model}_{args.dataset}_{ids[args.index]}_r{roi[0]}_c{roi[1]}"
    if args.method != "pdcr":
        stem += f"_{args.method}"
    path = save(ds, args.out / f"{stem}.nc")
    fig = overlay_figure(ds, image, title=f"{args.model} on {args.dataset} {ids[args.index]}  M0 = {float(ds.m0):.2f}")
    fig.savefig(args.out / f"{stem}.png", dpi=150)
    print(f"done in {seconds:.1f} s, {int(ds.forwards)} forward passes; "
          f"M0 = {float(ds.m0):.2f} {ds.attrs.get('outcome_units', ds.attrs['units'])}")
    if int(ds.attrs["support_sign"]) == -1:  # effects in outcome units: the reference's statistics
        st = statistics(ds)
        print(f"blocks: support (ATE<0) {int(st.neg)}, harm (ATE>0) {int(st.pos)}, irrelevant {int(st.zero)}; "
              f"with a confidence interval that excludes 0: support {int(st.neg_ci)}, harm {int(st.pos_ci)}")
    print(f"map range {float(ds.ate.min()):.3f} .. {float(ds.ate.max()):.3f} {ds.attrs['units']} "
          f"({'negative' if int(ds.attrs['support_sign']) == -1 else 'positive'} = supports the RoI)")
    print(f"wrote {path} and {args.out / (stem + '.png')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``pdcr-lab`` argument parser with every provider's sub-commands."""
    from .version import __version__

    parser = argparse.ArgumentParser(prog="pdcr-lab", description="PdCR causal explanations of segmentation models.")
    parser.add_argument("--version", action="version", version=f"pdcr_lab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_explain(subparsers)
    for name in PROVIDERS:
        importlib.import_module(name).add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pdcr-lab`` command; returns its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    import matplotlib
    from tqdm.auto import tqdm

    matplotlib.use("Agg")  # figures go to files (and the dashboard's downloads), never to a window
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    command = " ".join(filter(None, [args.command, getattr(args, "zoo_command", None)]))
    try:
        with warnings.catch_warnings():
            # a warning of the package is a message to the user, not a source line of the console script
            # (tqdm.write keeps it off the line of a running progress bar)
            warnings.showwarning = lambda message, category, *_: tqdm.write(
                f"pdcr-lab {command}: {category.__name__}: {message}", file=sys.stderr)
            return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        parser.exit(2, f"pdcr-lab {command}: error: {_one_line(exc)}\n")


if __name__ == "__main__":
    sys.exit(main())
