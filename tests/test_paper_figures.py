"""Paper figures print at a journal width (3.5 or 7.2 in) with fonts of 7 pt or more and every label
inside the canvas, whatever is drawn; the curves share one y range; the style never switches the
matplotlib backend; files go to the user's figures folder."""

from __future__ import annotations

import itertools
import re

import matplotlib
import numpy as np
import pytest
import xarray as xr

import pdcr_lab
from pdcr_lab.viz import (
    PAPER_RC,
    components_figure,
    curves_figure,
    maps_figure,
    overlay_figure,
    paper_style,
    save_figure,
    strategies_figure,
)

WIDTHS = {"single": 3.5, "double": 7.2}


# -- small synthetic inputs ---------------------------------------------------------------------------------
def _map(seed: int, grid=(6, 6), block=4) -> xr.Dataset:
    ds = pdcr_lab.schema.empty_effects(grid=grid, block=block, model=f"model_{seed}", image_id="img_0001",
                                       dataset="lesions", coarse=3, fine=5, tau=0.02, intervention="natural")
    values = np.random.default_rng(seed).normal(size=grid)
    ds["ate"][:] = values
    ds["ate_raw"][:] = values
    ds["roi_row"], ds["roi_col"], ds["roi_height"], ds["roi_width"] = 8, 8, 8, 8
    return ds


def _image(side=24) -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(3, side, side))


def _curves(methods=("pdcr", "occlusion_zero", "gradcam_signed", "random"), policies=("natural", "zero", "blur")):
    rng = np.random.default_rng(1)
    steps = 11
    outcome = rng.uniform(0, 100, size=(len(methods), len(policies), 2, steps))
    outcome[1] *= 0.1  # one method far below the others: the shared range must show it
    return xr.Dataset(
        {"outcome": (("method", "policy", "curve", "step"), outcome, {"units": "DSC points"}),
         "auc": (("method", "policy", "curve"), outcome.mean(-1))},
        coords={"method": list(methods), "policy": list(policies), "curve": ["deletion", "insertion"],
                "step": np.arange(steps), "fraction": ("step", np.linspace(0, 1, steps))},
    )


def _components(datasets=("lesions", "vessels"), layers=7) -> xr.Dataset:
    rng = np.random.default_rng(2)
    models = ["unet", "segnet", "attention_unet"]
    ate = rng.normal(size=(len(models), len(datasets), 2, layers))
    ate[0, :, :, -2:] = np.nan  # a model without the last stages: grey cells
    names = ["stem"] + [f"encoder{i}" for i in range(1, layers - 1)] + ["bottleneck"]
    return xr.Dataset({"ate": (("model", "dataset", "image", "layer"), ate, {"units": "DSC points"})},
                      coords={"model": models, "dataset": list(datasets), "image": [0, 1], "layer": names})


def _strategies() -> tuple[xr.Dataset, xr.Dataset]:
    from pdcr_lab.strategies import summarize

    rng = np.random.default_rng(3)
    models, sets, images, rings = ["unet", "segnet", "attention_unet"], ["lesions", "vessels"], 4, 6
    dims = ("model", "dataset", "image")
    shape = (len(models), len(sets), images)
    labels = rng.choice(["local", "global", "sequential", "mixed", "no effect"], size=shape)
    radial = rng.uniform(size=(*shape, rings))
    data = {"label": (dims, labels.astype(str)), "d50": (dims, rng.uniform(1, 4, size=shape)),
            "radial_mass": ((*dims, "ring"), radial), "mass": (dims, radial.sum(-1))}
    for name in ("near_share", "n_eff_fraction", "anisotropy", "balance", "structure_share", "path_mass"):
        data[name] = (dims, np.zeros(shape))
    result = xr.Dataset(data, coords={"model": models, "dataset": sets, "image": np.arange(images),
                                      "ring": np.arange(1, rings + 1)})
    return result, summarize(result, n_boot=20, seed=0)


