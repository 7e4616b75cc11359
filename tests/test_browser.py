"""The dashboard in a real headless Chromium, driven like a person would (Playwright).

``pdcr-lab serve`` runs in a subprocess on a free localhost port; the browser loads the page, clicks
an RoI on the image, presses *Explain*, waits for the map, and checks that the map is drawn and that
the statistics on the page are those of the result file the dashboard saved. Every request that
leaves localhost is refused, so the page must work offline. A screenshot goes to the test's temporary
folder, or to ``$PDCR_LAB_SCREENSHOT`` (e.g. docs/dashboard.png) when that is set.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package (its own
browser download is never used); skipped otherwise, and when the zoo has no trained ``unet``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from browser import OVERFLOWING, free_port, needs_chromium, offline_browser, serving

MODEL, DATASET = "unet", "lesions"

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("playwright")
    pytest.importorskip("panel")
    from pdcr_lab.dashboard._app import _zoo_names

    if MODEL not in _zoo_names(DATASET):
        pytest.skip(f"the zoo has no trained {MODEL!r} on {DATASET!r} (train it with `pdcr-lab zoo train`)")
    results = tmp_path_factory.mktemp("results")
    port = free_port()
    cmd = [sys.executable, "-m", "pdcr_lab.cli", "serve", "--port", str(port), "--no-show",
           "--results", str(results), "--fine", "5"]
    with serving(cmd, port, "pdcr-lab serve", env=os.environ | {"MPLBACKEND": "Agg"}):
        yield f"http://localhost:{port}/", results


@pytest.fixture(scope="module")
def page(server):
    url, _ = server
    with offline_browser(1280, 900) as (context, refused):
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url, wait_until="networkidle", timeout=120_000)
        page.refused, page.errors = refused, errors
        yield page


# The bokeh figure with a given title: its position on the page and the data -> pixel mapping.
FIGURE = """([title, points]) => {
  for (const v of Bokeh.index.all_views()) {
    const m = v.model;
    if (m.title && m.title.text === title && m.x_range && v.frame) {
      const box = v.el.getBoundingClientRect();
      const frame = v.frame.bbox;
      return {
        box: [box.left, box.top, box.width, box.height],
        frame: [box.left + frame.left, box.top + frame.top, frame.width, frame.height],
        points: points.map(([x, y]) => [box.left + v.frame.x_scale.compute(x), box.top + v.frame.y_scale.compute(y)]),
      };
    }
  }
  return null;
}"""

# True once the page's number inputs, in page order, contain `expected` (panel nests shadow roots).
INPUTS_SHOW = """(expected) => {
  const values = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'INPUT') values.push(el.value);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return values.join(',').includes(expected);
}"""

# The values of the first Image glyph of a figure (the drawn effect map), row-major.
IMAGE_DATA = """(title) => {
  for (const v of Bokeh.index.all_views()) {
    const m = v.model;
    if (m.title && m.title.text === title && m.renderers) {
      for (const r of m.renderers) {
        if (r.glyph && r.glyph.type === 'Image') {
          const data = r.data_source.data;
          const image = data.image[0];
          return {values: Array.from(image), shape: image.shape || null};
        }
      }
    }
  }
  return null;
}"""


def test_dashboard_in_chromium(server, page, tmp_path):
    from pdcr_lab import datasets, load
    from pdcr_lab.rois import boundary_roi
    from pdcr_lab.widgets import _STAT_ROWS, stats_values

    _, results = server
    page.wait_for_function(
        "() => window.Bokeh && Bokeh.index.all_views().some(v => v.model.title && v.model.title.text === 'click to place the RoI')",
        timeout=60_000,
    )
    # The default RoI sits on the target's border; click one block to the right of it.
    data = datasets.load(DATASET)
    row, col, h, w = boundary_roi(data.masks("test")[0], size=16, block=8)
    col = col + 8 if col + 8 + w <= 96 else col - 8
    where = page.evaluate(FIGURE, ["click to place the RoI", [[col + w / 2 - 0.5, row + h / 2 - 0.5]]])
    assert where is not None, "the RoI picker image is not on the page"
    page.mouse.click(*where["points"][0])

    # The click travels to the server and back: the typed-RoI boxes follow it.
    page.wait_for_function(INPUTS_SHOW, arg=f"{row},{col},{h},{w}", timeout=30_000)
    page.get_by_role("button", name="Explain").click()
    page.locator(f'.pdcr-result[data-model="{MODEL}"] [data-stat="m0"]').wait_for(timeout=240_000)
    page.wait_for_function(f"() => Bokeh.index.all_views().some(v => v.model.title && v.model.title.text === '{MODEL}')")
    page.wait_for_timeout(1000)  # let bokeh paint

    # The saved result is the one of the clicked RoI.
    files = sorted(results.glob("*.nc"))
    assert [f.name for f in files] == [f.name for f in files if f"_r{row}_c{col}_{h}x{w}_" in f.name] and len(files) == 1
    stored = load(files[0])
    assert (int(stored.roi_row), int(stored.roi_col)) == (row, col)

    # The statistics on the page are the stored result's.
    shown = {
        key: page.locator(f'.pdcr-result[data-model="{MODEL}"] [data-stat="{key}"]').inner_text().strip()
        for key, _, _ in _STAT_ROWS
    }
    values = stats_values(stored)
    assert shown == {key: fmt.format(values[key]) for key, _, fmt in _STAT_ROWS}

    # The map is drawn: the figure's image holds the stored map (pixels) and has coloured blocks.
    drawn = page.evaluate(IMAGE_DATA, MODEL)
    assert drawn is not None, "no effect map image on the page"
    expected = np.repeat(np.repeat(stored.ate.values, 8, 0), 8, 1)
    np.testing.assert_allclose(np.asarray(drawn["values"], dtype=float).reshape(96, 96), expected, rtol=1e-5, atol=1e-6)
    box = page.evaluate(FIGURE, [MODEL, []])
    x, y, width, height = box["frame"]
    shot = page.screenshot(clip={"x": x, "y": y, "width": width, "height": height}, full_page=True)
    from io import BytesIO

    from PIL import Image

    pixels = np.asarray(Image.open(BytesIO(shot)).convert("RGB")).astype(int)
    coloured = ((pixels[..., 0] > 180) & (pixels[..., 2] < 140)) | ((pixels[..., 2] > 180) & (pixels[..., 0] < 140))
    if np.any(stored.ate.values != 0):
        assert coloured.sum() > 50, "the map has effects but no red or blue block is drawn"

    # The page stays usable: the button is enabled again for the next run.
    assert page.get_by_role("button", name="Explain").is_enabled()
    # The results folder box says that results are confined to the results root.
    assert page.get_by_text("Results are confined to the results root").count() == 1

    # Nothing is cut off or scrolls sideways in a 1280-px window.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
    overflowing = page.evaluate(OVERFLOWING, ".bk-panel-models-layout-Column, .bk-panel-models-layout-FlexBox, .bk-Row, .bk-Column")
    assert not overflowing, f"views wider than their container at 1280 px: {overflowing}"

    shot_path = Path(os.environ.get("PDCR_LAB_SCREENSHOT", tmp_path / "dashboard.png"))
    shot_path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot_path), full_page=True)
    assert not page.errors, f"JavaScript errors on the page: {page.errors}"
    assert not [u for u in page.refused if not u.endswith((".ico", ".png"))], f"requests left localhost: {page.refused}"


def test_exported_html_opens_offline(page, tmp_path, tiny96):
    """The dashboard's *Download HTML* file: one page that draws its maps without any request leaving the file."""
    from pdcr_lab.dashboard import Dashboard, ModelSource

    app = Dashboard(tmp_path / "results", models=ModelSource(names=lambda d: ["tiny"], load=lambda n, d: tiny96(1)), fine=2)
    app.picker.roi = (40, 40, 16, 16)
    app.run()
    app.runner.wait()
    page_file = tmp_path / "pdcr_maps.html"
    page_file.write_bytes(app._html_bytes().getvalue())
    assert b"cdn.holoviz.org" not in page_file.read_bytes()
    refused_before = len(page.refused)
    exported = page.context.new_page()  # the same offline browser as the dashboard's test
    errors: list[str] = []
    exported.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        exported.goto(page_file.as_uri(), wait_until="load")
        exported.wait_for_function(
            "() => window.Bokeh && Bokeh.index.all_views().some(v => v.model.title && v.model.title.text === 'tiny')",
            timeout=60_000)
        shown = exported.locator("[data-settings]").all_inner_texts()
    finally:
        exported.close()
    assert not page.refused[refused_before:], f"requests left the file: {page.refused[refused_before:]}"
    assert not errors, errors
    assert len(shown) == 1 and "N = 2" in shown[0] and "RoI (40, 40, 16, 16)" in shown[0]  # its settings travel with it
