"""(a) Paper mode vs the naive per-block reference loop (the foundation issue's benchmark).

Same model, image, RoI, bank, draw table and draw counts (S=3, N=50): the reference loop
(:func:`pdcr_lab.testing.reference_explain`) runs one batch of 3 and then one of 50 per block, as the
authors' code does; :func:`pdcr_lab.explain` runs all screening draws of all blocks in large batches,
then all fine draws of the survivors. Both maps must agree; the script prints the speed ratio, both
forward-pass counts and the time of one map. It also prints the *ceiling*: the reference loop's time
divided by the time the same forward passes take at the model's peak throughput (its best batch
size, measured in the same run), the largest speed-up any exact paper-mode engine can reach on this
device without skipping forwards. A third contender, paper mode with bfloat16 autocast,
is timed too, with the engine's float32 ``check_precision`` verdict and its map's difference.

    python benchmarks/bench_reference.py [--images 3 --repeats 3]
"""

from __future__ import annotations


import _common as C

from pdcr_lab import explain
from pdcr_lab.interventions import draw_table
from pdcr_lab.testing import reference_explain


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    for case in (cases := C.cases(args, device)):
        model, image, mask = case.model, case.image, case.mask
        cells = (image.shape[1] // 8) * (image.shape[2] // 8)
        table = draw_table(0, cells, 53, len(case.bank))
        blocks = case.bank.blocks.to(device)
        runtime: dict = {}

        def paper():
            return explain(model, image, roi=case.roi, target=mask, bank=case.bank, seed=0, runtime=runtime)

        def naive():
            return reference_explain(model, image, case.roi, target=mask, bank_blocks=blocks, table=table)

        def paper_bf16():
            return explain(model, image, roi=case.roi, target=mask, bank=case.bank, seed=0, precision="bfloat16")

        paper()  # warm-up (first-call costs: kernels, tuning) outside the timed runs
        naive()
        checked = explain(
            model, image, roi=case.roi, target=mask, bank=case.bank, seed=0, precision="bfloat16", check_precision=True
        )
        res = C.interleave({"paper": paper, "reference": naive, "bf16": paper_bf16}, args.repeats, device)
        peak, _, _ = C.peak_throughput(model, tuple(image.shape), device, seconds=0.5)
        ds = res["outputs"]["paper"]
        ref_map, ref_forwards = res["outputs"]["reference"]
        t_paper, t_ref = res["times"]["paper"], res["times"]["reference"]
        ratios = [r / p for p, r in zip(t_paper, t_ref)]
        ratios_bf16 = [r / p for p, r in zip(res["times"]["bf16"], t_ref)]
        rows.append(
            {
                "image": case.index,
                "roi": case.roi,
                "paper s": C.median(t_paper),
                "reference s": C.median(t_ref),
                "speed-up": C.median(ratios),
                "ceiling": C.median(t_ref) / (int(res["outputs"]["paper"].forwards) / peak),
                "paper forwards": int(ds.forwards),
                "reference forwards": int(ref_forwards),
                "survivors": int((ds.n_draws.values == 50).sum()),
                "max abs map diff": C.np_max_abs(ds.ate.values, ref_map),
                "batch": runtime.get("batch_size"),
                "bf16 speed-up": C.median(ratios_bf16),
                "bf16 check ok": bool(checked.attrs["precision_ok"]),
                "bf16 max abs map diff": C.np_max_abs(res["outputs"]["bf16"].ate.values, ds.ate.values),
            }
        )
        print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    summary = {
        "speed-up (median)": C.median([r["speed-up"] for r in rows]),
        "ceiling at peak throughput (median)": C.median([r["ceiling"] for r in rows]),
        "one map s (median)": C.median([r["paper s"] for r in rows]),
        "maps agree": all(r["max abs map diff"] < 1e-3 for r in rows),
        "bf16 speed-up (median)": C.median([r["bf16 speed-up"] for r in rows]),
        "bf16 passed check_precision": all(r["bf16 check ok"] for r in rows),
    }
    return {"rows": rows, "summary": summary, "model": cases[0].label, "device": str(device)}


def main() -> None:
    C.main(run, __doc__)


if __name__ == "__main__":
    main()
