"""(p) Paper scale: a 256 x 256 map, RoI 32, block 8 (1,008 candidate blocks), S = 3, N = 50.

The model is the zoo's trained BatchNorm U-Net (``unet_bn``, trained at 96 px; it is fully
convolutional and runs unchanged on 256 px), eligible for exact incremental inference. The images
are the ``lesions`` generator's test images drawn at 256 px (not resized), with their exact masks as
targets and a 32 x 32 RoI on the lesion border; the natural bank is cut at block 8 from the 256-px
train split (:func:`_common.lesions_at`).

Contenders, each with the engine's caches cleared first (cold: batch ladder timed, model traced,
paths timed), paper and adaptive interleaved over ``--repeats``:

* paper mode, defaults (``incremental="auto"``): target < 60 s on a CPU (< 2 s on a GPU);
* adaptive mode at equal standard error, as in ``bench_adaptive.py``: ``target_se`` = paper mode's
  largest per-block standard error, tau-band stop off, at most 400 draws (target < 15 s);
* paper mode with ``incremental="off"`` (the batch policy alone), once per image;
* the reference loop (:func:`pdcr_lab.testing.reference_explain`), once per image: it is slow here.

Paper mode's map must equal the loop's (largest absolute difference printed); the speed-up over the
loop has target >= 5x on a CPU (>= 10x on a GPU). The incremental plan's ``flops_ratio`` (conv MACs
per perturbed image, incremental / full) and the time the same forwards take at the model's peak
throughput, full and cone-only, are the limits printed next to it. At most ``MAX_IMAGES`` (2) of
``--images`` run: the loop and the off path take minutes per image on a CPU.

    python benchmarks/bench_paper_scale.py [--images 2 --repeats 2] [--size 256 --roi-size 32]
"""

from __future__ import annotations

import numpy as np
import torch

import _common as C

from pdcr_lab import explain
from pdcr_lab.incremental import plan as incremental_plan
from pdcr_lab.interventions import draw_table
from pdcr_lab.rois import boundary_roi
from pdcr_lab.testing import reference_explain

BLOCK, COARSE, FINE = 8, 3, 50
MODEL = "unet_bn"
#: Images at most: the reference loop and the off path take minutes per image on a CPU.
MAX_IMAGES = 2


