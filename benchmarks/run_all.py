"""Run the whole benchmark suite and print (or write) the measured table.

    python benchmarks/run_all.py                      # everything, 3 images x 3 interleaved repeats
    python benchmarks/run_all.py --quick              # smoke run: 1 image, 1 repeat
    python benchmarks/run_all.py --only a,d           # some items
    python benchmarks/run_all.py --write docs/benchmarks.md

Items: a = paper mode vs the reference loop, b = adaptive vs paper, c = zero-occlusion vs MONAI and
Captum (with its 96/192/256-px scale part), d = engine efficiency, e = peak memory, r = several RoIs,
o = speed options (bf16, channels-last; compile and fp16 with --compile/--fp16 or on a GPU),
s = the batch policy and incremental path on seven untuned random-weight models at 96-256 px,
p = paper scale (256 x 256, RoI 32, S=3, N=50). Every ratio is measured within this run on this
machine, contenders interleaved; medians over images and repeats.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts, however this is started
import _common as C  # noqa: E402
import bench_adaptive  # noqa: E402
import bench_efficiency  # noqa: E402
import bench_memory  # noqa: E402
import bench_multiroi  # noqa: E402
import bench_occlusion  # noqa: E402
import bench_options  # noqa: E402
import bench_paper_scale  # noqa: E402
import bench_reference  # noqa: E402
import bench_suite  # noqa: E402

ITEMS = {
    "a": ("(a) paper mode vs reference loop", bench_reference),
    "b": ("(b) adaptive vs paper", bench_adaptive),
    "c": ("(c) zero-occlusion vs MONAI / Captum", bench_occlusion),
    "d": ("(d) engine efficiency", bench_efficiency),
    "e": ("(e) peak memory", bench_memory),
    "r": ("several RoIs share forwards", bench_multiroi),
    "o": ("speed options", bench_options),
    "s": ("(s) untuned models: batch policy, incremental path, efficiency", bench_suite),
    "p": ("(p) paper scale: 256 x 256, RoI 32, S=3, N=50", bench_paper_scale),
}


def targets(results: dict, gpu: bool) -> list[dict]:
    """The issue's targets, checked against this run's medians."""
    rows = []

    def add(name, value, goal, ok, na=False):
        rows.append({"target": name, "measured": value, "goal": goal, "met": "n/a" if na else ("yes" if ok else "NO")})

    if "a" in results:
        s = results["a"]["summary"]
        goal = 10.0 if gpu else 1.5
        add(f"paper mode vs reference loop (speed-up; ceiling at peak throughput {s['ceiling at peak throughput (median)']:.2f}x)",
            s["speed-up (median)"], f">= {goal}x", s["speed-up (median)"] >= goal)
        limit = 1.0 if gpu else 10.0
        add("one map, zoo model, 96x96 (s)", s["one map s (median)"], f"< {limit} s", s["one map s (median)"] < limit)
        add("paper map equals the reference loop's", s["maps agree"], "yes", s["maps agree"])
        ok = s["bf16 passed check_precision"]
        add(f"paper mode, bfloat16 (check_precision {'passed' if ok else 'FAILED'}) vs reference loop",
            s["bf16 speed-up (median)"], f">= {goal}x", ok and s["bf16 speed-up (median)"] >= goal)
    if "b" in results:
        s = results["b"]["summary"]
        v = s["fewer forwards at <= paper's max SE (median)"]
        add("adaptive: fewer forwards at <= paper's per-block SE", v, ">= 3x", v >= 3.0)
    if "c" in results:
        s = results["c"]["summary"]
        add("zero-occlusion maps equal MONAI's and Captum's", s["maps agree"], "yes", s["maps agree"])
    if "d" in results:
        v = results["d"]["summary"]["efficiency (median)"]
        add("engine efficiency (achieved / peak fwd/s)", v, ">= 0.85", v >= 0.85)
    if "r" in results:
        s = results["r"]["summary"]
        v = s["tiled: all RoIs / largest single RoI forwards (median)"]
        overlap = s["tiled: survivor overlap |union| / largest (median)"]
        add(f"8 adjacent RoIs / 1 RoI forwards (survivor overlap {overlap:.2f})", v, "< 1.3x", v < 1.3)
    if "s" in results:
        s = results["s"]["summary"]
        v = s["slowest vs loop: min(off, auto) speed-up"]
        add(f"suite ({s['cases']} cases): never slower than the reference loop (min over cases of "
            f"min(off, auto) speed-up; worst {s['slowest case']})", v, ">= 1x", v >= 1.0)
        v, n = s["auto speed-up, eligible models at 192/256 (min)"], s["eligible cases at 192/256"]
        exact = s["maps exact (all cases, off and auto)"]
        add(f"suite: eligible models at 192/256 px, auto vs loop (min of {n} cases; maps exact: {exact})",
            v, ">= 5x, exact", n > 0 and v >= 5.0 and exact, na=n == 0)
        v = s["efficiency, full-forward path, cold (min)"]
        add(f"suite: efficiency of the full-forward path, every model (min, cold call incl. batch tuning; worst "
            f"{s['lowest efficiency case']}; median {s['efficiency, full-forward path, cold (median)']:.2f}; at the "
            f"chosen batch, tuning excluded: min {s['steady efficiency at the chosen batch (min)']:.2f})",
            v, ">= 0.85", v >= 0.85)
    if "p" in results:
        s = results["p"]["summary"]
        at = s["size"] == 256
        where = "" if at else f" (ran at {s['size']} px: --quick)"
        goal = 10.0 if gpu else 5.0
        v = s["speed-up vs reference loop (min)"]
        add(f"256 px paper mode vs reference loop, eligible BN U-Net (min over images; maps exact: "
            f"{s['maps exact (paper and off vs loop)']}){where}", v, f">= {goal:g}x, exact",
            v >= goal and s["maps exact (paper and off vs loop)"], na=not at)
        limit = 2.0 if gpu else 60.0
        v = s["paper mode s (median)"]
        add(f"256 x 256 paper-mode map, RoI 32, S=3, N=50 (s; path {s['path']}){where}", v, f"< {limit:g} s",
            v < limit, na=not at)
        v = s["adaptive at equal SE s (median)"]
        add(f"256 x 256 adaptive map at paper's max SE (s){where}", v, "< 15 s", v < 15.0, na=not at)
    if "c" in results and "scale: sizes" in results["c"]["summary"]:
        s = results["c"]["summary"]
        exact = s["scale: maps identical (loop, MONAI, Captum vs pdcr_lab)"]
        for kind in ("eligible", "ineligible"):
            m, k = s[f"scale: {kind}, MONAI / pdcr_lab (min)"], s[f"scale: {kind}, Captum / pdcr_lab (min)"]
            v = C.nan_min([m, k])
            add(f"zero occlusion at {s['scale: sizes']} px, {kind} random U-Net: min(MONAI, Captum) time / pdcr_lab "
                f"(MONAI {m:.2f}x, Captum {k:.2f}x; maps identical: {exact})", v, ">= 3x, identical", v >= 3.0 and exact)
    return rows


def main() -> None:
    p = C.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--only", default="abcderosp", help="items to run, e.g. 'a,d' (default: all)")
    p.add_argument("--write", default=None, help="write the markdown report to this file")
    p.add_argument("--compile", action="store_true", help="include torch.compile in the options item")
    p.add_argument("--fp16", action="store_true", help="include float16 autocast in the options item")
    args = p.parse_args()
    device = C.setup(args)
    started = time.perf_counter()
    header = [
        f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on: {C.machine(device)}.",
        f"Command: `python benchmarks/run_all.py {' '.join(sys.argv[1:])}`",
    ]
    print("\n".join(header), flush=True)
    results, sections = {}, []
    for key in [k for k in args.only.replace(",", "") if k in ITEMS]:
        title, module = ITEMS[key]
        print(f"\n## {title}", flush=True)
        began = time.perf_counter()
        out = module.run(args)
        results[key] = out
        body = C.markdown(out["rows"], C.columns_of(out["rows"]))
        for name, rows in out.get("tables", {}).items():
            if rows:
                body += f"\n{name.capitalize()}:\n\n" + C.markdown(rows, C.columns_of(rows))
        summary = "\n".join(f"- {k}: {C._fmt(v)}" for k, v in out["summary"].items())
        minutes = (time.perf_counter() - began) / 60
        sections.append(f"### {title}\n\nModel: {out['model']}; device: {out['device']}; item wall time {minutes:.1f} min.\n\n"
                        f"{body}\n{summary}\n")
        print(summary + f"\n(item wall time {minutes:.1f} min)", flush=True)
    table = C.markdown(targets(results, device.type == "cuda"), ["target", "measured", "goal", "met"])
    elapsed = time.perf_counter() - started
    report = "\n".join(header) + f"\nSuite wall time: {elapsed / 60:.1f} min.\n\n## Targets\n\n{table}\n## Details\n\n" + "\n".join(sections)
    print("\n## Targets\n\n" + table)
    if args.write:
        Path(args.write).write_text(report)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
