"""The interactive layer: holoviews figures, notebook widgets and the dashboard's app objects.

Everything runs without a browser: plots are checked through their holoviews dimensions and data,
the dashboard through its widgets and state (``tests/test_browser.py`` drives it in Chromium).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytest.importorskip("holoviews")
pytest.importorskip("panel")

import holoviews as hv  # noqa: E402

from pdcr_lab import explain, load, stack, statistics  # noqa: E402
from pdcr_lab.viz import _holoviews as hvz  # noqa: E402
from pdcr_lab.viz import symmetric_limit  # noqa: E402
from pdcr_lab.widgets import ExplainRunner, RoiPicker, readable_error, snap_roi, stats_values, statistics_html  # noqa: E402


class Tiny96(torch.nn.Module):
    """A fixed random CNN for 96 x 96 RGB images whose output hovers around 0.5 (non-trivial maps)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Conv2d(3, 4, 5, padding=4, dilation=2)
        self.b = torch.nn.Conv2d(4, 1, 5, padding=2)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5

    def forward(self, x):
        return torch.sigmoid(self.b(torch.tanh(self.a(x - 0.5))))


class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("the model exploded")


@pytest.fixture(scope="module")
def lesions():
    from pdcr_lab import datasets

    return datasets.load("lesions")


@pytest.fixture(scope="module")
def maps(lesions):
    image, target = lesions.images("test")[0], lesions.masks("test")[0]
    a = explain(Tiny96(1), image, roi=(40, 40, 16, 16), target=target, bank=lesions.bank, fine=4, intervention="zero")
    b = explain(Tiny96(4), image, roi=(40, 40, 16, 16), target=target, bank=lesions.bank, fine=4, intervention="zero")
    return image, a, b


# -- holoviews figures -------------------------------------------------------------------------
def test_map_image_is_a_pixel_image_on_a_symmetric_scale(maps):
    _, a, _ = maps
    plot = hvz.map_image(a)
    image = plot.Image.I
    assert [d.name for d in image.kdims] == ["x", "y"]
    assert [d.name for d in image.vdims] == ["ate"]
    values = image.dimension_values("ate", flat=False)
    assert values.shape == (96, 96)
    # Row 0 of the map is the first block row of the result (no flip of the data).
    assert values[0, 0] == pytest.approx(float(a.ate[0, 0]))
    assert np.nanmax(np.abs(values)) == pytest.approx(float(abs(a.ate).max()))
    limit = symmetric_limit(a.ate)
    opts = hv.Store.lookup_options("bokeh", image, "plot").kwargs | hv.Store.lookup_options("bokeh", image, "style").kwargs
    assert tuple(opts["clim"]) == (-limit, limit)
    assert opts["cmap"] == "bwr_r"
    rect = plot.Rectangles.I.data
    assert (float(rect["x0"].iloc[0]), float(rect["y0"].iloc[0])) == (39.5, 39.5)  # RoI outline, pixel edges
    hv.render(plot, backend="bokeh")


def test_side_by_side_shares_one_colour_scale(maps):
    _, a, b = maps
    layout = hvz.side_by_side({"a": a, "b": b})
    limits = {tuple(hv.Store.lookup_options("bokeh", p.Image.I, "plot").kwargs["clim"]) for p in layout}
    expected = max(symmetric_limit(a.ate), symmetric_limit(b.ate))
    assert limits == {(-expected, expected)}
    stacked = hvz.side_by_side(stack({"m0": a, "m1": b}, dim="model"))
    assert [p.label for p in stacked] == [] or len(stacked) == 2
    hv.render(stacked, backend="bokeh")


def test_overlay_hides_irrelevant_blocks(maps):
    image, a, _ = maps
    plot = hvz.overlay(a, image)
    effect = plot.Image.I
    values = effect.dimension_values("ate", flat=False)
    zero = (a.ate.values == 0).repeat(8, 0).repeat(8, 1)
    assert np.isnan(values[zero]).all() and np.isfinite(values[~zero]).all()
    assert isinstance(plot.RGB.I, hv.RGB)
    hv.render(plot, backend="bokeh")


def test_composition_and_histogram_follow_statistics(maps):
    _, a, _ = maps
    st = statistics(a)
    bars = hvz.composition(a, kind="bars")
    assert [d.name for d in bars.kdims] == ["category"] and [d.name for d in bars.vdims] == ["blocks"]
    counts = dict(zip(bars.dimension_values("category"), bars.dimension_values("blocks")))
    assert counts == {"support": int(st.neg), "harm": int(st.pos), "irrelevant": int(st.zero)}
    pie = hvz.composition(a)
    assert [d.name for d in pie.vdims] == ["category", "blocks", "percent"]
    assert sum(p["blocks"] for p in pie.data) == 144 - int(a.roi_block.sum())
    hist = hvz.histogram(a)
    assert [d.name for d in hist.kdims] == ["bin"]
    assert list(hist.dimension_values("blocks")) == st.histogram.values.tolist()
    signs = list(hist.dimension_values("sign"))
    assert signs[0] == "support" and signs[-1] == "harm" and signs[4] == "irrelevant"
    with pytest.raises(ValueError, match="kind='donut' is not supported"):
        hvz.composition(a, kind="donut")
    for element in (bars, pie, hist):
        hv.render(element, backend="bokeh")


