"""(d) Engine efficiency: achieved forward passes per second / the model's peak forward throughput.

The peak is the best forward-only throughput of the bare model over batch sizes on this device (random
inputs of the image's shape, inference mode): the limit no explanation method can beat without
skipping forwards. The achieved rate is a full paper-mode ``explain`` call's forward passes divided by
its wall time, everything included (composition, outcomes, screening, result assembly). The peak and
the explanations are measured in alternation so that background load hits both alike.

    python benchmarks/bench_efficiency.py [--images 3 --repeats 3]
"""

from __future__ import annotations

import _common as C

from pdcr_lab import explain


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    for case in (cases := C.cases(args, device)):
        model, image, mask = case.model, case.image, case.mask
        explain(model, image, roi=case.roi, target=mask, bank=case.bank)  # warm-up (and batch-size tuning)
        for rep in range(args.repeats):
            peak, best, _ = C.peak_throughput(model, tuple(image.shape), device, seconds=0.5)
            runtime: dict = {}
            seconds, ds = C.timed(
                lambda: explain(model, image, roi=case.roi, target=mask, bank=case.bank, runtime=runtime), device
            )
            achieved = int(ds.forwards) / seconds
            rows.append(
                {
                    "image": case.index,
                    "repeat": rep,
                    "peak fwd/s": peak,
                    "peak batch": best,
                    "achieved fwd/s": achieved,
                    "engine batch": runtime["batch_size"],
                    "efficiency": achieved / peak,
                    "map s": seconds,
                    "forwards": int(ds.forwards),
                }
            )
            print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    summary = {
        "efficiency (median)": C.median([r["efficiency"] for r in rows]),
        "one map s (median)": C.median([r["map s"] for r in rows]),
        "peak fwd/s (median)": C.median([r["peak fwd/s"] for r in rows]),
    }
    return {"rows": rows, "summary": summary, "model": cases[0].label, "device": str(device)}


def main() -> None:
    C.main(run, __doc__)


if __name__ == "__main__":
    main()
