"""The input checks of issue 15, case by case: run against whichever pdcr_lab is first on sys.path.

    python scripts/input_checks.py            # one line per case: what explain returned or raised
"""
import warnings

import torch
from torch import nn
import pdcr_lab
warnings.filterwarnings("ignore")

class Smooth(nn.Module):
    def __init__(self, c=1):
        super().__init__(); self.conv = nn.Conv2d(c, 1, 3, padding=1, bias=False); nn.init.constant_(self.conv.weight, 1 / (9 * c))
        self.drop = nn.Dropout(0.0)
    def forward(self, x): return torch.sigmoid(20 * (self.drop(self.conv(x)) - 0.5))

class NaNModel(Smooth):
    def __init__(self, always): super().__init__(); self.always = always
    def forward(self, x):
        out = super().forward(x); dark = (x[:, :, :4, :4].mean(dim=(1, 2, 3)) < 0.05) | self.always
        return torch.where(dark[:, None, None, None], torch.full_like(out, float("nan")), out)

class Folder(nn.Module):
    def forward(self, x): return torch.sigmoid(x.mean(1, keepdim=True))[:1].expand(1, 1, *x.shape[2:]) if x.shape[0] > 1 else torch.sigmoid(x.mean(1, keepdim=True)).repeat(2, 1, 1, 1)

g = torch.Generator().manual_seed(0)
img = 0.1 + 0.2 * torch.rand(1, 16, 16, generator=g); img[:, 5:13, 5:13] += 0.6
bank = pdcr_lab.PatchBank(torch.rand(10, 1, 4, 4, generator=g))
kw = dict(roi=(4, 4, 4, 4), block=4, fine=4, bank=bank)

def run(label, fn):
    try:
        out = fn()
        print(f"{label}|returned: {out}")
    except Exception as exc:
        print(f"{label}|{type(exc).__name__}: {str(exc)[:150]}")

def summary(ds):
    return f"M0={float(ds.m0):.1f}, {int((ds.ate < 0).sum())} support / {int((ds.ate > 0).sum())} harm blocks"

ref = pdcr_lab.explain(Smooth(), img, **kw)
run("float image in [0,1] (reference)", lambda: summary(ref))
run("uint8 image 0-255", lambda: summary(pdcr_lab.explain(Smooth(), (img * 255).round().to(torch.uint8), **kw)))
run("float image in 0-255", lambda: summary(pdcr_lab.explain(Smooth(), img * 255, **kw)))
run("float image in [-1,1]", lambda: summary(pdcr_lab.explain(Smooth(), img * 2 - 1, **kw)))
run("bank in 0-255", lambda: summary(pdcr_lab.explain(Smooth(), img, **{**kw, "bank": pdcr_lab.PatchBank(bank.blocks * 255)})))
run("NaN output for the factual image", lambda: summary(pdcr_lab.explain(NaNModel(True), img, **{**kw, "intervention": "zero"})))
run("NaN output for some perturbed images", lambda: summary(pdcr_lab.explain(NaNModel(False), img, **{**kw, "intervention": "zero", "tau": 0.0})))
run("output with the wrong batch size", lambda: summary(pdcr_lab.explain(Folder(), img, **{**kw, "intervention": "zero"})))
run("class_index=1.5", lambda: summary(pdcr_lab.explain(nn.Conv2d(1, 2, 1), img, class_index=1.5, **kw)))
run("HWC image (16, 16, 3)", lambda: summary(pdcr_lab.explain(Smooth(3), img.permute(1, 2, 0).expand(16, 16, 3).contiguous(), **{**kw, "bank": None, "intervention": "zero"})))
run("float RoI (4.5, 4, 4, 4)", lambda: summary(pdcr_lab.explain(Smooth(), img, **{**kw, "roi": (4.5, 4, 4, 4)})))
def dropout_kept():
    m = Smooth().eval(); m.drop.train(); pdcr_lab.explain(m, img, **kw); return f"Dropout.training after the call = {m.drop.training}"
run("submodule kept in train mode", dropout_kept)
def meta():
    m = Smooth()
    try: pdcr_lab.explain(m, img, device="meta", **kw)
    except Exception as exc: return f"{type(exc).__name__}: {str(exc)[:90]} | model on {m.conv.weight.device}, weight finite={bool(torch.isfinite(m.conv.weight).all()) if m.conv.weight.device.type != 'meta' else 'gone'}"
    return "no error"
run("device='meta'", meta)
run("device='cuda' on CPU-only torch", lambda: summary(pdcr_lab.explain(Smooth(), img, device="cuda", **kw)))
