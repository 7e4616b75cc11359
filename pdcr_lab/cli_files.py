"""``pdcr-lab explain --image FILE`` / ``--images DIR``: PdCR maps of your own files with your own model.

The job of :mod:`pdcr_lab.cli`'s ``explain`` when it is given files instead of an embedded test
image: read the image (and its mask) with the loaders' normalisation, load the model from a SPEC
(:mod:`pdcr_lab.models`), take the natural bank from ``--bank`` or cut it from ``--bank-from DIR``
(never from the explained image), explain, and write ``<stem>_r<row>_c<col>.nc`` and ``.png``.
A folder is explained image by image; results already written with the same settings are kept (the
run resumes), and an image that cannot be explained is reported and skipped (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_file_options", "run_files", "UsageError"]


class UsageError(ValueError):
    """A bad command-line input; :func:`pdcr_lab.cli.main` prints it as one line and exits with 2."""


def add_file_options(p: argparse.ArgumentParser) -> None:
    """The options of ``explain`` for own files (the zoo options stay in :mod:`pdcr_lab.cli`).

    Parameters
    ----------
    p : argparse.ArgumentParser
        The ``explain`` parser.
    """
    from .outcomes import OUTCOMES
    from .zoo.cli import add_image_options

    g = p.add_argument_group("your own files (instead of an embedded test image)")
    g.add_argument("--image", type=Path, help="one image file (PNG/TIFF/JPEG, 8/16-bit, grey or RGB)")
    g.add_argument("--mask", type=Path, help="its ground-truth mask; without it, the ground-truth-free mode")
    g.add_argument("--images", type=Path, help="a folder of images to explain one by one (resumable)")
    g.add_argument("--masks", type=Path, help="the folder of their masks (same stems)")
    g.add_argument("--bank", type=Path, help="natural bank: a folder of block images (reference layout) or a saved PatchBank")
    g.add_argument("--bank-from", type=Path, metavar="DIR",
                   help="cut the natural bank from the images in DIR (reference recipe), never from the explained image")
    g.add_argument("--block", type=int, default=None, help="block side (default: the bank's, else 8)")
    g.add_argument("--outcome", default=None, choices=list(OUTCOMES),
                   help="RoI outcome (default: dice with a mask, soft_dice without: it can show harm)")
    g.add_argument("--class-index", type=int, default=None, help="explained class of a multi-channel output")
    g.add_argument("--activation", default="auto", choices=("auto", "none", "sigmoid", "softmax"),
                   help="how the model's output becomes a probability (default: auto)")
    g.add_argument("--crop", type=int, nargs=4, metavar=("ROW", "COL", "HEIGHT", "WIDTH"),
                   help="explain this window of the image (and mask) only: the model sees the crop, as it saw tiles")
    g.add_argument("--overwrite", action="store_true", help="recompute results that already exist")
    add_image_options(g, normalize_default=None)


def _fail(message: str) -> UsageError:
    return UsageError(message)


def _check_paths(args: argparse.Namespace) -> None:
    if args.image is not None and args.images is not None:
        raise _fail("give --image FILE or --images DIR, not both")
    if args.mask is not None and args.image is None:
        raise _fail("--mask goes with --image (use --masks with --images)")
    if args.masks is not None and args.images is None:
        raise _fail("--masks goes with --images (use --mask with --image)")
    if args.bank is not None and args.bank_from is not None:
        raise _fail("give --bank PATH or --bank-from DIR, not both")
    for flag, path, kind in [("--image", args.image, "file"), ("--mask", args.mask, "file"),
                             ("--images", args.images, "dir"), ("--masks", args.masks, "dir"),
                             ("--bank", args.bank, "any"), ("--bank-from", args.bank_from, "dir")]:
        if path is None:
            continue
        if not path.exists():
            raise _fail(f"{flag} {str(path)!r} does not exist")
        if kind == "file" and not path.is_file():
            raise _fail(f"{flag} {str(path)!r} is not a file")
        if kind == "dir" and not path.is_dir():
            raise _fail(f"{flag} {str(path)!r} is not a folder")


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path | None]]:
    from .datasets import list_files

    if args.image is not None:
        return [(args.image, args.mask)]
    images = list_files(args.images, None, "--images")
    if args.masks is None:
        return [(path, None) for path in images]
    masks = {p.stem: p for p in list_files(args.masks, None, "--masks")}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise _fail(f"--masks {str(args.masks)!r} has no mask for {len(missing)} image(s): {', '.join(missing[:5])}")
    return [(path, masks[path.stem]) for path in images]


def _data_options(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """How the files are read (normalisation, resizing): the command line's, else the checkpoint's training data's."""
    trained = info.get("data") or {}
    normalize = args.normalize or trained.get("normalize") or "dtype"
    if isinstance(normalize, list):
        normalize = tuple(normalize)
    percentiles = tuple(args.percentiles or trained.get("percentiles") or (1.0, 99.8))
    resample = args.resample or trained.get("resample") or "torch"
    return {"normalize": normalize, "percentiles": percentiles, "binarize": args.binarize, "size": args.size,
            "resample": resample}


