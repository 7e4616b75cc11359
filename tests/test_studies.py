"""Studies: the shared (model, dataset) loop, its resumable cells, the three studies on toy zoos and their
sub-commands, and the one-way flow (analysis packages import neither datasets, zoo, studies nor sweep)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import pdcr_lab
from pdcr_lab.storage import load
from pdcr_lab.components import format_summary, summarize as summarize_components
from pdcr_lab.strategies import LABELS, StrategyThresholds, format_table, label_maps, summarize as summarize_strategies
from pdcr_lab.studies import (
    CellStore,
    ComponentsSettings,
    FaithfulnessSettings,
    StrategiesSettings,
    cells_folder,
    components_study,
    faithfulness_study,
    grid,
    pick_rois,
    strategies_study,
)
from pdcr_lab.testing import CenterSurroundModel

pytestmark = pytest.mark.usefixtures("one_thread")
PACKAGE = Path(pdcr_lab.__file__).parent


# -- the loop ----------------------------------------------------------------------------------------
def test_pick_rois_takes_mixed_masks_or_the_given_indices():
    masks = np.zeros((4, 32, 32), dtype=bool)
    masks[1, 8:20, 8:20] = masks[2] = True
    masks[3, :, :16] = True
    assert [i for i, _ in pick_rois(masks, 5, roi_size=16, block=8)] == [1, 3]  # the all-foreground 2 is skipped
    assert pick_rois(masks, [3], roi_size=16, block=8) == [(3, (8, 8, 16, 16))]
    with pytest.raises(ValueError, match=r"images=\[7\] holds indices \[7\] out of range: the test split has 4"):
        pick_rois(masks, [7])


def test_grid_fills_the_pairs_that_were_not_run():
    cell = pdcr_lab.stack([pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)] * 2, "image", labels=[0, 1])
    cell["ate"][:] = -1.0
    cell["roi_block"][:] = False
    out = grid({("a", "x"): cell, ("b", "x"): cell, ("a", "y"): cell}, ["a", "b", "c"], ["x", "y", "z"])
    assert out.ate.dims == ("model", "dataset", "image", "block_y", "block_x")
    assert list(out.model.values) == ["a", "b"] and list(out.dataset.values) == ["x", "y"]
    assert np.isnan(out.ate.sel(model="b", dataset="y")).all() and int(out.n_draws.sel(model="b", dataset="y").sum()) == 0
    assert (out.ate.sel(model="a", dataset="y") == -1.0).all()


def test_cell_store_reuses_only_cells_with_the_same_key(tmp_path):
    cell = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    store = CellStore(tmp_path, {"fine": 2}, reuse=True)
    store.put("m", "d", cell, {"sha256": "abc"}, {"seconds": 2.0, "test_dice": 0.9})
    back, facts = store.get("m", "d", {"sha256": "abc"})
    xr.testing.assert_identical(back, cell)
    assert facts == {"seconds": 2.0, "test_dice": 0.9}
    assert store.get("m", "d", {"sha256": "retrained"}) is None
    assert CellStore(tmp_path, {"fine": 3}, reuse=True).get("m", "d", {"sha256": "abc"}) is None
    assert CellStore(tmp_path, {"fine": 2}).get("m", "d", {"sha256": "abc"}) is None  # not resuming
    assert cells_folder(tmp_path / "out.nc") == tmp_path / ".out.cells"


# -- components --------------------------------------------------------------------------------------
class Staged(nn.Module):
    """Declared stages (encoder, bottleneck, decoder, optional extra decoder, head) on 96 x 96 images."""

    def __init__(self, extra: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.enc1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.bottleneck = nn.Conv2d(4, 4, 3, 2, 1)
        self.extra = nn.Conv2d(4, 4, 1) if extra else nn.Identity()
        self.dec1 = nn.Upsample(scale_factor=4)
        self.head = nn.Conv2d(4, 1, 1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.4

    def forward(self, x):
        return torch.sigmoid(self.head(self.dec1(self.extra(self.bottleneck(self.enc1(x - 0.5))))))

    def stages(self):
        roles = {"enc1": "encoder", "bottleneck": "bottleneck", "dec1": "decoder", "head": "head"}
        return roles | ({"extra": "decoder"} if isinstance(self.extra, nn.Conv2d) else {})


def _staged_loader(name, dataset):
    if name == "gone":
        raise FileNotFoundError("no checkpoint")
    return Staged(extra=name == "b").eval(), {"sha256": name}


def test_components_study_stacks_models_datasets_and_images(tmp_path):
    settings = ComponentsSettings(images=2, donors=2, coarse=1, fine=2)
    store = CellStore(tmp_path / "cells", settings.cell_key())
    report, missing = components_study(["a", "b", "gone"], ["lesions"], settings=settings, loader=_staged_loader,
                                       store=store, echo=lambda s: None)
    assert missing == ["gone/lesions"]
    assert report.ate.dims == ("model", "dataset", "image", "layer")
    assert list(report.layer.values) == ["encoder1", "bottleneck", "decoder1", "decoder2"]
    a = report.sel(model="a", dataset="lesions")
    assert np.isnan(a.ate.sel(layer="decoder2")).all() and a.layer_path.sel(layer="decoder2").item() == ""
    assert report.sel(model="b").layer_path.sel(layer="decoder1").item() == "extra"
    assert report.attrs["report_settings"].startswith("ComponentsSettings(images=2")
    assert report.attrs["seed"] == settings.seed and report.attrs["fine"] == 2  # every draw's seed is recorded
    rows = summarize_components(report)
    assert [(r["model"], r["stages"]) for r in rows] == [("a", 3), ("b", 4)]
    assert "top stage" in format_summary(rows)
    back = pdcr_lab.load(pdcr_lab.save(report, tmp_path / "components.nc"))
    xr.testing.assert_allclose(back.ate, report.ate)
    # Resuming reads both cells back instead of explaining again, and gives the same result.
    lines: list[str] = []
    resumed, _ = components_study(["a", "b", "gone"], ["lesions"], settings=settings, loader=_staged_loader,
                                  store=CellStore(tmp_path / "cells", settings.cell_key(), reuse=True),
                                  echo=lines.append)
    assert sum("reused" in line for line in lines) == 2
    xr.testing.assert_allclose(resumed.ate, report.ate)


def test_cli_registers_the_studies_commands():
    from pdcr_lab.cli import build_parser

    args = build_parser().parse_args(["components", "--models", "unet", "--images", "1"])
    assert args.models == ["unet"] and args.images == 1 and str(args.out).endswith("components.nc")
    assert args.fine == ComponentsSettings().fine and args.roi_size == pdcr_lab.defaults.WORKING.roi_size
    args = build_parser().parse_args(["strategies", "--resume"])
    assert args.resume and args.fine == 50 and args.images == 32 and args.bootstrap == 2000
    assert args.datasets == ["lesions", "vessels", "brain"] and args.permutations == 9999
    args = build_parser().parse_args(["benchmark", "faithfulness", "--images", "0", "3"])
    assert args.images == [0, 3] and args.fine == 5 and args.min_images_per_s == 5.0


# -- strategies --------------------------------------------------------------------------------------
def test_strategies_study_end_to_end_with_toy_zoo(monkeypatch, tmp_path):
    from pdcr_lab import zoo
    from pdcr_lab.cli import main

    toys = {"box": 3, "box5": 5, "box9": 9}
    monkeypatch.setattr(zoo, "list", lambda: ["box"])
    monkeypatch.setattr(zoo, "load", lambda name, d: (CenterSurroundModel(toys[name], channels=3), {"test_dice": 0.5}))
    settings = StrategiesSettings(images=1, fine=2, n_boot=50)
    cells = tmp_path / "cells"
    maps, skipped = strategies_study(None, ("lesions", "vessels"), settings=settings, store=CellStore(cells, settings.cell_key()),
                                     log=lambda line: None)
    assert skipped == {}
    assert maps.ate.dims == ("model", "dataset", "image", "block_y", "block_x")
    assert float(maps.model_test_dice.sel(model="box", dataset="lesions")) == 0.5
    result = label_maps(maps)
    assert set(np.unique(result.label.values)) <= set(LABELS)
    assert "structure_mask" in result and result.attrs["fine"] == 2 and result.attrs["seed"] == settings.seed
    strict = label_maps(result, StrategyThresholds(dominance=1.0))  # relabelling replaces the labels
    assert strict.attrs["threshold_dominance"] == 1.0
    assert set(np.unique(strict.label.values)) <= {"mixed", "no effect", "local", "global", "sequential"}
    assert (strict.confidence <= result.confidence).all()
    out = tmp_path / "strategies.nc"
    pdcr_lab.save(result, out)
    # Resuming reuses the stored cells and explains only the model that is new.
    lines: list[str] = []
    reused, _ = strategies_study(["box", "box5"], ("lesions", "vessels"), settings=settings,
                                 store=CellStore(cells, settings.cell_key(), reuse=True), log=lines.append)
    assert sum("reused" in line for line in lines) == 2 and sum("images in" in line for line in lines) == 2
    xr.testing.assert_equal(reused.ate.sel(model=["box"]), maps.ate)
    # Combining what is stored computes nothing: the pair without a cell is listed, not explained.
    lines.clear()
    combined, missing = strategies_study(["box", "box5", "box9"], ("lesions", "vessels"), settings=settings,
                                         store=CellStore(cells, settings.cell_key(), stored_only=True), log=lines.append)
    assert not any("images in" in line for line in lines)
    assert set(missing) == {("box9", "lesions"), ("box9", "vessels")} and "stored cells only" in missing["box9", "lesions"]
    assert "box9" not in combined.model.values and bool(combined.explained.sel(model="box5").all())
    assert list(reused.model.values) == ["box", "box5"]
    pdcr_lab.save(label_maps(reused), tmp_path / "again.nc")
    summary = summarize_strategies(result, n_boot=50)
    table = format_table(summary, result, command="test")
    assert "| box | lesions | 1 |" in table and "TVD" in table
    # The command relabels and summarises a stored result without explaining anything again.
    argv = ["strategies", "--relabel", "--out", str(out), "--table", str(tmp_path / "t.md"),
            "--figure", str(tmp_path / "f.png"), "--images", "1", "--bootstrap", "50", "--permutations", "99"]
    assert main(argv) == 0
    assert (tmp_path / "t.md").read_text().startswith("# Perceptual strategies")
    assert "## Do strategies differ?" in (tmp_path / "t.md").read_text()
    stored = pdcr_lab.load(out)   # the tests are stored with the maps, and relabelling replaces them
    assert stored.attrs["het_n_perm"] == 99 and "het_arch_p" in stored and "het_shift_p_holm" in stored
    assert main(argv) == 0 and pdcr_lab.load(out)["het_arch_p"].dims == ("dataset", "measure")
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_missing_checkpoints_are_skipped_and_reported(monkeypatch):
    from pdcr_lab import zoo

    def load(name, dataset):
        if name == "absent" or (name == "half" and dataset == "vessels"):
            raise FileNotFoundError(f"no checkpoint for {name!r} on {dataset!r}")
        return CenterSurroundModel(k=3, channels=3), {}

    monkeypatch.setattr(zoo, "list", lambda: ["box", "half", "absent"])
    monkeypatch.setattr(zoo, "load", load)
    settings = StrategiesSettings(images=1, fine=2)
    maps, skipped = strategies_study(None, ("lesions", "vessels"), settings=settings, log=lambda s: None)
    assert list(maps.model.values) == ["box", "half"]
    assert set(skipped) == {("absent", "lesions"), ("absent", "vessels"), ("half", "vessels")}
    assert maps["explained"].values.tolist() == [[True, True], [True, False]]
    result = label_maps(maps)
    assert str(result.label.sel(model="half", dataset="vessels", image=0).values) == "not explained"
    summary = summarize_strategies(result, n_boot=20)
    assert int(summary.n_maps.sel(model="half", dataset="vessels")) == 0
    assert np.isnan(summary.share.sel(model="half", dataset="vessels")).all()
    assert np.isnan(summary.tvd.sel(model="half")).all() and not np.isnan(summary.tvd.sel(model="box")).any()
    table = format_table(summary, result, skipped=skipped)
    assert "| half | vessels | 0 | not explained |" in table and "half (vessels); absent (lesions, vessels)" in table


# -- faithfulness ------------------------------------------------------------------------------------
class Tiny3(nn.Module):
    """A random 3-channel CNN for the benchmark plumbing (96 x 96 images)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 1, 5, padding=2)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5

    def forward(self, x):
        return torch.sigmoid(self.b(torch.tanh(self.a(x - 0.5))) + 0.3)