def test_radial_profile_is_the_strategies_mass_share(maps):
    from pdcr_lab.strategies import descriptors

    _, a, b = maps
    overlay = hvz.radial_profile({"a": a, "b": b}, dim="model")
    assert overlay.kdims[0].name == "model"
    curve = overlay["a"]
    assert [d.name for d in curve.kdims] == ["ring"] and [d.name for d in curve.vdims] == ["mass_share"]
    d = descriptors(a)
    expected = (d.radial_mass / d.mass).values
    np.testing.assert_allclose(curve.dimension_values("mass_share"), expected)
    assert hvz.radial_profile(stack({"a": a, "b": b}, dim="method")).kdims[0].name == "method"


def test_one_map_functions_refuse_stacks(maps):
    _, a, b = maps
    with pytest.raises(ValueError, match=r"select along \['model'\] first"):
        hvz.map_image(stack({"a": a, "b": b}, dim="model"))


# -- widgets -----------------------------------------------------------------------------------
def test_snap_roi_centres_the_roi_on_the_grid():
    assert snap_roi(47.0, 47.0, size=16, block=8, shape=(96, 96)) == (40, 40, 16, 16)
    assert snap_roi(30.0, 40.0, size=16, block=8, shape=(96, 96)) == (32, 24, 16, 16)
    assert snap_roi(0.0, 95.0, size=16, block=8, shape=(96, 96)) == (80, 0, 16, 16)  # clipped inside
    with pytest.raises(ValueError, match="size=128 does not fit"):
        snap_roi(1, 1, size=128, block=8, shape=(96, 96))


def test_roi_picker_click_and_new_image():
    picker = RoiPicker(np.zeros((3, 96, 96)), block=8)
    assert picker.roi == (40, 40, 16, 16)
    assert picker.click(30.0, 40.0) == (32, 24, 16, 16)
    assert picker.click(500.0, 10.0) == (32, 24, 16, 16)  # outside the image: ignored
    assert picker.click(None, None) == (32, 24, 16, 16)
    picker.set_image(np.zeros((1, 48, 48)))
    assert picker.roi == (32, 24, 16, 16) and picker.shape == (48, 48)
    picker.roi = (40, 40, 8, 8)
    picker.set_image(np.zeros((1, 32, 32)))
    assert picker.roi == (8, 8, 16, 16)  # no longer fits: re-centred
    view = picker.panel()
    plot = hv.render(picker.plot(), backend="bokeh")
    assert "tap" in plot.subscribed_events  # clicks reach the server
    assert view is not None


def test_readable_errors_say_what_to_do():
    assert readable_error(ValueError("roi=(1, 2) is bad")) == "Invalid input: roi=(1, 2) is bad"
    assert readable_error(RuntimeError("CUDA out of memory. Tried")).startswith("Out of memory: ")
    assert "smaller batch size" in readable_error(MemoryError())
    assert readable_error(RuntimeError("shape mismatch")) == "The model failed: shape mismatch"
    assert readable_error(ValueError("the model failed on the image: x")) == "The model failed on the image: x"
    assert readable_error(FileNotFoundError("no checkpoint")) == "File not found: no checkpoint"


def test_runner_keeps_results_and_reports_failures(maps, lesions):
    image, a, _ = maps
    seen = []
    runner = ExplainRunner()
    view = runner.panel()
    runner.on_result(lambda label, ds: seen.append(label))
    runner.explain(Tiny96(1), image, roi=(40, 40, 16, 16), target=lesions.masks("test")[0], bank=lesions.bank, fine=4, intervention="zero", label="first")
    ds = runner.wait()
    assert float(abs(ds.ate - a.ate).max()) == 0.0
    assert seen == ["first"] and runner.total > 0 and runner.percent == 100 and not runner.running
    bar, status = view
    assert bar.value == 100 and status.alert_type == "success"

    runner.explain(Tiny96(1), image, roi=(90, 90, 16, 16), bank=lesions.bank, label="bad roi")
    with pytest.raises(RuntimeError, match="out of bounds"):
        runner.wait()
    assert runner.error.startswith("Invalid input: roi=(90, 90, 16, 16)")
    assert status.alert_type == "danger" and "out of bounds" in status.object
    runner.explain(Broken(), image, roi=(40, 40, 16, 16), bank=lesions.bank, label="broken")
    with pytest.raises(RuntimeError, match="the model exploded"):
        runner.wait()
    assert list(runner.results) == ["first"]  # nothing computed is lost
    assert not runner.running