def _overlay(layout):
    return overlay_figure(_map(0), _image(), title="unet on lesions img_0001: M0 = 85.3 DSC points", layout=layout)


def _maps(layout):
    maps = {f"architecture_{k}": _map(k) for k in range(5)}
    return maps_figure(maps, _image(), title="One RoI, five architectures, one colour scale", layout=layout)


def _curves_figure(layout):
    return curves_figure(_curves(), title="Deletion and insertion curves", layout=layout)


def _components_figure(layout):
    return components_figure(_components(), title="Stage-by-stage effects", layout=layout)


def _strategies_figure(layout):
    return strategies_figure(*_strategies(), title="Perceptual strategies", layout=layout)


FIGURES = {"overlay": _overlay, "maps": _maps, "curves": _curves_figure, "components": _components_figure,
           "strategies": _strategies_figure}


# -- what is drawn ------------------------------------------------------------------------------------------
def _drawn_texts(fig) -> list:
    """(text artist, its extent in pixels) of every non-empty text the canvas draws (hidden tick labels excluded)."""
    from matplotlib.text import Text

    drawn = []
    original = Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self, self.get_window_extent(renderer)))

    Text.draw = record
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    return drawn


def _pdf_width_inches(path) -> float:
    box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", path.read_bytes())
    return float(box.group(1)) / 72


@pytest.fixture
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


@pytest.mark.parametrize("layout", ["single", "double"])
@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_prints_at_journal_width_with_legible_text_inside(name, layout, tmp_path, close_figures):
    from PIL import Image

    fig = FIGURES[name](layout)
    paths = {p.suffix: p for p in save_figure(fig, name, tmp_path)}
    assert set(paths) == {".pdf", ".svg", ".png"}
    width = WIDTHS[layout]
    assert fig.get_size_inches()[0] == pytest.approx(width)
    assert _pdf_width_inches(paths[".pdf"]) == pytest.approx(width, abs=0.01)
    png = Image.open(paths[".png"])
    assert png.size[0] / png.info["dpi"][0] == pytest.approx(width, abs=0.01)
    assert fig.get_size_inches()[1] <= 9.5

    # every text artist (drawn or not) at 7 pt or more
    sizes = {t.get_text(): t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)}
    small = {text: size for text, size in sizes.items() if size < 7}
    assert not small, small
    # every drawn text inside the canvas (1 px tolerance)
    drawn = _drawn_texts(fig)
    assert len(drawn) > 5
    canvas = fig.bbox
    outside = [(t.get_text(), tuple(np.round(e.extents, 1))) for t, e in drawn
               if e.x0 < canvas.x0 - 1 or e.y0 < canvas.y0 - 1 or e.x1 > canvas.x1 + 1 or e.y1 > canvas.y1 + 1]
    assert not outside, (tuple(canvas.extents), outside)
    # text stays text in the vector files
    assert b"<text" in paths[".svg"].read_bytes() or b"<tspan" in paths[".svg"].read_bytes()


def test_default_layouts_follow_the_content(close_figures):
    """One map: one column; several panels: two columns (curves and strategies default to two)."""
    one_map = _map(0)
    assert [_overlay(None).get_figwidth(), _maps(None).get_figwidth(), _components_figure(None).get_figwidth(),
            curves_figure(_curves()).get_figwidth(), strategies_figure(*_strategies()).get_figwidth()] == [7.2] * 5
    assert maps_figure({"pdcr": one_map}).get_figwidth() == 3.5
    assert overlay_figure(one_map).get_figwidth() == 3.5
    assert components_figure(_components(datasets=("lesions",))).get_figwidth() == 3.5


