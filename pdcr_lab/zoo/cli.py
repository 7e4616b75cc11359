"""``pdcr-lab zoo``: list, train and benchmark the model zoo.

:func:`add_subparser` contributes the ``zoo`` command to ``pdcr-lab``; ``python -m pdcr_lab.zoo.cli`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._registry import DATASETS, RECIPES
from ._store import benchmark, read_manifest, train, zoo_dir


def markdown_table(models: dict[str, Any]) -> str:
    """README table: one row per architecture, test Dice / IoU per dataset, parameters, images/s.

    Parameters
    ----------
    models : dict
        The manifest's ``models`` entries (``read_manifest()["models"]``).
    """
    head = ["model", "family", "paper"] + [f"{d} Dice / IoU" for d in DATASETS] + ["params", "images/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in RECIPES.items():
        entries = [models.get(f"{d}/{name}") for d in DATASETS]
        scores = [f"{e['test_dice']:.3f} / {e['test_iou']:.3f}" if e else "-" for e in entries]
        known = [e for e in entries if e]
        params = f"{known[0]['params'] / 1000:.0f}k" if known else "-"
        speed = f"{min(e['images_per_s'] for e in known):.0f}" if known else "-"
        lines.append("| " + " | ".join([f"`{name}`", r.family, r.paper, *scores, params, speed]) + " |")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    models = read_manifest(args.root)["models"]
    if args.markdown:
        print(markdown_table(models))
        return 0
    print(f"{'name':15s} {'family':12s} {'paper':40s} " + " ".join(f"{d:>14s}" for d in DATASETS))
    for name, r in RECIPES.items():
        cells = []
        for d in DATASETS:
            e = models.get(f"{d}/{name}")
            cells.append(f"{'Dice ' + format(e['test_dice'], '.3f') if e else 'untrained':>14s}")
        print(f"{name:15s} {r.family:12s} {r.paper:40s} " + " ".join(cells))
    return 0


def _summary(meta: dict[str, Any]) -> str:
    return (f"{meta['dataset']}/{meta['name']}: test Dice {meta['test_dice']:.4f}, IoU {meta['test_iou']:.4f}, "
            f"val Dice {meta['val_dice']:.4f}, epochs {meta['epochs_run']} (best {meta['best_epoch'] + 1}), "
            f"{meta['train_seconds']:.0f} s")


def _train(args: argparse.Namespace) -> int:
    meta = train(args.name, args.dataset, seed=args.seed, epochs=args.epochs, out_dir=args.out,
                 progress=not args.quiet, threads=args.threads)
    print(_summary(meta), flush=True)
    return 0


def _train_all(args: argparse.Namespace) -> int:
    done = read_manifest(args.out)["models"]
    names = args.names or list(RECIPES)
    for dataset in args.datasets or DATASETS:
        for name in names:
            if f"{dataset}/{name}" in done and not args.force:
                print(f"{dataset}/{name}: already in the manifest (use --force to retrain)", flush=True)
                continue
            meta = train(name, dataset, seed=args.seed, out_dir=args.out, progress=not args.quiet,
                         threads=args.threads)
            print(_summary(meta), flush=True)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    result = benchmark(args.names, args.datasets, root=args.root, threads=args.threads, batch=args.batch)
    print(json.dumps(result, indent=1))
    return 0


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``zoo`` command (``list``, ``train``, ``train-all``, ``benchmark``) to ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The sub-command collection of the ``pdcr-lab`` parser.
    """
    zoo = subparsers.add_parser("zoo", help="list, train and benchmark the model zoo",
                                description="The zoo of trained segmentation models.")
    sub = zoo.add_subparsers(dest="zoo_command", required=True)

    p = sub.add_parser("list", help="architectures and their test Dice per dataset")
    p.add_argument("--markdown", action="store_true", help="print the README table")
    p.add_argument("--root", default=None, help=f"checkpoint folder (default: {zoo_dir()})")
    p.set_defaults(func=_list)

    def training_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default 0)")
        p.add_argument("--out", default=None, help="checkpoint folder (default: the zoo folder)")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads during training (default 1)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("train", help="train one architecture on one dataset from its recipe")
    p.add_argument("name", choices=list(RECIPES))
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the recipe's)")
    training_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-all", help="train every architecture on every dataset (skips trained ones)")
    p.add_argument("--names", nargs="+", choices=list(RECIPES), default=None)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    p.add_argument("--force", action="store_true", help="retrain pairs already in the manifest")
    training_options(p)
    p.set_defaults(func=_train_all)

    p = sub.add_parser("benchmark", help="re-measure forward throughput (images/s) into the manifest")
    p.add_argument("--names", nargs="+", choices=list(RECIPES), default=None)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--root", default=None, help="checkpoint folder")
    p.set_defaults(func=_benchmark)
    return zoo


def main(argv: list[str] | None = None) -> int:
    """Run ``pdcr-lab zoo ...`` on its own (``python -m pdcr_lab.zoo.cli zoo list``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="pdcr-lab")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
