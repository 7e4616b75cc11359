"""GPU checks and figures: run this when a CUDA device is available (about 5-8 minutes on one H100).

    python benchmarks/gpu_check.py [--out DIR] [--quick]

1. Correctness of the fast paths on the GPU, on the zoo model: every option's map (bfloat16,
   float16, channels-last, torch.compile, and all together) against the float32 eager map, within
   the engine's documented tolerance (:data:`pdcr_lab.engine.PRECISION_TOLERANCE` per draw; the map
   difference is printed), with the engine's own ``check_precision`` verdict.
2. A forced tiny ``memory_budget`` halves the batch on the GPU and leaves the map unchanged.
3. The figures of the issue's GPU targets: paper mode vs the reference loop (target >= 10x), one
   map under 1 s, engine efficiency, adaptive vs paper, several RoIs, peak GPU memory
   (``run_all`` items a, b, d, r, o on ``cuda``), and paper scale (item p): a 256 x 256 paper-mode
   map of the BatchNorm U-Net (RoI 32, block 8, S=3, N=50) in < 2 s and >= 10x the reference loop,
   maps exact.

Exit status 1 when a correctness check fails. With ``--out`` (or $OUT) the report is written there
as ``gpu_report.md`` and ``gpu_report.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _common as C  # noqa: E402
import run_all  # noqa: E402

from pdcr_lab import explain  # noqa: E402
from pdcr_lab.engine import PRECISION_TOLERANCE  # noqa: E402


def correctness(args, device) -> tuple[list[dict], bool]:
    rows, ok = [], True
    for case in C.cases(args, device)[:2]:
        model, image, mask = case.model, case.image, case.mask
        base = dict(roi=case.roi, target=mask, bank=case.bank, seed=0)
        ref = explain(model, image, **base)
        options = {
            "bfloat16": {"precision": "bfloat16"},
            "float16": {"precision": "float16"},
            "channels_last": {"channels_last": True},
            "compile": {"compile": True},
            "all": {"precision": "bfloat16", "channels_last": True, "compile": True},
        }
        for name, opt in options.items():
            started = time.perf_counter()
            try:
                ds = explain(model, image, check_precision=True, **base, **opt)
            except Exception as exc:  # noqa: BLE001 - report, do not hide
                rows.append({"image": case.index, "option": name, "error": repr(exc)[:200]})
                ok = False
                continue
            diff = C.np_max_abs(ds.ate.values, ref.ate.values)
            within = bool(ds.attrs["precision_ok"])
            rows.append(
                {
                    "image": case.index,
                    "option": name,
                    "check error": ds.attrs["precision_error"],
                    "check ok": within,
                    "max abs ATE diff vs fp32": diff,
                    "compiled": ds.attrs["compile"],
                    "first call s": time.perf_counter() - started,
                }
            )
            ok &= within
        # A tiny budget must halve and continue with the same map.
        runtime: dict = {}
        free: dict = {}
        explain(model, image, runtime=free, **base)
        budget = int(free["item_bytes"] * 3)
        tiny = explain(model, image, memory_budget=budget, batch_size=256, runtime=runtime, **base)
        same = C.np_max_abs(tiny.ate.values, ref.ate.values) < 1e-3
        rows.append(
            {
                "image": case.index,
                "option": f"memory_budget={budget} B",
                "check ok": same and runtime["batch_halvings"] > 0,
                "max abs ATE diff vs fp32": C.np_max_abs(tiny.ate.values, ref.ate.values),
                "batch": runtime["batch_size"],
                "halvings": runtime["batch_halvings"],
                "peak GPU MB": runtime["peak_bytes"] / 2**20,
            }
        )
        ok &= same and runtime["batch_halvings"] > 0
    return rows, ok


def main() -> None:
    p = C.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_report.md/json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (run this on a GPU machine)")
        sys.exit(0)
    args.device = "cuda"
    device = C.setup(args)
    args.images = min(args.images, 2)
    args.compile = args.fp16 = True
    header = f"GPU check on: {C.machine(device)}"
    print(header, flush=True)
    rows, ok = correctness(args, device)
    print(C.markdown(rows, list(dict.fromkeys(k for r in rows for k in r))), flush=True)
    results, sections = {}, []
    for key in "adrbop":
        title, module = run_all.ITEMS[key]
        print(f"\n## {title}", flush=True)
        out = module.run(args)
        results[key] = out
        body = C.markdown(out["rows"], list(dict.fromkeys(k for r in out["rows"] for k in r)))
        sections.append(f"### {title}\n\n{body}\n" + "\n".join(f"- {k}: {C._fmt(v)}" for k, v in out["summary"].items()))
        print(sections[-1], flush=True)
    table = C.markdown(run_all.targets(results, gpu=True), ["target", "measured", "goal", "met"])
    report = (
        f"{header}\n\n## Correctness of the fast paths (tolerance {PRECISION_TOLERANCE} per draw)\n\n"
        + C.markdown(rows, list(dict.fromkeys(k for r in rows for k in r)))
        + f"\n## Targets\n\n{table}\n## Details\n\n"
        + "\n\n".join(sections)
    )
    print("\n## Targets\n\n" + table)
    if args.out:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu_report.md").write_text(report)
        (out_dir / "gpu_report.json").write_text(
            json.dumps({"correctness": rows, "results": {k: v["summary"] for k, v in results.items()}}, default=str, indent=1)
        )
    print("correctness:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
