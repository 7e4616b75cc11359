"""Speed options of paper mode on this device: bfloat16/float16 autocast, channels-last, torch.compile.

Each option's map is compared with the default float32 eager map of the same call (largest |ATE|
difference, share of blocks whose sign changed) and with the engine's own ``check_precision``
verdict; its time is compared with the default's, interleaved. float16 autocast is slow on most CPUs
and compile pays a one-off compilation (printed separately): both are measured on GPUs by
``gpu_check.py``.

    python benchmarks/bench_options.py [--images 3 --repeats 3] [--compile] [--fp16]
"""

from __future__ import annotations

import time

import numpy as np

import _common as C

from pdcr_lab import explain


def options(args, device) -> dict[str, dict]:
    opts = {"bfloat16": {"precision": "bfloat16"}, "channels_last": {"channels_last": True}}
    opts["bf16 + channels_last"] = {"precision": "bfloat16", "channels_last": True}
    if getattr(args, "fp16", False) or device.type == "cuda":
        opts["float16"] = {"precision": "float16"}
    if getattr(args, "compile", False) or device.type == "cuda":
        opts["compile"] = {"compile": True}
    return opts


def _strong_flips(a: np.ndarray, b: np.ndarray, level: float = 0.5) -> float:
    """Share of the blocks with a clear effect (|ATE| >= level in either map) whose sign differs."""
    strong = (np.abs(a) >= level) | (np.abs(b) >= level)
    return float((np.sign(a[strong]) != np.sign(b[strong])).mean()) if strong.any() else 0.0


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    for case in (cases := C.cases(args, device)):
        model, image, mask = case.model, case.image, case.mask
        base = dict(roi=case.roi, target=mask, bank=case.bank, seed=0)
        for name, opt in options(args, device).items():
            started = time.perf_counter()
            checked = explain(model, image, check_precision=True, **base, **opt)  # warm-up + verdict
            first_call = time.perf_counter() - started
            res = C.interleave(
                {"default": lambda: explain(model, image, **base), name: lambda: explain(model, image, **base, **opt)},
                args.repeats,
                device,
            )
            ref, fast = res["outputs"]["default"], res["outputs"][name]
            cand = ~ref.roi_block.values
            rows.append(
                {
                    "image": case.index,
                    "option": name,
                    "speed-up": C.median([d / f for d, f in zip(res["times"]["default"], res["times"][name])]),
                    "max abs ATE diff": C.np_max_abs(ref.ate.values, fast.ate.values),
                    "sign changes": float((np.sign(ref.ate.values[cand]) != np.sign(fast.ate.values[cand])).mean()),
                    "sign changes where abs ATE >= 0.5": _strong_flips(ref.ate.values[cand], fast.ate.values[cand]),
                    "check error": checked.attrs["precision_error"],
                    "check ok": bool(checked.attrs["precision_ok"]),
                    "first call s": first_call,
                }
            )
            print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    summary = {}
    for name in dict.fromkeys(r["option"] for r in rows):
        sub = [r for r in rows if r["option"] == name]
        summary[f"{name}: speed-up (median)"] = C.median([r["speed-up"] for r in sub])
        summary[f"{name}: max abs ATE diff (max)"] = max(r["max abs ATE diff"] for r in sub)
    return {"rows": rows, "summary": summary, "model": cases[0].label, "device": str(device)}


def main() -> None:
    p = C.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow first call on CPU)")
    p.add_argument("--fp16", action="store_true", help="also time float16 autocast (slow on most CPUs)")
    args = p.parse_args()
    device = C.setup(args)
    print("machine:", C.machine(device))
    C.print_report(run(args))


if __name__ == "__main__":
    main()