def refusing_explainer(model, image, *, roi, target=None, seed=0, device=None, **options):
    """An explainer that does not apply to any model (reached by the import path ``test_studies:...``)."""
    raise ValueError("this method needs a transformer")


def test_faithfulness_study_plumbing_table_and_resume(tmp_path, monkeypatch):
    from pdcr_lab import zoo
    from pdcr_lab.faithfulness import summarize, write_table

    def load(name, dataset):
        if name == "absent":
            raise FileNotFoundError("no checkpoint")
        return Tiny3().eval(), {"images_per_s": 1.0 if name == "slow" else 100.0}

    monkeypatch.setattr(zoo, "load", load)
    refusing = f"{__name__}:refusing_explainer"
    settings = FaithfulnessSettings(images=(0, 1), methods=("occlusion_zero", "gradcam", "random", refusing), steps=5,
                                    sanity_images=1, min_images_per_s=10)
    store = CellStore(tmp_path / "cells", settings.cell_key())
    res = faithfulness_study(["tiny", "absent", "slow"], ["lesions"], settings, store=store)
    assert res.auc.dims == ("model", "dataset", "image", "method", "policy", "curve")
    assert res.auc.shape == (1, 1, 2, 4, 3, 2) and np.isfinite(res.auc.values[:, :, :, :3]).all()
    assert list(res.image.values) == [0, 1] and (res.forwards.values[..., :3] > 0).all()
    assert np.isnan(res.auc.sel({"method": refusing})).all() and (res.forwards.sel({"method": refusing}) == -1).all()
    assert json.loads(res.attrs["failures"]) == {f"tiny/lesions/{refusing}": "this method needs a transformer"}
    assert json.loads(res.attrs["missing"]) == ["absent/lesions"]
    assert json.loads(res.attrs["skipped"]) == ["slow/lesions (1.0 images/s)"]
    assert res.spearman.sel({"method": "random"}).values.ravel().tolist() == [1.0]
    summary = summarize(res, n_boot=200)
    cell = {"model": "tiny", "dataset": "lesions", "method": "gradcam", "metric": "deletion_zero"}
    mean, lo, hi = summary.summary.sel(cell).values
    assert lo <= mean <= hi
    path = write_table(res, summary, tmp_path / "table.md", command="test")
    text = path.read_text()
    assert "## Overall: lesions" in text and "absent/lesions" in text and "| gradcam |" in text
    assert "slow/lesions" in text and "randomised map constant" in text
    again = faithfulness_study(["tiny"], ["lesions"], settings,
                               store=CellStore(tmp_path / "cells", settings.cell_key(), reuse=True))
    xr.testing.assert_allclose(again.auc, res.auc)
    xr.testing.assert_allclose(again.seconds, res.seconds)  # read back, not measured again
    assert again.attrs["failures"] == res.attrs["failures"] and again.attrs["seed"] == settings.seed


