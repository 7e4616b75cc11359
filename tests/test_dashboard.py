"""pdcr_lab.dashboard: the ``pdcr-lab serve`` app's objects, driven without a browser
(``tests/test_browser.py`` drives it in Chromium). Its figures are tested in test_viz.py, its widgets
in test_widgets.py."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("holoviews")
pytest.importorskip("panel")

from pdcr_lab import load  # noqa: E402
from pdcr_lab.testing import FailingModel, assert_effects_equal  # noqa: E402


# -- the dashboard -----------------------------------------------------------------------------
@pytest.fixture
def dashboard(tmp_path, tiny96):
    from pdcr_lab.dashboard import Dashboard, ModelSource

    def load_model(name, dataset):
        if name == "broken":
            return FailingModel("the model exploded")
        return tiny96(1 if name == "tiny" else 4)

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
        assert_effects_equal(stored, app.current[label], variables=["ate"], rtol=0, atol=0)
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
