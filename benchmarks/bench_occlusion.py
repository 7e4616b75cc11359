"""(c) Zero-occlusion on the same grid: pdcr_lab vs MONAI's OcclusionSensitivity vs Captum's FeatureAblation.

All three set one 8 x 8 block to 0 per forward pass and read one scalar: the RoI's Dice in DSC points
(the paper's outcome) from a segmentation wrapper around the same model. pdcr_lab skips the RoI's own
blocks (they are never perturbed in PdCR); MONAI and Captum occlude every block. The maps are
cross-checked on the non-RoI blocks (MONAI's map minus M0, Captum's attribution negated, against
pdcr_lab's ``ate_raw``), then the wall times are compared, at the same batch size for all three.

    python benchmarks/bench_occlusion.py [--images 3 --repeats 3]
"""

from __future__ import annotations

import numpy as np
import torch

import _common as C

from pdcr_lab import explain
from pdcr_lab.testing import dice_points


class RoiDice(torch.nn.Module):
    """Segmentation model -> (B, 1) RoI Dice in DSC points: the scalar 'classifier' both libraries need."""

    def __init__(self, model: torch.nn.Module, target: torch.Tensor, roi: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.model = model
        r, c, h, w = roi
        mask = torch.zeros_like(target, dtype=torch.float32)
        mask[r : r + h, c : c + w] = 1
        self.register_buffer("roi", mask)
        self.register_buffer("target", target.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = (self.model(x)[:, 0] > 0.5).float()
        return dice_points(pred, self.target, self.roi)[:, None]


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
        ours = explain(model, image, roi=case.roi, target=mask, intervention="zero", runtime=runtime)
        size = int(runtime["batch_size"])
        occ = OcclusionSensitivity(wrapper, mask_size=b, n_batch=size, verbose=False, mode=0.0, overlap=0.0, activate=False)
        groups = torch.arange((h // b) * (w // b), device=device).reshape(h // b, w // b)
        feature_mask = groups.repeat_interleave(b, 0).repeat_interleave(b, 1)[None, None].expand(1, c, h, w)

        def pdcr():
            return explain(model, image, roi=case.roi, target=mask, intervention="zero", batch_size=size)

        def monai():
            with torch.inference_mode():
                return occ(image[None])[0]

        def captum():
            with torch.no_grad():
                return FeatureAblation(wrapper).attribute(
                    image[None], baselines=0.0, feature_mask=feature_mask, perturbations_per_eval=size
                )

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
    summary = {
        "MONAI / pdcr_lab time (median)": C.median([r["MONAI / pdcr_lab"] for r in rows]),
        "Captum / pdcr_lab time (median)": C.median([r.get("Captum / pdcr_lab", float("nan")) for r in rows]),
        "maps agree": all(
            r["max abs MONAI - pdcr"] < 1e-3 and r.get("max abs Captum - pdcr", 0.0) < 1e-3 for r in rows
        ),
        "captum": FeatureAblation is not None,
    }
    return {"rows": rows, "summary": summary, "model": cases[0].label, "device": str(device)}


def main() -> None:
    C.main(run, __doc__)


if __name__ == "__main__":
    main()