def test_benchmark_command_writes_the_result_and_the_table(tmp_path, monkeypatch):
    from pdcr_lab import zoo
    from pdcr_lab.cli import main

    monkeypatch.setattr(zoo, "load", lambda name, dataset: (Tiny3().eval(), {}))
    out, table = tmp_path / "faithfulness.nc", tmp_path / "table.md"
    argv = ["benchmark", "faithfulness", "--models", "tiny", "--datasets", "lesions", "--images", "0", "1",
            "--fine", "2", "--rise-masks", "10", "--misure-steps", "2", "--steps", "3", "--sanity-images", "0",
            "--planted-images", "0", "--out", str(out), "--table", str(table), "--quiet"]
    assert main(argv) == 0
    result = load(out, effects=False)  # checksummed like every stored result
    assert set(result["method"].values) >= {"pdcr", "gradcam", "misure", "rise", "random"}
    assert result.attrs["paired_n_boot"] == 2000 and "paired_p_holm" in result
    assert result.summary.dims == ("model", "dataset", "method", "metric", "stat")
    assert "--fine 2" in result.attrs["command"] and "## Per model" in table.read_text()
    assert (cells_folder(out) / "lesions" / "tiny.nc").exists()


# -- one-way flow ------------------------------------------------------------------------------------
FORBIDDEN = ("datasets", "zoo", "studies", "sweep")


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module a source file imports (at any depth, lazy ones included), as absolute dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", ["components", "strategies", "faithfulness"])
def test_analysis_packages_import_neither_datasets_nor_zoo(package):
    offending = {}
    for path in sorted((PACKAGE / package).glob("*.py")):
        bad = sorted(n for n in _imported_modules(path, f"pdcr_lab.{package}")
                     if any(n == f"pdcr_lab.{f}" or n.startswith(f"pdcr_lab.{f}.") for f in FORBIDDEN))
        if bad:
            offending[path.name] = bad
    assert offending == {}, f"analysis modules of pdcr_lab.{package} import {offending}"


def test_the_import_check_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from .. import zoo\n    from ..datasets import load\n")
    names = _imported_modules(source, "pdcr_lab.components")
    assert {"pdcr_lab.zoo", "pdcr_lab.datasets"} <= names
