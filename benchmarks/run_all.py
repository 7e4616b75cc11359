"""Run the whole benchmark suite and print (or write) the measured table.

    python benchmarks/run_all.py                      # everything, 3 images x 3 interleaved repeats
    python benchmarks/run_all.py --quick              # smoke run: 1 image, 1 repeat
    python benchmarks/run_all.py --only a,d           # some items
    python benchmarks/run_all.py --write docs/benchmarks.md

Items: a = paper mode vs the reference loop, b = adaptive vs paper, c = zero-occlusion vs MONAI and
Captum, d = engine efficiency, e = peak memory, r = several RoIs, o = speed options (bf16,
channels-last; compile and fp16 with --compile/--fp16 or on a GPU). Every ratio is measured within
this run on this machine, contenders interleaved; medians over images and repeats.
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
import bench_reference  # noqa: E402

ITEMS = {
    "a": ("(a) paper mode vs reference loop", bench_reference),
    "b": ("(b) adaptive vs paper", bench_adaptive),
    "c": ("(c) zero-occlusion vs MONAI / Captum", bench_occlusion),
    "d": ("(d) engine efficiency", bench_efficiency),
    "e": ("(e) peak memory", bench_memory),
    "r": ("several RoIs share forwards", bench_multiroi),
    "o": ("speed options", bench_options),
}


def targets(results: dict, gpu: bool) -> list[dict]:
    """The issue's targets, checked against this run's medians."""
    rows = []

    def add(name, value, goal, ok):
        rows.append({"target": name, "measured": value, "goal": goal, "met": "yes" if ok else "NO"})

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
    return rows


def main() -> None:
    p = C.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--only", default="abcdero", help="items to run, e.g. 'a,d' (default: all)")
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
        out = module.run(args)
        results[key] = out
        columns = list(dict.fromkeys(k for row in out["rows"] for k in row))
        body = C.markdown(out["rows"], columns)
        summary = "\n".join(f"- {k}: {C._fmt(v)}" for k, v in out["summary"].items())
        sections.append(f"### {title}\n\nModel: {out['model']}; device: {out['device']}.\n\n{body}\n{summary}\n")
        print(summary, flush=True)
    table = C.markdown(targets(results, device.type == "cuda"), ["target", "measured", "goal", "met"])
    elapsed = time.perf_counter() - started
    report = "\n".join(header) + f"\nSuite wall time: {elapsed / 60:.1f} min.\n\n## Targets\n\n{table}\n## Details\n\n" + "\n".join(sections)
    print("\n## Targets\n\n" + table)
    if args.write:
        Path(args.write).write_text(report)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
