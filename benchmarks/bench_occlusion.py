"""(c) Zero-occlusion on the same grid: pdcr_lab vs MONAI's OcclusionSensitivity vs Captum's FeatureAblation.

All three set one 8 x 8 block to 0 per forward pass and read one scalar: the RoI's Dice in DSC points
(the paper's outcome) from a segmentation wrapper around the same model. pdcr_lab skips the RoI's own
blocks (they are never perturbed in PdCR); MONAI and Captum occlude every block. The maps are
cross-checked on the non-RoI blocks (MONAI's map minus M0, Captum's attribution negated, against
pdcr_lab's ``ate_raw``), then the wall times are compared, at the same batch size for all three.

Scale part (table "scale"): the same comparison at 96, 192 and 256 px (96 only with ``--quick``) on
two random-weight models the engine was never tuned on, built by ``bench_suite.py``: MONAI UNet with
BatchNorm (eligible for exact incremental inference) and with InstanceNorm (ineligible), each wrapped
in :class:`_common.Calibrated`, on ``lesions`` drawn at that size, the RoI (16 px at 96, else 32 px)
on the border of the model's factual prediction, which is also the target of all four. Contenders,
interleaved: the reference loop (zero intervention: one forward per block), MONAI and Captum at the
bare model's best batch size (measured here, the most favourable to them), and ``explain(intervention=
"zero")`` with its defaults and cold caches (batch ladder, path choice). Maps: largest difference of
each against pdcr_lab's on the non-RoI blocks. Limits: the time pdcr_lab's forwards take at the
model's peak throughput, and the time of only their cone FLOPs (forwards x plan ``flops_ratio`` / peak).
Repeats: ``--repeats`` (at most 2) at 96 px, one above.

    python benchmarks/bench_occlusion.py [--images 3 --repeats 3]
"""

from __future__ import annotations

import torch

import _common as C

from pdcr_lab import explain
from pdcr_lab.testing import dice_points


