"""The ``pdcr-lab`` command: thin sub-commands over the package API.

``pdcr-lab explain --demo`` is the main job on an embedded default. Other sub-commands (``zoo``,
``components``, ``strategies``, ``benchmark``, ``sweep``, ``serve``) are contributed by the modules
that own them through an ``add_subparser(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

#: Modules contributing sub-commands, each with ``add_subparser(subparsers)``.
PROVIDERS: tuple[str, ...] = (
    "pdcr_lab.zoo._cli",
    "pdcr_lab.components._cli",
    "pdcr_lab._components_cli",
    "pdcr_lab.strategies._cli",
    "pdcr_lab.faithfulness._cli",
    "pdcr_lab.sweep._cli",
    "pdcr_lab.dashboard._cli",
)

DEMO = {"model": "unet", "dataset": "lesions", "index": 0}


def _add_explain(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="PdCR map of one image of an embedded dataset with a zoo model",
        description="Explain one RoI of one test image with PdCR; writes the result (.nc) and a figure (.png).",
    )
    p.add_argument("--demo", action="store_true", help=f"the embedded default: {DEMO}")
    p.add_argument("--model", default=DEMO["model"], help="zoo architecture (see `pdcr-lab zoo list`)")
    p.add_argument("--dataset", default=DEMO["dataset"], help="embedded dataset: lesions, vessels, ...")
    p.add_argument("--index", type=int, default=DEMO["index"], help="index of the test image")
    p.add_argument("--roi", type=int, nargs=4, metavar=("ROW", "COL", "HEIGHT", "WIDTH"), help="default: on the target's boundary")
    p.add_argument("--roi-size", type=int, default=16, help="side of the automatic RoI")
    p.add_argument("--intervention", default="natural", choices=["natural", "zero", "mean", "blur"])
    p.add_argument("--coarse", type=int, default=3)
    p.add_argument("--fine", type=int, default=50)
    p.add_argument("--tau", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    p.set_defaults(func=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    import torch

    from . import datasets, explain, save, statistics, zoo
    from .rois import boundary_roi
    from .viz import overlay_figure

    if args.demo:
        args.model, args.dataset, args.index = DEMO["model"], DEMO["dataset"], DEMO["index"]
    data = datasets.load(args.dataset)
    images, masks, ids = data.images("test"), data.masks("test"), data.ids("test")
    if not 0 <= args.index < len(images):
        raise SystemExit(f"--index {args.index} is out of range: the test split has {len(images)} images")
    image, target = images[args.index], masks[args.index]
    model, meta = zoo.load(args.model, args.dataset)
    block = data.bank.block
    roi = tuple(args.roi) if args.roi else boundary_roi(target, size=args.roi_size, block=block)
    print(f"model {args.model} ({meta.get('params', '?')} parameters) on {args.dataset} test image {ids[args.index]}, RoI {roi}")
    start = time.perf_counter()
    ds = explain(
        model,
        image,
        roi=roi,
        target=target,
        bank=data.bank,
        intervention=args.intervention,
        block=block,
        coarse=args.coarse,
        fine=args.fine,
        tau=args.tau,
        seed=args.seed,
        device=torch.device(args.device) if args.device else None,
        progress=True,
    )
    seconds = time.perf_counter() - start
    ds = ds.assign_attrs(model=args.model, dataset=args.dataset, image_id=ids[args.index])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.model}_{args.dataset}_{ids[args.index]}_r{roi[0]}_c{roi[1]}"
    path = save(ds, args.out / f"{stem}.nc")
    fig = overlay_figure(ds, image, title=f"{args.model} on {args.dataset} {ids[args.index]}  M0 = {float(ds.m0):.2f}")
    fig.savefig(args.out / f"{stem}.png", dpi=150)
    st = statistics(ds)
    print(f"done in {seconds:.1f} s, {int(ds.forwards)} forward passes; M0 = {float(ds.m0):.2f} {ds.attrs['units']}")
    print(f"blocks: support (ATE<0) {int(st.neg)}, harm (ATE>0) {int(st.pos)}, irrelevant {int(st.zero)}")
    print(f"ATE range {float(ds.ate.min()):.3f} .. {float(ds.ate.max()):.3f}")
    print(f"wrote {path} and {args.out / (stem + '.png')}")
    return 0


def _provider_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a plain module, not a package
        return False


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(prog="pdcr-lab", description="PdCR causal explanations of segmentation models.")
    parser.add_argument("--version", action="version", version=f"pdcr_lab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_explain(subparsers)
    for name in PROVIDERS:
        if _provider_exists(name):
            importlib.import_module(name).add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