def test_statistics_html_shows_the_stored_numbers(maps):
    _, a, _ = maps
    text = statistics_html(a, title="unet")
    values = stats_values(a)
    shown = dict(re.findall(r'data-stat="(\w+)"[^>]*>([^<]*)<', text))
    assert shown["support"] == str(values["support"]) and shown["m0"] == f'{values["m0"]:.3f}'
    assert set(shown) <= set(values)
    assert values["support"] + values["harm"] + values["irrelevant"] == 144 - int(a.roi_block.sum())


# -- the dashboard -----------------------------------------------------------------------------
@pytest.fixture
def dashboard(tmp_path):
    from pdcr_lab.dashboard import Dashboard, ModelSource

    def load_model(name, dataset):
        if name == "broken":
            return Broken()
        return Tiny96(1 if name == "tiny" else 4)

    source = ModelSource(names=lambda dataset: ["tiny", "tiny2", "broken"], load=load_model)
    app = Dashboard(tmp_path / "results", models=source, fine=3)
    app.view()
    return app


def test_dashboard_explains_saves_and_shows(dashboard):
    app = dashboard
    assert app.models.value == ["tiny"] and app.image_select.options
    app.models.value = ["tiny", "tiny2"]
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    stacked = app.runner.wait()
    assert list(stacked.model.values) == ["tiny", "tiny2"]
    files = app.store.files()
    assert len(files) == 2 and app.files.options and not app.run_button.disabled
    for label in ("tiny", "tiny2"):
        stored = load(next(f for f in files if f.name.startswith(label + "_")))
        assert stored.attrs["model"] == label and stored.attrs["dataset"] == "lesions"
        assert float(abs(stored.ate - app.current[label].ate).max()) == 0.0
    assert len(app.maps.object) == 2  # side by side
    html = app.details.objects[0].objects[0].object
    assert re.search(f'data-stat="forwards"[^>]*>{int(app.current["tiny"].forwards)}<', html)
    # Same settings again: loaded from the folder, not recomputed.
    before = {f: f.stat().st_mtime_ns for f in files}
    app.run()
    app.runner.wait()
    assert {f: f.stat().st_mtime_ns for f in app.store.files()} == before


def test_dashboard_failures_leave_the_page_usable(dashboard):
    app = dashboard
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    app.runner.wait()
    kept = dict(app.current)
    app.models.value = ["broken"]
    app.run()
    with pytest.raises(RuntimeError, match="The model failed.*exploded"):
        app.runner.wait()
    assert app.message.alert_type == "danger" and "exploded" in app.message.object
    assert not app.run_button.disabled and app.current.keys() == kept.keys()
    app.models.value = ["tiny"]
    app.picker.roi = (88, 88, 16, 16)
    app.run()
    with pytest.raises(RuntimeError, match="out of bounds"):
        app.runner.wait()
    assert "Invalid input" in app.message.object
    app.models.value = []
    assert app.run() is None and "choose at least one model" in app.status


def test_dashboard_browses_and_exports(dashboard):
    app = dashboard
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    app.runner.wait()
    name = app.files.options[0]
    results = app.open_file(name)
    assert list(results) == ["tiny"] and app.current_image is not None
    assert "opened" in app.status
    png = app._png_bytes().getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = app._html_bytes().getvalue().decode()
    assert "<html" in page.lower() and "M0 (factual outcome)" in page
    # Self-contained: no script or stylesheet is fetched from the internet (icons may be).
    assert not re.findall(r'<script[^>]+src="https?://', page)
    assert not re.findall(r'<link[^>]+rel="stylesheet"[^>]+href="https?://', page)
    assert app.open_file("missing.nc") == {} and "could not open missing.nc" in app.status
    app.folder.value = str(app.store.folder.parent / "elsewhere")
    assert app.files.options == []


def test_dashboard_without_models_says_so(tmp_path):
    from pdcr_lab.dashboard import Dashboard, ModelSource

    app = Dashboard(tmp_path, models=ModelSource(names=lambda d: [], load=lambda n, d: None))
    assert app.models.options == [] and "no trained model" in app.status


def test_serve_command_is_registered():
    from pdcr_lab.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "5999", "--no-show"])
    assert args.port == 5999 and args.show is False and args.func.__name__ == "_run_serve"
    assert build_parser().parse_args(["serve"]).show is True