def _bank(args: argparse.Namespace, image: Path, block: int | None, options: dict[str, Any], loaded: Any,
          explained: list[Path], cache: dict[tuple[str, ...], Any]) -> Any:
    from .banks import PatchBank
    from .datasets import bank_from_folder, load

    if args.bank is not None:
        return PatchBank.from_folder(args.bank) if args.bank.is_dir() else PatchBank.load(args.bank)
    if args.bank_from is not None:
        # A bank folder apart from the explained ones serves every image (cut once, all explained images
        # excluded); the explained folder itself gives each image a bank of the others.
        apart = args.images is not None and args.bank_from.resolve() != args.images.resolve()
        key = ("all",) if apart else (str(image),)
        if key not in cache:
            cache.clear()
            cache[key] = bank_from_folder(args.bank_from, block=block or 8, exclude=explained if apart else [image],
                                          size=options["size"], normalize=options["normalize"],
                                          percentiles=options["percentiles"], resample=options["resample"],
                                          seed=args.seed)
        return cache[key]
    if args.intervention != "natural":
        return None
    if loaded.kind == "zoo":
        return load(args.dataset).bank
    raise _fail("the natural intervention draws blocks from a bank of natural images: pass --bank PATH or "
                "--bank-from DIR (or --intervention zero, mean or blur)")


def _check_input(loaded: Any, adapter: Any, image: torch.Tensor, path: Path) -> torch.Tensor:
    """The model's output on the image, or a one-line error saying what the model takes."""
    from .models import expected_input

    c, h, w = image.shape
    try:
        with torch.no_grad():
            out = adapter.logits(image[None].to(next(iter(loaded.model.parameters()), image).dtype))
        adapter.check_output(out, (h, w))
    except Exception as exc:  # noqa: BLE001 - any failure of the model on this input is reported the same way
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(f"--model {loaded.spec!r} cannot take {path.name} ({c} channel{'s' * (c != 1)}, {h}x{w}): it "
                    f"expects {expected_input(loaded)} ({first}); see --size and --normalize") from None
    return out


def _roi(args: argparse.Namespace, target: torch.Tensor | None, adapter: Any, out: torch.Tensor,
         block: int, path: Path) -> tuple[int, int, int, int]:
    from .rois import boundary_roi

    if args.roi:
        return tuple(args.roi)  # type: ignore[return-value]
    reference = target if target is not None else adapter.binary(out)[0] > 0.5
    if not bool(reference.any()):
        what = "its mask" if target is not None else "the model's prediction"
        raise _fail(f"{path.name}: {what} has no foreground, so there is no boundary to put the RoI on; pass --roi")
    return boundary_roi(reference, size=args.roi_size, block=block)


def _cropped(pair: Any, crop: list[int] | None, path: Path) -> Any:
    """`pair` cut to the ``--crop`` window (checked against the image's size)."""
    if crop is None:
        return pair
    r, c, h, w = crop
    height, width = pair.image.shape[-2:]
    if min(r, c) < 0 or h < 1 or w < 1 or r + h > height or c + w > width:
        raise _fail(f"--crop {r} {c} {h} {w} does not fit in {path.name} ({height}x{width})")
    return replace(pair, image=pair.image[:, r : r + h, c : c + w].contiguous(),
                   mask=None if pair.mask is None else pair.mask[r : r + h, c : c + w].contiguous(),
                   info=dict(pair.info, crop=[r, c, h, w]))


def _changed_settings(path: Path, settings: dict[str, Any]) -> str:
    """Which of `settings` the result stored at `path` was computed with otherwise ("" if none)."""
    from .storage import load

    try:
        attrs = load(path).attrs
    except Exception as exc:  # noqa: BLE001 - a damaged result is recomputed, whatever the damage
        return f"unreadable contents ({type(exc).__name__})"
    stored = {key: attrs.get(key) for key in settings}
    differ = [f"{key}={stored[key]}" for key, value in settings.items()
              if str(stored[key]) != str(value) and not _same_number(stored[key], value)]
    return ", ".join(differ)


