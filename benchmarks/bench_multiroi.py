"""Several RoIs of one image in one call: forward passes and time of 8 RoIs vs 1 RoI.

The perturbed images are the same for every RoI, only the outcome differs, so ``explain(roi=[...])``
runs the screening draws of every block once and the fine draws of the *union* of the RoIs'
survivors once: its cost is 1 + S x (blocks) + N x |union of survivors|, which no paper-mode
estimator can go below (every survivor needs its N fresh draws). The ratio to one RoI therefore
follows the survivor overlap |union| / |largest RoI's survivors|, printed next to it. Two layouts:
8 RoIs tiled next to each other around a boundary RoI and 8 RoIs spread along the whole boundary.
"One RoI" is the single RoI of the layout with the most forwards (and, for reference, the mean).
Adaptive mode's ratio is printed too: there a block only runs while some RoI still needs it.

    python benchmarks/bench_multiroi.py [--images 3 --repeats 3]
"""

from __future__ import annotations

import numpy as np

import _common as C

from pdcr_lab import explain


def _tiled(roi: tuple[int, int, int, int], shape: tuple[int, int], n: int = 8) -> list[tuple[int, int, int, int]]:
    """n grid-aligned RoIs of the same size around `roi` (a 2 x 4 patch of 16 x 16 boxes in 8-px steps)."""
    r, c, h, w = roi
    out = []
    for k in range(n):
        dy, dx = 8 * (k // 4) - 4, 8 * (k % 4) - 12
        rr = int(np.clip(r + dy - (r + dy) % 8, 0, shape[0] - h))
        cc = int(np.clip(c + dx - (c + dx) % 8, 0, shape[1] - w))
        out.append((rr, cc, h, w))
    return out


def _spread(mask, n: int = 8, size: int = 16) -> list[tuple[int, int, int, int]]:
    """n RoIs spread along the whole object boundary (every k-th boundary cell of the 8-px grid)."""
    m = mask.float()
    h, w = m.shape
    cells = []
    for r in range(0, h - size + 1, 8):
        for c in range(0, w - size + 1, 8):
            frac = float(m[r : r + size, c : c + size].mean())
            if 0.2 < frac < 0.8:
                cells.append((r, c, size, size))
    if len(cells) < n:
        return cells
    pick = np.linspace(0, len(cells) - 1, n).round().astype(int)
    return [cells[i] for i in pick]


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    for case in (cases := C.cases(args, device)):
        model, image, mask = case.model, case.image, case.mask
        layouts = {"tiled": _tiled(case.roi, tuple(image.shape[1:])), "spread": _spread(case.mask)}
        for name, rois in layouts.items():
            base = dict(target=mask, bank=case.bank, seed=0)
            singles = [explain(model, image, roi=r, **base) for r in rois]
            survivors = [set(np.flatnonzero((s.n_draws.values == 50).reshape(-1))) for s in singles]
            union = set().union(*survivors)
            biggest = max(range(len(rois)), key=lambda k: int(singles[k].forwards))
            fwd = [int(s.forwards) for s in singles]

            def one():
                return explain(model, image, roi=rois[biggest], **base)

            def many():
                return explain(model, image, roi=rois, **base)

            res = C.interleave({"one": one, "many": many}, args.repeats, device)
            b = res["outputs"]["many"]
            adaptive_one = max(int(explain(model, image, roi=r, mode="adaptive", **base).forwards) for r in rois)
            adaptive_many = int(explain(model, image, roi=rois, mode="adaptive", **base).forwards)
            rows.append(
                {
                    "image": case.index,
                    "layout": name,
                    "RoIs": len(rois),
                    "survivor overlap": len(union) / max(1, max(len(x) for x in survivors)),
                    "1 RoI fwd (largest / mean)": f"{max(fwd)} / {np.mean(fwd):.0f}",
                    "all RoIs fwd": int(b.forwards),
                    "ratio to largest": int(b.forwards) / max(fwd),
                    "ratio to mean": int(b.forwards) / float(np.mean(fwd)),
                    "time ratio to largest": C.median([m / o for o, m in zip(res["times"]["one"], res["times"]["many"])]),
                    "separate calls fwd": sum(fwd),
                    "adaptive ratio to largest": adaptive_many / adaptive_one,
                }
            )
            print(C.markdown(rows[-1:], list(rows[-1])), flush=True)
    tiled = [r for r in rows if r["layout"] == "tiled"]
    spread = [r for r in rows if r["layout"] == "spread"]
    summary = {
        "tiled: all RoIs / largest single RoI forwards (median)": C.median([r["ratio to largest"] for r in tiled]),
        "tiled: all RoIs / mean single RoI forwards (median)": C.median([r["ratio to mean"] for r in tiled]),
        "tiled: survivor overlap |union| / largest (median)": C.median([r["survivor overlap"] for r in tiled]),
        "spread: all RoIs / largest single RoI forwards (median)": C.median([r["ratio to largest"] for r in spread]),
        "spread: all RoIs / mean single RoI forwards (median)": C.median([r["ratio to mean"] for r in spread]),
        "all RoIs / separate calls forwards (median)": C.median([r["all RoIs fwd"] / r["separate calls fwd"] for r in rows]),
    }
    return {"rows": rows, "summary": summary, "model": cases[0].label, "device": str(device)}


def main() -> None:
    C.main(run, __doc__)


if __name__ == "__main__":
    main()
