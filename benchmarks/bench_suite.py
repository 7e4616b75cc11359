"""(s) The batch policy and the incremental path on models the engine was never tuned on.

Seven architectures with random weights (seed 0, not trained; built here): MONAI UNet with
BatchNorm, MONAI UNet with its default InstanceNorm, MONAI BasicUNet (InstanceNorm), MONAI SegResNet
(GroupNorm), MONAI AttentionUnet (BatchNorm blocks, InstanceNorm merges), a small ConvNeXt-style
net with LayerNorm (written below) and a plain FCN of 3 x 3 convolutions, at 96, 128, 192 and 256 px
(not every model at every size: see ``CASES``). Each net is wrapped in
:class:`_common.Calibrated` (sigmoid of the output minus its factual median) so that about half of the
factual image is foreground, and explained in ground-truth-free mode (``target=None``: the reference
is the model's own factual prediction) on a grid-aligned RoI on the prediction's border (16 px up to
128, 32 px above; M0 is checked > 0). Images: the ``lesions`` generator at each size, test image 0.
Draws: S = 3, N = 10 natural blocks from an 8-px bank cut from the train split of the same size,
block 8; where every block survives the screening (models that normalise over the whole image) the
large cases use the zero intervention instead (one forward per block), said in the table.

Per case, in one interleaved round (each contender once per repeat, engine caches cleared before each
call so every number is a *cold* first call: batch ladder timed, model traced, paths timed):

* the reference loop (:func:`pdcr_lab.testing.reference_explain`: a batch of 3, then one of N, per block);
* ``explain(incremental="off")``: the batch policy alone;
* ``explain(incremental="auto")``: the default, with the path it took, why, and the traced plan's
  ``flops_ratio`` (convolution work per perturbed image, incremental / full; n/a when not traced);
* the bare model's peak forwards/s over batch sizes 1..64 on the same input shape.

Efficiency = the off-path call's forwards/s / the peak; "steady" = the rate the engine measured at
the batch size it chose (tuning excluded) / the peak. Maps of both calls are compared with the loop's.
Repeats: ``--repeats`` (at most 2) up to 128 px, one above.

    python benchmarks/bench_suite.py [--repeats 2] [--cases 96:unet_bn,256:unet_in:zero]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

import _common as C

from pdcr_lab import explain
from pdcr_lab.incremental import eligibility
from pdcr_lab.interventions import draw_table
from pdcr_lab.rois import boundary_roi
from pdcr_lab.testing import reference_explain

COARSE, FINE, BLOCK = 3, 10, 8


# -- the models ---------------------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block as in the paper's code: depthwise 7 x 7, LayerNorm over channels, Linear MLP x4, GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) tensor (ConvNeXt's stem and down-sampling norm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtSeg(nn.Module):
    """A small ConvNeXt-style U-shaped segmenter: patchify stem, 3 stages, bilinear decoder with skips."""

    def __init__(self, cin: int = 3, dims: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, dims[0], 2, stride=2), ChannelNorm(dims[0]))
        self.enc = nn.ModuleList([ConvNeXtBlock(d) for d in dims])
        self.down = nn.ModuleList([nn.Sequential(ChannelNorm(a), nn.Conv2d(a, b, 2, stride=2)) for a, b in zip(dims, dims[1:])])
        self.fuse = nn.ModuleList([nn.Conv2d(b + a, a, 3, padding=1) for a, b in zip(dims, dims[1:])])
        self.head = nn.Conv2d(dims[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        for i in reversed(range(len(self.fuse))):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.gelu(self.fuse[i](torch.cat([x, skips[i]], 1)))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


def fcn(cin: int = 3, width: int = 16, depth: int = 6) -> nn.Module:
    """A plain fully convolutional net: `depth` 3 x 3 convolutions with ReLU at full resolution, 1 x 1 head."""
    layers: list[nn.Module] = []
    c = cin
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.Conv2d(c, 1, 1))


#: name -> (normalisation, description)
MODELS = {
    "unet_bn": ("BN", "MONAI UNet (16,32,64,128), 1 res unit, norm=batch"),
    "unet_in": ("IN", "MONAI UNet (16,32,64,128), 1 res unit, default instance norm"),
    "basicunet": ("IN", "MONAI BasicUNet features (16,16,32,64,128,16)"),
    "segresnet": ("GN", "MONAI SegResNet init_filters 8 (GroupNorm 8)"),
    "attunet": ("BN+IN", "MONAI AttentionUnet (16,32,64,128)"),
    "convnext": ("LN", "ConvNeXt-style, dims (16,32,64), Linear MLP"),
    "fcn": ("none", "6 x conv3x3(16) + ReLU, 1x1 head"),
}


def build(name: str) -> nn.Module:
    """A fresh random-weight model (seed 0), eval mode, one output channel of raw scores."""
    from monai.networks import nets

    torch.manual_seed(0)
    if name == "unet_bn":
        net = nets.UNet(2, 3, 1, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1, norm="batch")
    elif name == "unet_in":
        net = nets.UNet(2, 3, 1, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)
    elif name == "basicunet":
        net = nets.BasicUNet(2, 3, 1, features=(16, 16, 32, 64, 128, 16))
    elif name == "segresnet":
        net = nets.SegResNet(2, init_filters=8, in_channels=3, out_channels=1)
    elif name == "attunet":
        net = nets.AttentionUnet(2, 3, 1, channels=(16, 32, 64, 128), strides=(2, 2, 2))
    elif name == "convnext":
        net = ConvNeXtSeg()
    elif name == "fcn":
        net = fcn()
    else:
        raise KeyError(f"unknown suite model {name!r}; one of {sorted(MODELS)}")
    return net.eval()


#: (size, model, intervention). Every size has >= 3 models; BN, IN, GN and LN all appear. The zero
#: intervention where natural draws would cost 1 + 13 x (blocks) forwards (every block survives).
CASES: list[tuple[int, str, str]] = [
    (96, "unet_bn", "natural"), (96, "unet_in", "natural"), (96, "basicunet", "natural"),
    (96, "segresnet", "natural"), (96, "attunet", "natural"), (96, "convnext", "natural"), (96, "fcn", "natural"),
    (128, "unet_bn", "natural"), (128, "unet_in", "natural"), (128, "convnext", "natural"), (128, "fcn", "natural"),
    (192, "unet_bn", "natural"), (192, "fcn", "natural"), (192, "segresnet", "zero"), (192, "convnext", "zero"),
    (256, "unet_bn", "natural"), (256, "unet_in", "zero"), (256, "convnext", "zero"),
]
QUICK_CASES: list[tuple[int, str, str]] = [(96, "unet_bn", "natural"), (96, "unet_in", "zero")]


def roi_side(size: int) -> int:
    return 16 if size <= 128 else 32


def problem(name: str, size: int, device: torch.device, index: int = 0) -> dict:
    """Model (calibrated, on `device`), image, RoI on the factual prediction's border, 8-px bank."""
    data, bank = C.lesions_at(size, BLOCK)
    image = data.images("test")[index].to(device)
    model = C.Calibrated(build(name).to(device), image).eval()
    pred = C.factual_mask(model, image)
    roi = boundary_roi(pred.cpu(), size=roi_side(size), block=BLOCK)
    return {"model": model, "image": image, "roi": roi, "bank": bank, "pred": pred}