def test_maps_colour_bar_and_its_label_are_inside_the_figure(tmp_path, close_figures):
    fig = maps_figure({"a": _map(1), "b": _map(2)}, _image(), layout="single")
    bar = fig.axes[-1]
    assert bar.get_label() == "<colorbar>"
    label = bar.xaxis.label
    assert label.get_text().startswith("ATE [")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    extent, canvas = label.get_window_extent(renderer), fig.bbox
    assert canvas.x0 - 1 <= extent.x0 and extent.x1 <= canvas.x1 + 1
    assert canvas.y0 - 1 <= extent.y0 and extent.y1 <= canvas.y1 + 1
    # under the grid of maps, not hanging beside it
    panels = [ax for ax in fig.axes if ax is not bar]
    assert bar.get_window_extent(renderer).y1 <= min(ax.get_window_extent(renderer).y0 for ax in panels) + 1
    # one symmetric scale shared by every map
    limits = {tuple(ax.images[-1].get_clim()) for ax in panels[1:]}
    assert len(limits) == 1 and next(iter(limits))[0] == -next(iter(limits))[1]


@pytest.mark.parametrize("layout", ["single", "double"])
def test_curves_share_the_outcome_range_and_one_legend_outside(layout, close_figures):
    fig = curves_figure(_curves(), layout=layout)
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 6
    assert len({ax.get_ylim() for ax in panels}) == 1
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in panels)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent(renderer)
    assert not any(legend.overlaps(ax.get_window_extent(renderer)) for ax in panels)
    for ax in panels:  # x tick labels of one panel never touch
        labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert all(a.x1 < b.x0 for a, b in itertools.pairwise(labels))


def test_paper_style_leaves_the_backend_alone():
    before = matplotlib.get_backend()
    with paper_style():
        assert matplotlib.rcParams["font.size"] == PAPER_RC["font.size"]
        inside = matplotlib.get_backend()
    assert inside == before == matplotlib.get_backend()


def test_bad_layout_is_refused_with_the_choices(close_figures):
    draws = [lambda: maps_figure({"a": _map(0)}, layout="wide"), lambda: overlay_figure(_map(0), layout="wide"),
             lambda: curves_figure(_curves(), layout="wide"), lambda: components_figure(_components(), layout="wide"),
             lambda: strategies_figure(*_strategies(), layout="wide")]
    expected = r"layout='wide' is not a paper layout; expected one of 'single' \(3.5 in\), 'double' \(7.2 in\)"
    for draw in draws:
        with pytest.raises(ValueError, match=expected):
            draw()


def test_panels_wrap_into_rows_up_to_a_page(close_figures):
    few = maps_figure({f"m{k}": _map(k) for k in range(4)}, layout="single")
    many = maps_figure({f"m{k}": _map(k) for k in range(8)}, layout="single")
    assert few.get_figwidth() == many.get_figwidth() == 3.5
    assert many.get_figheight() > few.get_figheight()
    with pytest.raises(ValueError, match=r"more than a page \(9.5 in\); draw fewer maps per figure, or use "
                                         r"layout='double'"):
        maps_figure({f"m{k}": _map(k) for k in range(30)}, layout="single")
    with pytest.warns(DeprecationWarning, match=r"panel_size=\.\.\.\) is ignored"):
        assert maps_figure({"a": _map(0)}, panel_size=2.6).get_figwidth() == 3.5


def test_components_refuse_columns_too_narrow_for_their_names(close_figures):
    with pytest.raises(ValueError, match=r"layout='single' leaves .* in per stage for 30 stages"):
        components_figure(_components(datasets=("lesions",), layers=30), layout="single")
    assert components_figure(_components(datasets=("lesions",), layers=30)).get_figwidth() == 7.2


def test_save_figure_writes_to_the_user_figures_folder(tmp_path, monkeypatch, close_figures):
    monkeypatch.setenv("PDCR_LAB_FIGURES", str(tmp_path / "figs"))
    fig = overlay_figure(_map(0), layout="single")
    paths = save_figure(fig, "one", formats=("png",))
    assert paths == [tmp_path / "figs" / "one.png"]
    from PIL import Image

    assert round(Image.open(paths[0]).info["dpi"][0]) == 300
