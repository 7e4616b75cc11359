"""(e) Peak memory of one explanation, per method, each in a fresh process.

Each method runs in its own Python process that first loads the model and the data, then resets the
kernel's peak-RSS mark and records the resident set, runs one explanation and reads the peak: the
difference is the explanation's own peak host memory. On CUDA the peak GPU memory
(``torch.cuda.max_memory_allocated``) is reported too. The engine's own estimate (activation
footprint x batch size) is printed next to it.

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import _common as C

METHODS = ("paper", "adaptive", "zero", "reference", "monai", "captum")


def child(method: str, model_name: str, dataset: str, device_name: str) -> dict:
    import torch

    from pdcr_lab import explain
    from pdcr_lab.interventions import draw_table
    from pdcr_lab.testing import reference_explain

    args = C.parser("").parse_args(["--images", "1", "--model", model_name, "--dataset", dataset])
    device = torch.device(device_name)
    case = C.cases(args)[0]
    model = case.model.to(device)
    image, mask = case.image.to(device), case.mask.to(device)
    base = dict(roi=case.roi, target=mask)
    runtime: dict = {}
    if method in ("monai", "captum"):
        from bench_occlusion import RoiDice

        wrapper = RoiDice(model, mask, case.roi).to(device).eval()
    table = draw_table(0, (image.shape[1] // 8) * (image.shape[2] // 8), 53, len(case.bank))

    def go():
        if method == "paper":
            return explain(model, image, bank=case.bank, runtime=runtime, **base)
        if method == "adaptive":
            return explain(model, image, bank=case.bank, mode="adaptive", runtime=runtime, **base)
        if method == "zero":
            return explain(model, image, intervention="zero", runtime=runtime, **base)
        if method == "reference":
            return reference_explain(model, image, case.roi, target=mask, bank_blocks=case.bank.blocks.to(device), table=table)
        if method == "monai":
            from monai.visualize import OcclusionSensitivity

            occ = OcclusionSensitivity(wrapper, mask_size=8, n_batch=64, verbose=False, mode=0.0, overlap=0.0, activate=False)
            with torch.inference_mode():
                return occ(image[None])
        from captum.attr import FeatureAblation

        c, h, w = image.shape
        groups = torch.arange((h // 8) * (w // 8), device=device).reshape(h // 8, w // 8)
        fmask = groups.repeat_interleave(8, 0).repeat_interleave(8, 1)[None, None].expand(1, c, h, w)
        with torch.no_grad():
            return FeatureAblation(wrapper).attribute(image[None], baselines=0.0, feature_mask=fmask, perturbations_per_eval=64)

    exact = C.reset_peak_rss()
    before = C.rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        gpu_before = torch.cuda.memory_allocated(device)
    go()
    out = {
        "method": method,
        "peak host MB": (C.peak_rss_bytes() - before) / 2**20,
        "peak mark reset": exact,
        "engine estimate MB": runtime.get("peak_bytes", 0) / 2**20 if runtime else float("nan"),
        "batch": runtime.get("batch_size", 64 if method in ("monai", "captum") else "3 / 50"),
    }
    if device.type == "cuda":
        out["peak GPU MB"] = (torch.cuda.max_memory_allocated(device) - gpu_before) / 2**20
    return out


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    label = C.load_model(args.model, args.dataset)[1]
    for method in METHODS:
        if method == "captum":
            try:
                import captum  # noqa: F401
            except ImportError:
                continue
        proc = subprocess.run(
            [sys.executable, str(Path(__file__)), "--child", method, args.model, args.dataset, str(device)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        )
        if proc.returncode != 0:
            rows.append({"method": method, "peak host MB": float("nan"), "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    summary = {r["method"] + " peak MB": r["peak host MB"] for r in rows}
    return {"rows": rows, "summary": summary, "model": label, "device": str(device)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:6])))
        return
    C.main(run, __doc__)


if __name__ == "__main__":
    main()