def run(args) -> dict:
    device = C.setup(args)
    size = getattr(args, "size", None) or (96 if args.quick else 256)
    side = getattr(args, "roi_size", None) or (16 if size < 192 else 32)
    model, label = C.load_model(MODEL, "lesions")
    model = model.to(device).eval()
    data, bank = C.lesions_at(size, BLOCK)
    images, masks = data.images("test"), data.masks("test")
    cells = (size // BLOCK) ** 2
    table = draw_table(0, cells, COARSE + FINE, len(bank))
    blocks = bank.blocks.to(device)
    rows = []
    for index in range(min(args.images, MAX_IMAGES)):
        image, mask = images[index].to(device), masks[index].to(device)
        roi = boundary_roi(mask.cpu(), size=side, block=BLOCK)
        r, c, h, w = roi
        base = dict(roi=roi, target=mask, bank=bank, seed=0, block=BLOCK, coarse=COARSE, fine=FINE)
        runtime: dict = {}

        def paper():
            C.clear_engine_caches()
            runtime.clear()
            return explain(model, image, runtime=runtime, **base)

        first, ds0 = C.timed(paper, device)  # also the adaptive target; its time is the first call's
        cand = ~ds0.roi_block.values
        target_se = float(ds0.stderr.values[cand].max())

        adaptive_runtime: dict = {}

        def adaptive():
            C.clear_engine_caches()
            adaptive_runtime.clear()
            return explain(model, image, mode="adaptive", target_se=target_se, band_stop=False, max_draws=400,
                           runtime=adaptive_runtime, **base)

        def paper_off():
            C.clear_engine_caches()
            return explain(model, image, incremental="off", **base)

        def reference():
            return reference_explain(model, image, roi, target=mask, bank_blocks=blocks, table=table, block=BLOCK,
                                     coarse=COARSE, fine=FINE)

        res = C.interleave({"paper": paper, "adaptive": adaptive}, args.repeats, device)
        t_off, off = C.timed(paper_off, device)
        t_ref, (ref_map, ref_forwards) = C.timed(reference, device)
        peak, best, _ = C.peak_throughput(model, tuple(image.shape), device, sizes=_peak_sizes(device), seconds=0.3)
        ds, ad = res["outputs"]["paper"], res["outputs"]["adaptive"]
        try:
            with torch.no_grad():
                ratio = incremental_plan(model, model, image, box=(r, r + h, c, c + w), block=BLOCK).flops_ratio
        except Exception:  # noqa: BLE001 - an ineligible model has no cone
            ratio = 1.0
        t_paper, t_adaptive = C.median(res["times"]["paper"]), C.median(res["times"]["adaptive"])
        rows.append(
            {
                "image": index,
                "size": size,
                "roi": roi,
                "M0": float(ds.m0),
                "paper s": t_paper,
                "paper first call s": first,
                "adaptive s": t_adaptive,
                "paper off s": t_off,
                "reference s": t_ref,
                "speed-up vs loop": t_ref / t_paper,
                "off speed-up vs loop": t_ref / t_off,
                "adaptive speed-up vs loop": t_ref / t_adaptive,
                "path": ds.attrs["forward_path"],
                "batch": runtime.get("batch_size"),
                "adaptive path / batch / rounds": f"{ad.attrs['forward_path']} / {adaptive_runtime.get('batch_size')} / "
                                                  f"{adaptive_runtime.get('rounds')}",
                "paper fwd": int(ds.forwards),
                "reference fwd": int(ref_forwards),
                "adaptive fwd": int(ad.forwards),
                "survivors": int((ds.n_draws.values == FINE).sum()),
                "target SE": target_se,
                "adaptive SE max": float(ad.stderr.values[cand].max()),
                "blocks at budget": int((ad.n_draws.values[cand] >= 400).sum()),
                "max abs map diff (paper - loop)": C.np_max_abs(ds.ate.values, ref_map),
                "max abs map diff (off - loop)": C.np_max_abs(off.ate.values, ref_map),
                "flops ratio": ratio,
                "peak fwd/s": peak,
                "limit, forwards at peak s": int(ds.forwards) / peak,
                "limit, cone at peak s": int(ds.forwards) * ratio / peak,
            }
        )
        print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    summary = {
        "size": size,
        "paper mode s (median)": C.median([r["paper s"] for r in rows]),
        "adaptive at equal SE s (median)": C.median([r["adaptive s"] for r in rows]),
        "speed-up vs reference loop (median)": C.median([r["speed-up vs loop"] for r in rows]),
        "speed-up vs reference loop (min)": C.nan_min([r["speed-up vs loop"] for r in rows]),
        "off-path speed-up vs reference loop (median)": C.median([r["off speed-up vs loop"] for r in rows]),
        "maps exact (paper and off vs loop)": all(
            r["max abs map diff (paper - loop)"] < 1e-3 and r["max abs map diff (off - loop)"] < 1e-3 for r in rows
        ),
        "adaptive every block at or under target SE": all(
            r["adaptive SE max"] <= r["target SE"] * (1 + 1e-6) or r["blocks at budget"] for r in rows
        ),
        "path": ",".join(sorted({r["path"] for r in rows})),
    }
    return {"rows": rows, "summary": summary, "model": f"{label}, on {size} px lesions", "device": str(device)}


def _peak_sizes(device: torch.device) -> tuple[int, ...]:
    return C.PEAK_SIZES if device.type == "cpu" else (16, 64, 128, 256, 512)


def main() -> None:
    p = C.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--size", type=int, default=None, help="image side in px (default 256; 96 with --quick)")
    p.add_argument("--roi-size", type=int, default=None, help="RoI side (default 32 at >= 192 px, else 16)")
    args = p.parse_args()
    device = C.setup(args)
    print("machine:", C.machine(device))
    C.print_report(run(args))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