def _parse_cases(text: str | None, quick: bool) -> list[tuple[int, str, str]]:
    if not text:
        return QUICK_CASES if quick else CASES
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        out.append((int(parts[0]), parts[1], parts[2] if len(parts) > 2 else "natural"))
    return out


def run(args) -> dict:
    device = C.setup(args)
    rows = []
    for size, name, intervention in _parse_cases(getattr(args, "cases", None), args.quick):
        started = time.perf_counter()
        p = problem(name, size, device)
        model, image, roi, bank = p["model"], p["image"], p["roi"], p["bank"]
        zero = intervention == "zero"
        cells = (size // BLOCK) ** 2
        kw = dict(roi=roi, target=None, block=BLOCK, coarse=COARSE, fine=FINE, seed=0)
        kw.update(intervention="zero") if zero else kw.update(bank=bank)
        table = None if zero else draw_table(0, cells, COARSE + FINE, len(bank))
        blocks = None if zero else bank.blocks.to(device)
        runtimes: dict[str, dict] = {"off": {}, "auto": {}}

        def reference():
            return reference_explain(model, image, roi, target=None, bank_blocks=blocks, table=table, block=BLOCK,
                                     coarse=COARSE, fine=FINE)

        def engine(path: str):
            def go():
                C.clear_engine_caches()
                runtimes[path].clear()
                return explain(model, image, incremental=path, runtime=runtimes[path], **kw)
            return go

        repeats = min(args.repeats, 2) if size <= 128 else 1
        times: dict[str, list[float]] = {"reference": [], "off": [], "auto": []}
        outputs: dict = {}
        peaks: list[tuple[float, int]] = []
        for _ in range(repeats):
            for label, fn in (("reference", reference), ("off", engine("off")), ("auto", engine("auto"))):
                seconds, outputs[label] = C.timed(fn, device)
                times[label].append(seconds)
            peak, best, _ = C.peak_throughput(model, tuple(image.shape), device, sizes=C.PEAK_SIZES, seconds=0.3)
            peaks.append((peak, best))
        ref_map, ref_forwards = outputs["reference"]
        off, auto = outputs["off"], outputs["auto"]
        t_ref, t_off, t_auto = times["reference"], times["off"], times["auto"]
        peak = C.median([p for p, _ in peaks])
        rt_off, rt_auto = runtimes["off"], runtimes["auto"]
        chosen = rt_off.get("batch_size")
        steady = rt_off.get("tuned_seconds_per_job", {}).get(chosen)
        reason = str(auto.attrs["forward_path_reason"])
        eligible, why_not = eligibility(model, image)
        C.clear_engine_caches()
        row = {
            "size": size,
            "model": name,
            "norm": MODELS[name][0],
            "intervention": "zero" if zero else f"natural S={COARSE} N={FINE}",
            "roi": roi,
            "M0": float(off.m0),
            "forwards": int(off.forwards),
            "survivors": 0 if zero else int((off.n_draws.values == FINE).sum()),
            "reference s": C.median(t_ref),
            "off s": C.median(t_off),
            "auto s": C.median(t_auto),
            "off speed-up": C.median([r / o for r, o in zip(t_ref, t_off)]),
            "auto speed-up": C.median([r / a for r, a in zip(t_ref, t_auto)]),
            "auto path": auto.attrs["forward_path"],
            "eligible": "yes" if eligible else "no: " + why_not.split(" (node")[0] + " (" + why_not.split("): ", 1)[-1][:40] + ")",
            "batch off/auto": f"{chosen}/{rt_auto.get('batch_size')}",
            "cone flops ratio": _number(rt_auto.get("incremental_flops_ratio")),
            "ladder done (off)": rt_off.get("tuning_finished", ""),
            "peak fwd/s": peak,
            "peak batch": peaks[-1][1],
            "efficiency": (int(off.forwards) / C.median(t_off)) / peak,
            "steady efficiency": (1.0 / steady) / peak if steady else float("nan"),
            "max map diff off/auto": f"{C.np_max_abs(off.ate.values, ref_map):.2g}/{C.np_max_abs(auto.ate.values, ref_map):.2g}",
            "slower than loop": "+".join(k for k, v in (("off", t_off), ("auto", t_auto)) if C.median(v) > C.median(t_ref)),
            "auto path reason": _short(reason),
            "repeats": repeats,
            "case s": time.perf_counter() - started,
        }
        row["_exact"] = max(C.np_max_abs(off.ate.values, ref_map), C.np_max_abs(auto.ate.values, ref_map)) < 1e-3
        row["_forwards_equal"] = int(off.forwards) == int(ref_forwards) == int(auto.forwards)
        row["_eligible"] = bool(eligible)
        if float(off.m0) <= 0:
            row["auto path reason"] += " (M0 = 0: RoI not segmented)"
        rows.append(row)
        print(C.markdown(rows[-1:], [k for k in rows[-1] if not k.startswith("_")]), flush=True)
    return {"rows": rows, "summary": summary(rows), "model": "random-weight models, see the table and the script",
            "device": str(device)}


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _short(reason: str) -> str:
    """The engine's forward_path_reason, shortened for a table cell."""
    if reason.startswith("eligible"):
        parts = [part.strip() for part in reason.split(";")]
        return "; ".join(parts[1:]).replace("convolution work per perturbed image ", "conv work ")[:110] or "eligible"
    return reason[:110]


def summary(rows: list[dict]) -> dict:
    big_eligible = [r for r in rows if r["size"] >= 192 and r["_eligible"]]
    worst = min(rows, key=lambda r: min(r["off speed-up"], r["auto speed-up"])) if rows else None
    full_eff = [r["efficiency"] for r in rows]
    return {
        "cases": len(rows),
        "slowest vs loop: min(off, auto) speed-up": min(worst["off speed-up"], worst["auto speed-up"]) if worst else float("nan"),
        "slowest case": f"{worst['model']} {worst['size']} px" if worst else "n/a",
        "cases slower than the loop (off or auto)": sum(bool(r["slower than loop"]) for r in rows),
        "auto speed-up, eligible models at 192/256 (min)": C.nan_min([r["auto speed-up"] for r in big_eligible]),
        "eligible cases at 192/256": len(big_eligible),
        "maps exact (all cases, off and auto)": all(r["_exact"] for r in rows),
        "forward counts equal the loop's": all(r["_forwards_equal"] for r in rows),
        "efficiency, full-forward path, cold (min)": C.nan_min(full_eff),
        "efficiency, full-forward path, cold (median)": C.median(full_eff),
        "steady efficiency at the chosen batch (min)": C.nan_min([r["steady efficiency"] for r in rows]),
        "lowest efficiency case": (lambda r: f"{r['model']} {r['size']} px")(min(rows, key=lambda r: r["efficiency"])) if rows else "n/a",
    }


def main() -> None:
    p = C.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--cases", default=None, help="e.g. '96:unet_bn,256:unet_in:zero' (default: the full list)")
    args = p.parse_args()
    device = C.setup(args)
    print("machine:", C.machine(device))
    C.print_report(run(args))


if __name__ == "__main__":
    main()