def _same_number(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _explain_one(args: argparse.Namespace, loaded: Any, image_path: Path, mask_path: Path | None,
                 explained: list[Path], cache: dict[tuple[str, ...], Any]) -> Path | None:
    from . import explain, save
    from .adapters import ModelAdapter
    from .datasets import read_pair
    from .viz import overlay_figure

    options = _data_options(args, loaded.info)
    pair = _cropped(read_pair(image_path, mask_path, **options), args.crop, image_path)
    adapter = ModelAdapter(loaded.model, activation=args.activation, class_index=args.class_index)
    out = _check_input(loaded, adapter, pair.image, image_path)
    bank = _bank(args, image_path, args.block, options, loaded, explained, cache)
    block = args.block or (bank.block if bank is not None else 8)
    roi = _roi(args, pair.mask, adapter, out, block, image_path)
    outcome = args.outcome or ("dice" if pair.mask is not None else "soft_dice")
    # the name says what differs between runs on one image, so a resumed run finds its own result
    crop = f"_crop{args.crop[0]}_{args.crop[1]}" if args.crop else ""
    mode = ("" if pair.mask is not None else "_nomask") + ("" if outcome == "dice" else f"_{outcome}")
    stem = f"{image_path.stem}{crop}_r{roi[0]}_c{roi[1]}{mode}"
    nc, png = args.out / f"{stem}.nc", args.out / f"{stem}.png"
    settings = {"model": loaded.spec, "outcome": outcome, "intervention": args.intervention, "block": block,
                "coarse": args.coarse, "fine": args.fine, "tau": args.tau, "seed": args.seed,
                "input_resample": options["resample"]}
    if nc.exists() and png.exists() and not args.overwrite:
        changed = _changed_settings(nc, settings)
        if not changed:
            print(f"{image_path.name}: kept {nc} (already computed with these settings; --overwrite recomputes)")
            return None
        print(f"{image_path.name}: recomputing {nc.name}: it was computed with {changed}")
    start = time.perf_counter()
    ds = explain(loaded.model, pair.image, roi=roi, target=pair.mask, bank=bank, block=block, outcome=outcome,
                 intervention=args.intervention, coarse=args.coarse, fine=args.fine, tau=args.tau, seed=args.seed,
                 activation=args.activation, class_index=args.class_index,
                 device=torch.device(args.device) if args.device else None, progress=args.images is None)
    seconds = time.perf_counter() - start
    ds = ds.assign_attrs(model=loaded.spec, model_kind=loaded.kind, image_id=image_path.stem,
                         image_file=str(image_path), mask_file=str(mask_path) if mask_path else "",
                         **{f"input_{k}": str(v) for k, v in pair.info.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    save(ds, nc)
    fig = overlay_figure(ds, pair.image, title=f"{Path(loaded.spec).name} on {image_path.name}  "
                         f"M0 = {float(ds.m0):.2f} ({outcome})")
    fig.savefig(png, dpi=150)
    _report(ds, seconds, nc, png)
    return nc


def _report(ds: Any, seconds: float, nc: Path, png: Path) -> None:
    from .statistics import statistics

    st = statistics(ds)
    print(f"{ds.attrs['image_id']}: M0 = {float(ds.m0):.2f} {ds.m0.attrs.get('units', '')}, {int(ds.forwards)} "
          f"forward passes in {seconds:.1f} s; support {int(st.neg)}, harm {int(st.pos)}, irrelevant {int(st.zero)} "
          f"blocks ({int(st.neg_ci)} and {int(st.pos_ci)} with an interval that excludes 0); wrote {nc} and {png.name}")


def run_files(args: argparse.Namespace) -> int:
    """Explain ``--image`` or every image of ``--images`` (the ``explain`` command's own-file mode).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``explain`` options.
    """
    from .models import load_model
    from .outcomes import get_outcome

    _check_paths(args)
    loaded = load_model(args.model, dataset=args.dataset)
    pairs = _pairs(args)
    outcome = get_outcome(args.outcome or ("dice" if pairs[0][1] is not None else "soft_dice"))
    question = getattr(outcome, "question", None)
    print(f"model {args.model} ({loaded.kind}); outcome {outcome.name}" + (f": {question}" if question else ""))
    explained, banks = [image for image, _ in pairs], {}
    written, failed = [], []
    for image, mask in pairs:
        try:
            if (path := _explain_one(args, loaded, image, mask, explained, banks)) is not None:
                written.append(path)
        except (ValueError, OSError) as exc:
            if args.images is None:
                raise  # one file: the error is the answer
            # one bad file of a folder must not stop the others; it is reported and the status says so
            failed.append(image.name)
            print(f"{image.name}: skipped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                  file=sys.stderr, flush=True)
    kept = len(pairs) - len(written) - len(failed)
    print(f"{len(written)} map(s) written, {kept} kept, {len(failed)} skipped, in {args.out}")
    return 1 if failed else 0
