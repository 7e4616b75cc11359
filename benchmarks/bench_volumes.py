"""(v) PdCR on volumes: the time and forwards of a 3-D map, and zero occlusion side by side with MONAI.

Part 1 (table "maps"): paper mode (natural cubes from the dataset's bank, S = 3, N = 50, tau = 0.02,
4-voxel cubes) on the zoo's 3-D models (``unet3d``, ``segresnet3d``) for the first test volumes of
``brain3d`` and ``vessels3d`` (32^3 voxels: 512 cubes), a 8-voxel cubic RoI on the border of the
ground truth; time, forward passes, the batch the engine chose, the blocks that survive screening.

Part 2 (rows): zero occlusion on the same 4 x 4 x 4 grid, ``explain(intervention="zero")`` against
MONAI's ``OcclusionSensitivity`` (mode 0.0, overlap 0, mask 4) on the RoI Dice of the same model,
at the same batch size, interleaved; the maps are compared on the non-RoI cubes (MONAI's map minus
M0 against ``ate_raw``), which must agree to float rounding.

    python benchmarks/bench_volumes.py [--images 2 --repeats 3]
"""

from __future__ import annotations

import torch

import _common as C
from bench_occlusion import RoiDice

from pdcr_lab import explain

MODELS = ("unet3d", "segresnet3d")
DATASETS = ("brain3d", "vessels3d")
BLOCK = 4
ROI_SIDE = 8


def volume_cases(args) -> list[dict]:
    """(model, dataset, index, volume, mask, roi, bank) for the first ``args.images`` test volumes."""
    from pdcr_lab import datasets, zoo
    from pdcr_lab.rois import boundary_roi

    out = []
    for dataset in DATASETS:
        data = datasets.load(dataset)
        volumes, masks = data.images("test"), data.masks("test")
        for name in MODELS:
            model, meta = zoo.load(name, dataset)
            for i in range(min(args.images, len(volumes))):
                out.append({"model": model.eval(), "label": f"{name}/{dataset}", "dice": meta.get("test_dice"),
                            "index": i, "volume": volumes[i], "mask": masks[i],
                            "roi": boundary_roi(masks[i], size=ROI_SIDE, block=BLOCK), "bank": data.bank})
    return out


def map_row(case: dict) -> dict:
    runtime: dict = {}
    seconds, ds = C.timed(lambda: explain(case["model"], case["volume"], roi=case["roi"], target=case["mask"],
                                          bank=case["bank"], block=BLOCK, runtime=runtime), torch.device("cpu"))
    candidates = int((~ds.roi_block.values).sum())
    return {"model": case["label"], "test Dice": case["dice"], "volume": case["index"], "grid": "8x8x8",
            "cubes": candidates, "survivors": int(((ds.n_draws.values > 3)).sum()),
            "forwards": int(ds.forwards), "batch": runtime.get("batch_size"), "map s": seconds,
            "forwards/s": runtime.get("forwards_per_second"), "M0": float(ds.m0),
            "support cubes": int((ds.ate.values < 0).sum()), "harm cubes": int((ds.ate.values > 0).sum())}


def occlusion_row(case: dict, repeats: int) -> dict:
    from monai.visualize import OcclusionSensitivity

    model, volume, mask, roi = case["model"], case["volume"], case["mask"], case["roi"]
    runtime: dict = {}
    explain(model, volume, roi=roi, target=mask, intervention="zero", block=BLOCK, runtime=runtime)
    size = int(runtime["batch_size"])
    wrapper = RoiDice(model, mask, roi).eval()
    occ = OcclusionSensitivity(wrapper, mask_size=BLOCK, n_batch=size, verbose=False, mode=0.0, overlap=0.0,
                               activate=False)

    def pdcr():
        return explain(model, volume, roi=roi, target=mask, intervention="zero", block=BLOCK, batch_size=size)

    def monai():
        with torch.inference_mode():
            return occ(volume[None])[0]

    res = C.interleave({"pdcr_lab": pdcr, "MONAI": monai}, repeats, torch.device("cpu"))
    ds = res["outputs"]["pdcr_lab"]
    cand = ~ds.roi_block.values
    monai_map = res["outputs"]["MONAI"][0, 0, ::BLOCK, ::BLOCK, ::BLOCK].float().numpy() - float(ds.m0)
    t = res["times"]
    return {"model": case["label"], "volume": case["index"], "batch": size,
            "pdcr_lab s": C.median(t["pdcr_lab"]), "MONAI s": C.median(t["MONAI"]),
            "MONAI / pdcr_lab": C.median([m / p for p, m in zip(t["pdcr_lab"], t["MONAI"])]),
            "pdcr_lab fwd": int(ds.forwards), "MONAI fwd": 512,
            "max abs MONAI - pdcr": C.np_max_abs(monai_map[cand], ds.ate_raw.values[cand])}


def run(args) -> dict:
    C.setup(args)
    cases = volume_cases(args)
    maps = []
    for case in cases:
        maps.append(map_row(case))
        print(C.markdown(maps[-1:], list(maps[-1])), flush=True)
    rows = []
    for case in cases:
        rows.append(occlusion_row(case, args.repeats))
        print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    summary = {
        "3-D map seconds (median, paper mode)": C.median([r["map s"] for r in maps]),
        "3-D map seconds (max)": max(r["map s"] for r in maps),
        "forwards (median)": C.median([float(r["forwards"]) for r in maps]),
        "MONAI / pdcr_lab time, zero occlusion (median)": C.median([r["MONAI / pdcr_lab"] for r in rows]),
        "maps agree with MONAI": all(r["max abs MONAI - pdcr"] < 1e-3 for r in rows),
    }
    return {"rows": rows, "summary": summary, "model": "zoo 3-D models", "device": "cpu", "tables": {"maps": maps}}


if __name__ == "__main__":
    arguments = C.parser(__doc__.splitlines()[0]).parse_args()
    result = run(arguments)
    print(C.markdown(result["tables"]["maps"], list(result["tables"]["maps"][0])))
    C.print_report(result)