class RoiDice(torch.nn.Module):
    """Segmentation model -> (B, 1) RoI Dice in DSC points: the scalar 'classifier' both libraries need."""

    def __init__(self, model: torch.nn.Module, target: torch.Tensor, roi: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        k = target.dim()  # (row, col, height, width), or a volume's (z, row, col, depth, height, width)
        mask = torch.zeros_like(target, dtype=torch.float32)
        mask[tuple(slice(s, s + e) for s, e in zip(roi[:k], roi[k:]))] = 1
        self.register_buffer("roi", mask)
        self.register_buffer("target", target.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = (self.model(x)[:, 0] > 0.5).float()
        return dice_points(pred, self.target, self.roi)[:, None]


def _contenders(wrapper, image, b: int, batch: int, OcclusionSensitivity, FeatureAblation):
    """MONAI's and Captum's zero occlusion of `wrapper` (the RoI Dice) on the b x b grid, `batch` images a pass."""
    c, h, w = image.shape
    occ = OcclusionSensitivity(wrapper, mask_size=b, n_batch=batch, verbose=False, mode=0.0, overlap=0.0, activate=False)
    groups = torch.arange((h // b) * (w // b), device=image.device).reshape(h // b, w // b)
    feature_mask = groups.repeat_interleave(b, 0).repeat_interleave(b, 1)[None, None].expand(1, c, h, w)

    def monai():
        with torch.inference_mode():
            return occ(image[None])[0]

    def captum():
        with torch.no_grad():
            return FeatureAblation(wrapper).attribute(
                image[None], baselines=0.0, feature_mask=feature_mask, perturbations_per_eval=batch
            )

    return monai, captum


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    try:
        from captum.attr import FeatureAblation
    except ImportError:  # pragma: no cover - optional
        FeatureAblation = None
    from monai.visualize import OcclusionSensitivity

    for case in (cases := C.cases(args, device)):
        model, image, mask = case.model, case.image, case.mask
        c, h, w = image.shape
        b = 8
        wrapper = RoiDice(model, mask, case.roi).to(device).eval()
        runtime: dict = {}
        # A first call tunes the batch size that the contenders then share.
        explain(model, image, roi=case.roi, target=mask, intervention="zero", runtime=runtime)
        size = int(runtime["batch_size"])
        monai, captum = _contenders(wrapper, image, b, size, OcclusionSensitivity, FeatureAblation)

        def pdcr():
            return explain(model, image, roi=case.roi, target=mask, intervention="zero", batch_size=size)

        contenders = {"pdcr_lab": pdcr, "MONAI": monai}
        if FeatureAblation is not None:
            contenders["Captum"] = captum
        for fn in contenders.values():
            fn()  # warm-up
        res = C.interleave(contenders, args.repeats, device)
        ds = res["outputs"]["pdcr_lab"]
        m0 = float(ds.m0)
        cand = ~ds.roi_block.values
        monai_map = res["outputs"]["MONAI"][0, 0, ::b, ::b].float().cpu().numpy() - m0
        row = {
            "image": case.index,
            "batch": size,
            "pdcr_lab s": C.median(res["times"]["pdcr_lab"]),
            "MONAI s": C.median(res["times"]["MONAI"]),
            "MONAI / pdcr_lab": C.median([m / p for p, m in zip(res["times"]["pdcr_lab"], res["times"]["MONAI"])]),
            "pdcr_lab fwd": int(ds.forwards),
            "MONAI fwd": (h // b) * (w // b),
            "max abs MONAI - pdcr": C.np_max_abs(monai_map[cand], ds.ate_raw.values[cand]),
        }
        if "Captum" in res["outputs"]:
            captum_map = -res["outputs"]["Captum"][0, 0, ::b, ::b].float().cpu().numpy()
            row.update(
                {
                    "Captum s": C.median(res["times"]["Captum"]),
                    "Captum / pdcr_lab": C.median(
                        [k / p for p, k in zip(res["times"]["pdcr_lab"], res["times"]["Captum"])]
                    ),
                    "Captum fwd": 1 + (h // b) * (w // b),
                    "max abs Captum - pdcr": C.np_max_abs(captum_map[cand], ds.ate_raw.values[cand]),
                }
            )
        rows.append(row)
        print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    scale = scale_rows(args, device, FeatureAblation, OcclusionSensitivity)
    summary = {
        "MONAI / pdcr_lab time (median)": C.median([r["MONAI / pdcr_lab"] for r in rows]),
        "Captum / pdcr_lab time (median)": C.median([r.get("Captum / pdcr_lab", float("nan")) for r in rows]),
        "maps agree": all(
            r["max abs MONAI - pdcr"] < 1e-3 and r.get("max abs Captum - pdcr", 0.0) < 1e-3 for r in rows
        ),
        "captum": FeatureAblation is not None,
        **scale_summary(scale),
    }
    return {"rows": rows, "summary": summary, "model": cases[0].label, "device": str(device), "tables": {"scale": scale}}


SCALE_MODELS = ("unet_bn", "unet_in")


def scale_rows(args, device, FeatureAblation, OcclusionSensitivity) -> list[dict]:
    """Zero occlusion at 96/192/256 px on random-weight BN (eligible) and IN (ineligible) MONAI UNets."""
    import bench_suite

    from pdcr_lab.incremental import Ineligible
    from pdcr_lab.incremental import plan as incremental_plan
    from pdcr_lab.testing import reference_explain

    b = 8
    rows = []
    for size in (96,) if args.quick else (96, 192, 256):
        for name in SCALE_MODELS:
            p = bench_suite.problem(name, size, device)
            model, image, roi, target = p["model"], p["image"], p["roi"], p["pred"]
            c, h, w = image.shape
            r0, c0, rh, rw = roi
            peak, best, _ = C.peak_throughput(model, tuple(image.shape), device, sizes=C.PEAK_SIZES if device.type == "cpu" else None, seconds=0.3)
            wrapper = RoiDice(model, target, roi).to(device).eval()
            monai, captum = _contenders(wrapper, image, b, best, OcclusionSensitivity, FeatureAblation)
            runtime: dict = {}

            def pdcr():
                C.clear_engine_caches()
                runtime.clear()
                return explain(model, image, roi=roi, target=target, intervention="zero", runtime=runtime)

            def reference():
                return reference_explain(model, image, roi, target=target, bank_blocks=None, block=b)

            contenders = {"pdcr_lab": pdcr, "reference": reference, "MONAI": monai}
            if FeatureAblation is not None:
                contenders["Captum"] = captum
            res = C.interleave(contenders, min(args.repeats, 2) if size <= 96 else 1, device)
            t, out = res["times"], res["outputs"]
            ds = out["pdcr_lab"]
            m0 = float(ds.m0)
            cand = ~ds.roi_block.values
            try:
                with torch.no_grad():
                    ratio = incremental_plan(model, model, image, box=(r0, r0 + rh, c0, c0 + rw), block=b).flops_ratio
                eligible = True
            except Ineligible:
                ratio, eligible = 1.0, False
            C.clear_engine_caches()
            monai_map = out["MONAI"][0, 0, ::b, ::b].float().cpu().numpy() - m0
            ref_map, _ = out["reference"]
            row = {
                "size": size,
                "model": f"{name} ({bench_suite.MODELS[name][0]}, random)",
                "eligible": "yes" if eligible else "no",
                "path": ds.attrs["forward_path"],
                "batch pdcr / others": f"{runtime.get('batch_size')} / {best}",
                "pdcr_lab s": C.median(t["pdcr_lab"]),
                "reference s": C.median(t["reference"]),
                "MONAI s": C.median(t["MONAI"]),
                "reference / pdcr_lab": C.median([r / q for q, r in zip(t["pdcr_lab"], t["reference"])]),
                "MONAI / pdcr_lab": C.median([m / q for q, m in zip(t["pdcr_lab"], t["MONAI"])]),
                "pdcr_lab fwd": int(ds.forwards),
                "max abs ref - pdcr": C.np_max_abs(ref_map[cand], ds.ate.values[cand]),
                "max abs MONAI - pdcr": C.np_max_abs(monai_map[cand], ds.ate_raw.values[cand]),
            }
            if "Captum" in out:
                captum_map = -out["Captum"][0, 0, ::b, ::b].float().cpu().numpy()
                row.update(
                    {
                        "Captum s": C.median(t["Captum"]),
                        "Captum / pdcr_lab": C.median([k / q for q, k in zip(t["pdcr_lab"], t["Captum"])]),
                        "max abs Captum - pdcr": C.np_max_abs(captum_map[cand], ds.ate_raw.values[cand]),
                    }
                )
            row.update(
                {
                    "peak fwd/s": peak,
                    "flops ratio": ratio if eligible else float("nan"),
                    "limit: fwd at peak s": int(ds.forwards) / peak,
                    "limit: cone at peak s": int(ds.forwards) * ratio / peak,
                }
            )
            rows.append(row)
            print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    return rows


def scale_summary(rows: list[dict]) -> dict:
    def low(key: str, eligible: str) -> float:
        return C.nan_min([r.get(key, float("nan")) for r in rows if r["eligible"] == eligible])

    agree = all(
        r["max abs MONAI - pdcr"] < 1e-3 and r.get("max abs Captum - pdcr", 0.0) < 1e-3 and r["max abs ref - pdcr"] < 1e-3
        for r in rows
    )
    return {
        "scale: sizes": ",".join(str(s) for s in sorted({r["size"] for r in rows})),
        "scale: eligible, MONAI / pdcr_lab (min)": low("MONAI / pdcr_lab", "yes"),
        "scale: eligible, Captum / pdcr_lab (min)": low("Captum / pdcr_lab", "yes"),
        "scale: ineligible, MONAI / pdcr_lab (min)": low("MONAI / pdcr_lab", "no"),
        "scale: ineligible, Captum / pdcr_lab (min)": low("Captum / pdcr_lab", "no"),
        "scale: reference loop / pdcr_lab (min)": C.nan_min([r["reference / pdcr_lab"] for r in rows]),
        "scale: maps identical (loop, MONAI, Captum vs pdcr_lab)": agree,
    }


def main() -> None:
    C.main(run, __doc__)


if __name__ == "__main__":
    main()
