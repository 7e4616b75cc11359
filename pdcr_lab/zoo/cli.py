"""``pdcr-lab zoo``: list, train and benchmark the model zoo.

:func:`add_subparser` contributes the ``zoo`` command to ``pdcr-lab``; ``python -m pdcr_lab.zoo.cli`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ._registry import ALL_DATASETS, DATASETS_BY_DIMS, RECIPES
from ._store import USER_ZOO, benchmark, list_models, output_dir, read_manifest, train, zoo_dir

NORMALIZE = ("dtype", "range", "percentile")


def add_image_options(p: Any, *, normalize_default: str | None = "dtype") -> None:
    """Options that say how image and mask files are read (shared by ``zoo train`` and ``explain``).

    Parameters
    ----------
    p : argparse.ArgumentParser or argument group
        Where the options go.
    normalize_default : str, optional
        Default of ``--normalize`` (None: decided by the caller, e.g. from a checkpoint).
    """
    p.add_argument("--normalize", choices=NORMALIZE, default=normalize_default,
                   help="pixel values -> [0, 1]: by the dtype's range (8-bit / 255, 16-bit / 65535), per-image min-max, "
                        "or per-image percentiles (see --percentiles)" + (" (default: dtype)" if normalize_default else
                                                                           " (default: the checkpoint's, else dtype)"))
    p.add_argument("--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="percentiles of --normalize percentile (default 1 99.8)")
    p.add_argument("--binarize", action="store_true", help="masks are label images: every non-zero value is foreground")
    p.add_argument("--size", type=int, default=None, help="resize every image (or tile) to SIZE x SIZE")
    p.add_argument("--resample", choices=("torch", "pil"), default=normalize_default and "torch",
                   help="how --size resizes: torch (bilinear, no antialiasing) or pil (Pillow bilinear with its "
                        "antialiasing, as the paper's HAM10000/FIVES inputs)" + (" (default: torch)" if normalize_default
                                                                                else " (default: the checkpoint's, else torch)"))


def _data_name(images: Path) -> str:
    """A checkpoint folder name for a data folder: ``nuclei/images`` -> ``nuclei``."""
    folder = images.resolve()
    name = folder.parent.name if folder.name.lower() in ("images", "image", "imgs", "img") else folder.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.-") or "folder"


def folder_data(args: argparse.Namespace) -> Any:
    """The :class:`~pdcr_lab.datasets.SegmentationData` of ``--images``/``--masks`` split for training.

    Parameters
    ----------
    args : argparse.Namespace
        ``zoo train`` options (images, masks, size, tile, stride, normalize, percentiles,
        binarize, val_fraction, test_fraction, seed, data_name).
    """
    from pdcr_lab.datasets import FolderDataset

    if args.masks is None:
        raise ValueError("--images needs --masks DIR (the training masks, same file stems)")
    for flag, value in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{flag} {value} must lie in [0, 1)")
    if args.val_fraction <= 0 or args.val_fraction + args.test_fraction >= 1:
        raise ValueError(f"--val-fraction {args.val_fraction} and --test-fraction {args.test_fraction} must leave "
                         "images for training and give a validation split (early stopping needs one)")
    fractions = (1 - args.val_fraction - args.test_fraction, args.val_fraction, args.test_fraction)
    data = FolderDataset(args.images, args.masks, size=args.size, tile=args.tile, stride=args.stride,
                         normalize=args.normalize, percentiles=tuple(args.percentiles or (1.0, 99.8)),
                         binarize=args.binarize, resample=args.resample, split_seed=args.seed, split_fractions=fractions,
                         name=args.data_name or _data_name(args.images))
    for split in ("train", "val"):
        if len(data.ids(split)) == 0:
            sources = len({m.get("source", i) for part in data.splits for i, m in zip(data.ids(part), data.metadata(part))})
            raise ValueError(f"--images {str(args.images)!r}: the {split} split is empty; splits are drawn over "
                             f"source images (tiles of one image stay together) and the folder has {sources}: "
                             "add images (at least 2: one to train, one to validate)")
    h, w = data.images("train").shape[-2:]
    if h % 32 or w % 32:
        raise ValueError(f"--images {str(args.images)!r} are {h}x{w}; zoo models need sides divisible by 32: "
                         "pass --size (e.g. --size 96) or --tile")
    return data


def markdown_table(models: dict[str, Any], spatial_dims: int = 2) -> str:
    """README table: one row per architecture, test Dice / IoU per dataset, parameters, images/s.

    Parameters
    ----------
    models : dict
        The manifest's ``models`` entries (``read_manifest()["models"]``).
    spatial_dims : {2, 3}
        The image models on the 2-D datasets, or the volume models on the 3-D ones (their
        throughput counts volumes).
    """
    datasets, unit = DATASETS_BY_DIMS[spatial_dims], "images/s" if spatial_dims == 2 else "volumes/s"
    head = ["model", "family", "paper"] + [f"{d} Dice / IoU" for d in datasets] + ["params", unit]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in list_models(spatial_dims):
        r = RECIPES[name]
        entries = [models.get(f"{d}/{name}") for d in datasets]
        scores = [f"{e['test_dice']:.3f} / {e['test_iou']:.3f}" if e else "-" for e in entries]
        known = [e for e in entries if e]
        params = f"{known[0]['params'] / 1000:.0f}k" if known else "-"
        speed = f"{min(e['images_per_s'] for e in known):.0f}" if known else "-"
        lines.append("| " + " | ".join([f"`{name}`", r.family, r.paper, *scores, params, speed]) + " |")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    models = read_manifest(args.root)["models"]
    if args.markdown:  # the 2-D table as before, then the volume models' own table
        print("\n\n".join(markdown_table(models, dims) for dims in DATASETS_BY_DIMS))
        return 0
    for dims, datasets in DATASETS_BY_DIMS.items():
        print(f"{'name':15s} {'family':12s} {'paper':40s} " + " ".join(f"{d:>14s}" for d in datasets))
        for name in list_models(dims):
            r = RECIPES[name]
            cells = []
            for d in datasets:
                e = models.get(f"{d}/{name}")
                cells.append(f"{'Dice ' + format(e['test_dice'], '.3f') if e else 'untrained':>14s}")
            print(f"{name:15s} {r.family:12s} {r.paper:40s} " + " ".join(cells))
    return 0


def _summary(meta: dict[str, Any]) -> str:
    test = (f"test Dice {meta['test_dice']:.4f}, IoU {meta['test_iou']:.4f}" if meta["test_dice"] is not None
            else "no test split")
    return (f"{meta['dataset']}/{meta['name']}: {test}, "
            f"val Dice {meta['val_dice']:.4f}, epochs {meta['epochs_run']} (best {meta['best_epoch'] + 1}), "
            f"{meta['train_seconds']:.0f} s")


def _train(args: argparse.Namespace) -> int:
    output_dir(args.out, into_shipped=args.into_shipped_zoo)  # refuse the shipped zoo before reading any data
    data = folder_data(args) if args.images is not None else None
    dataset = data.name if data is not None else args.dataset
    meta = train(args.name, dataset, seed=args.seed, epochs=args.epochs, out_dir=args.out, data=data,
                 progress=not args.quiet, threads=args.threads, into_shipped=args.into_shipped_zoo)
    print(_summary(meta), flush=True)
    print(f"wrote {meta['file']}; explain with: pdcr-lab explain --model {meta['file']} --image FILE "
          "[--mask FILE] --bank-from DIR", flush=True)
    return 0


def _train_all(args: argparse.Namespace) -> int:
    done = read_manifest(args.out)["models"]
    names = args.names or list(RECIPES)
    for dataset in args.datasets or ALL_DATASETS:
        for name in names:
            if dataset not in RECIPES[name].datasets:  # a 2-D model is not trained on volumes, nor back
                continue
            if f"{dataset}/{name}" in done and not args.force:
                print(f"{dataset}/{name}: already in the manifest (use --force to retrain)", flush=True)
                continue
            meta = train(name, dataset, seed=args.seed, out_dir=args.out, progress=not args.quiet,
                         threads=args.threads, into_shipped=args.into_shipped_zoo)
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
        p.add_argument("--out", type=Path, default=USER_ZOO,
                       help=f"checkpoint folder (default: {USER_ZOO}; the shipped zoo only with --into-shipped-zoo)")
        p.add_argument("--into-shipped-zoo", action="store_true",
                       help="allow --out to be the shipped zoo (data/zoo), overwriting its checkpoints")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads during training (default 1)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("train", help="train one architecture on an embedded dataset or on your own folders",
                       description="Train one architecture from its recipe: on an embedded dataset (--dataset) or on "
                       "your images and masks (--images DIR --masks DIR; any channel count, 8/16-bit PNG or TIFF).")
    p.add_argument("name", choices=list(RECIPES))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=ALL_DATASETS,
                        help="an embedded dataset (brain3d and vessels3d for the 3-D models)")
    source.add_argument("--images", type=Path, help="your folder of images")
    p.add_argument("--masks", type=Path, help="the folder of their masks (same file stems)")
    p.add_argument("--data-name", default=None, help="name of your data in the zoo folder (default: from the folder)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the recipe's)")
    p.add_argument("--tile", type=int, default=None, help="cut large images into TILE x TILE tiles")
    p.add_argument("--stride", type=int, default=None, help="step between tiles (default: TILE)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of the images for validation (default 0.15)")
    p.add_argument("--test-fraction", type=float, default=0.15, help="share of the images for testing (default 0.15)")
    add_image_options(p)
    training_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("train-all", help="train every architecture on every dataset of its kind, 2-D or 3-D "
                                         "(skips trained ones)")
    p.add_argument("--names", nargs="+", choices=list(RECIPES), default=None)
    p.add_argument("--datasets", nargs="+", choices=ALL_DATASETS, default=None)
    p.add_argument("--force", action="store_true", help="retrain pairs already in the manifest")
    training_options(p)
    p.set_defaults(func=_train_all)

    p = sub.add_parser("benchmark", help="re-measure forward throughput (images/s) into the manifest")
    p.add_argument("--names", nargs="+", choices=list(RECIPES), default=None)
    p.add_argument("--datasets", nargs="+", choices=ALL_DATASETS, default=None)
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
