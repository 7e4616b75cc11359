"""pdcr_lab.viz volume views: orthogonal slices, signed maximum-intensity projections, the paper figure and
the 3-D viewer of 3-D effect maps (grid dims block_z, block_y, block_x), checked through their data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from pdcr_lab.viz import (
    EFFECT_CMAP,
    max_projection,
    niivue_view,
    orthoslices,
    signed_max_projection,
    symmetric_limit,
    volume_figure,
)

GRID = ("block_z", "block_y", "block_x")


def volume_effects(grid=(8, 8, 8), block=(4, 4, 4), roi=(12, 12, 12, 4, 4, 4), seed=0) -> xr.Dataset:
    """A 3-D effects map following the schema's 3-D contract, built with plain xarray.

    A support blob (ATE < 0) planted around block (1, 2, 5), one harmful block (ATE > 0) at (6, 6, 1),
    weak noise elsewhere, and a box RoI (z, row, col, depth, height, width) whose blocks are zero.
    """
    rng = np.random.default_rng(seed)
    bz, by, bx = block
    ate = np.round(rng.normal(0.0, 0.01, grid), 4)
    ate[np.abs(ate) < 0.01] = 0.0
    ate[0:3, 1:4, 4:7] = -0.2
    ate[1, 2, 5] = -0.6  # the strongest support
    ate[6, 6, 1] = 0.4  # the strongest harm
    shape = (grid[0] * bz, grid[1] * by, grid[2] * bx)
    z, row, col, d, h, w = roi
    mask = np.zeros(shape, dtype=bool)
    mask[z:z + d, row:row + h, col:col + w] = True
    roi_block = np.zeros(grid, dtype=bool)
    roi_block[z // bz:-(-(z + d) // bz), row // by:-(-(row + h) // by), col // bx:-(-(col + w) // bx)] = True
    ate[roi_block] = 0.0
    units = "DSC points"
    data = {
        "ate": (GRID, ate, {"units": units}),
        "ate_raw": (GRID, ate + 0.001, {"units": units}),
        "stderr": (GRID, np.full(grid, 0.01), {"units": units}),
        "ci_low": (GRID, ate - 0.02),
        "ci_high": (GRID, ate + 0.02),
        "n_draws": (GRID, np.where(roi_block, 0, 5).astype(np.int32)),
        "screened": (GRID, np.abs(ate) < 0.01),
        "roi_block": (GRID, roi_block),
        "m0": ((), 0.9),
        "forwards": ((), 512),
        "roi_mask": (("z", "y", "x"), mask),
    }
    for name, value in zip(("roi_z", "roi_row", "roi_col", "roi_depth", "roi_height", "roi_width"), roi):
        data[name] = ((), np.int64(value))
    coords = {
        "block_z": np.arange(grid[0]), "block_y": np.arange(grid[1]), "block_x": np.arange(grid[2]),
        "z_start": ("block_z", np.arange(grid[0]) * bz), "y_start": ("block_y", np.arange(grid[1]) * by),
        "x_start": ("block_x", np.arange(grid[2]) * bx),
        "z": np.arange(shape[0]), "y": np.arange(shape[1]), "x": np.arange(shape[2]),
    }
    attrs = {"schema_version": 1, "method": "pdcr", "block": bx, "block_shape": json.dumps(list(block)),
             "coarse": 3, "fine": 20, "tau": 0.02, "outcome": "dice", "units": units, "seed": seed,
             "intervention": "natural", "image_height": shape[1], "image_width": shape[2], "image_depth": shape[0],
             "model": "unet3d"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


@pytest.fixture(scope="module")
def hv():
    return pytest.importorskip("holoviews")


@pytest.fixture(scope="module")
def effects():
    return volume_effects()


@pytest.fixture(scope="module")
def volume():
    """A (1, D, H, W) image in [0, 1]: a bright ball in a textured volume."""
    rng = np.random.default_rng(1)
    z, y, x = np.indices((32, 32, 32))
    ball = ((z - 14) ** 2 + (y - 14) ** 2 + (x - 14) ** 2) < 64
    return np.clip(0.3 + 0.1 * rng.standard_normal((1, 32, 32, 32)) + 0.5 * ball, 0, 1)


def opts(hv, element):
    return hv.Store.lookup_options("bokeh", element, "plot").kwargs | hv.Store.lookup_options("bokeh", element, "style").kwargs


def values_image(hv, overlay, var="ate"):
    """The hv.Image of an overlay that carries `var` (the hover and colour-bar layer)."""
    found = [e for e in overlay.traverse(lambda e: e, [hv.Image]) if var in [d.name for d in e.vdims]]
    assert len(found) == 1
    return found[0]


# -- signed maximum-intensity projection -----------------------------------------------------------------------
@pytest.mark.parametrize("axis", ["z", "y", "x"])
def test_signed_mip_keeps_the_sign_and_equals_a_numpy_reference(effects, axis):
    ate = effects.ate.values
    k = "zyx".index(axis)
    # numpy reference: the value of largest |ATE| on each ray, sign kept
    reference = np.take_along_axis(ate, np.expand_dims(np.abs(ate).argmax(axis=k), k), axis=k).squeeze(k)
    mip = signed_max_projection(effects, axis)
    assert mip.dims == tuple(d for d in GRID if d != f"block_{axis}")
    np.testing.assert_array_equal(mip.values, reference)
    assert mip.min() == pytest.approx(-0.6) and mip.max() == pytest.approx(0.4)  # both signs survive
    assert np.abs(mip.values).tolist() == np.abs(ate).max(axis=k).tolist()  # the largest |ATE| of each ray


def test_signed_mip_picks_the_strongest_not_the_largest():
    ate = xr.DataArray(np.array([0.3, -0.5, 0.1]).reshape(3, 1, 1), dims=GRID)
    assert float(signed_max_projection(ate, "z")[0, 0]) == -0.5  # max() would give 0.3
    nan = xr.DataArray(np.array([np.nan, 0.2, np.nan]).reshape(1, 1, 3), dims=GRID)
    assert float(signed_max_projection(nan, "x")[0, 0]) == 0.2


def test_max_projection_draws_the_signed_mip(hv, effects, volume):
    plot = max_projection(effects, "z")
    image = values_image(hv, plot)
    assert [d.name for d in image.kdims] == ["x", "y"]
    assert [d.name for d in image.vdims] == ["ate", "block_z"]
    shown = image.dimension_values("ate", flat=False)
    assert shown.shape == (32, 32)
    expected = np.repeat(np.repeat(signed_max_projection(effects, "z").values, 4, 0), 4, 1)
    np.testing.assert_array_equal(shown, expected)
    depth = image.dimension_values("block_z", flat=False)
    assert depth[2 * 4, 5 * 4] == 1  # the strongest support on that ray is in block_z 1
    limit = symmetric_limit(effects.ate)
    assert tuple(opts(hv, image)["clim"]) == (-limit, limit) and opts(hv, image)["cmap"] == EFFECT_CMAP
    hv.render(plot, backend="bokeh")
    three = max_projection(effects, "all", image=volume)
    assert len(three) == 3
    hv.render(three, backend="bokeh")


# -- orthogonal slices -------------------------------------------------------------------------------------
def test_orthoslices_start_at_the_roi_centre_and_render(hv, effects, volume):
    pn = pytest.importorskip("panel")
    view = orthoslices(effects, image=volume)
    assert isinstance(view, pn.Column)
    sliders = list(view[0])
    assert [s.value for s in sliders] == [13, 13, 13]  # the RoI (12..15 on each axis) centre
    assert sum(s.width for s in sliders) <= 820
    layout = view[1].object
    assert len(layout) == 3
    for dmap in layout:
        assert [d.name for d in dmap.kdims] == ["z", "y", "x"]
    from bokeh.models import Title

    root = view.get_root()

    def titles():
        return sorted(m.text for m in root.select({"type": Title}) if m.text)

    assert titles() == ["axial z = 13 (block 3)", "coronal y = 13 (block 3)", "sagittal x = 13 (block 3)"]
    sliders[0].value = 29  # the z slider moves the axial plane only
    assert titles() == ["axial z = 29 (block 7)", "coronal y = 13 (block 3)", "sagittal x = 13 (block 3)"]
    hv.render(layout, backend="bokeh")


def test_orthoslices_planes_follow_the_sliders(hv, effects):
    layout = orthoslices(effects, widgets=False)
    axial, coronal, sagittal = list(layout)
    # the axial plane at z = 5 lies in block_z 1 (the planted support), at z = 29 in block_z 7
    a = values_image(hv, axial[5, 13, 13]).dimension_values("ate", flat=False)
    b = values_image(hv, axial[29, 13, 13]).dimension_values("ate", flat=False)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a[::4, ::4], effects.ate.values[1])
    np.testing.assert_array_equal(b[::4, ::4], effects.ate.values[7])
    assert a[2 * 4, 5 * 4] == pytest.approx(-0.6)
    # coronal (z, x) and sagittal (z, y) planes
    c = values_image(hv, coronal[13, 9, 13]).dimension_values("ate", flat=False)
    np.testing.assert_array_equal(c[::4, ::4], effects.ate.values[:, 2, :])
    s = values_image(hv, sagittal[13, 13, 21])
    assert [d.name for d in s.kdims] == ["y", "z"]
    np.testing.assert_array_equal(s.dimension_values("ate", flat=False)[::4, ::4], effects.ate.values[:, :, 5])
    # hover carries the block index of every voxel
    hover = values_image(hv, axial[5, 13, 13])
    assert [d.name for d in hover.vdims] == ["ate", "block_z", "block_y", "block_x"]
    assert hover.dimension_values("block_x", flat=False)[0, 21] == 5
    assert set(hover.dimension_values("block_z")) == {1}


def test_orthoslices_share_one_symmetric_scale_and_mark_the_roi(hv, effects, volume):
    layout = orthoslices(effects, image=volume, widgets=False, vmax=1.0)
    frames = [dmap[13, 13, 13] for dmap in layout]
    for frame in frames:
        image = values_image(hv, frame)
        assert tuple(opts(hv, image)["clim"]) == (-1.0, 1.0)
        assert opts(hv, image)["alpha"] == 0  # over an image: colours from the RGB layer, hover from this one
        ring = frame.Path.I.data[0]
        assert ring["x" if "x" in ring else "y"].min() == 11.5  # RoI starts at voxel 12 on every axis: voxel edges
        assert ring[list(ring)[1]].max() == 15.5
        assert opts(hv, frame.Path.I)["line_dash"] == "solid"
    assert [opts(hv, values_image(hv, f))["colorbar"] for f in frames] == [False, False, True]  # one colour bar
    grey = frames[0].traverse(lambda e: e, [hv.Image])[0]
    np.testing.assert_allclose(grey.dimension_values("intensity", flat=False), volume[0, 13])
    # a plane that misses the RoI shows its projection dashed
    far = layout[0][29, 13, 13]
    assert opts(hv, far.Path.I)["line_dash"] == "dashed"
    # without an image the map itself is drawn, fully opaque
    alone = orthoslices(effects, widgets=False)[0][13, 13, 13]
    assert opts(hv, values_image(hv, alone))["alpha"] == 1


def test_orthoslices_fit_the_output_width(hv, effects):
    from pdcr_lab.viz import VIEW_WIDTH

    layout = orthoslices(effects, widgets=False)
    widths = [opts(hv, dmap[13, 13, 13])["frame_width"] for dmap in layout]
    assert len(set(widths)) == 1  # equal voxels in every plane of a cube
    assert sum(widths) + 3 * 75 + 110 <= VIEW_WIDTH


def test_stderr_is_drawn_on_a_sequential_scale(hv, effects):
    plane = orthoslices(effects, var="stderr", widgets=False)[0][13, 13, 13]
    image = values_image(hv, plane, "stderr")
    assert opts(hv, image)["cmap"] == "viridis" and opts(hv, image)["clim"][0] == 0


# -- the paper figure ----------------------------------------------------------------------------------------
def test_volume_figure_has_six_panels_a_colour_bar_and_readable_fonts(effects, volume, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from pdcr_lab.viz import save_figure

    fig = volume_figure(effects, volume, title="3-D map")
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert len(panels) == 6 and len(fig.axes) == 7
        assert [ax.get_title() for ax in panels] == [
            "axial z = 13", "coronal y = 13", "sagittal x = 13",
            "MIP along z", "MIP along y", "MIP along x",
        ]
        bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
        assert "DSC points" in bar.get_xlabel()
        lo, hi = bar.get_xlim()
        assert lo == pytest.approx(-0.6) and hi == pytest.approx(0.6)
        mip = panels[3].images[0]
        assert mip.get_cmap().name == EFFECT_CMAP
        np.testing.assert_array_equal(mip.get_array()[::4, ::4], signed_max_projection(effects, "z").values)
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
        assert sizes and min(sizes) >= 7
        paths = save_figure(fig, "volume", tmp_path)  # PDF, SVG and a 300-dpi PNG, like every paper figure
        assert [p.suffix for p in paths] == [".pdf", ".svg", ".png"]
        renderer = fig.canvas.get_renderer()
        canvas = fig.bbox
        outside = [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
                   and not canvas.padded(1).contains(*t.get_window_extent(renderer).p0)]
        outside += [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
                    and not canvas.padded(1).contains(*t.get_window_extent(renderer).p1)]
        assert not outside
        caption = fig._supxlabel.get_text()
        assert "blocks of 4 x 4 x 4 voxels" in caption.replace("\n", " ") and "(12, 12, 12, 4, 4, 4)" in caption
        assert float(fig.get_figwidth()) == 7.2
    finally:
        plt.close(fig)
    single = volume_figure(effects, layout="single", caption=False)
    assert float(single.get_figwidth()) == 3.5
    plt.close(single)


# -- the 3-D viewer -------------------------------------------------------------------------------------------
def test_niivue_view_loads_the_image_and_the_signed_map(effects, volume):
    pytest.importorskip("ipyniivue")
    nibabel = pytest.importorskip("nibabel")
    widget = niivue_view(effects, volume)
    image, ate, roi = widget.volumes
    assert (image.name, ate.name, roi.name) == ("image", "ate", "roi")
    assert (ate.colormap, ate.colormap_negative) == ("afni_blues_inv", "afni_reds_inv")  # harm blue, support red
    assert ate.cal_max == pytest.approx(0.6) and ate.cal_min == pytest.approx(0.06)  # the weakest tenth left out
    every = niivue_view(effects, threshold=0.0).volumes[1]
    assert every.cal_max == pytest.approx(0.6) and 0 < every.cal_min < 1e-6  # one symmetric scale, 0 transparent
    assert ate.cal_min_neg is None and ate.cal_max_neg is None  # the negative side mirrors the positive one
    with pytest.raises(ValueError, match="threshold=0.7 must be in"):
        niivue_view(effects, threshold=0.7)
    nifti = nibabel.Nifti1Image.from_bytes(ate.data)
    voxels = np.asarray(nifti.dataobj).transpose(2, 1, 0)  # NIfTI's i, j, k are x, y, z
    assert voxels.shape == (32, 32, 32)
    assert voxels[5, 9, 21] == pytest.approx(-0.6)  # block (1, 2, 5)
    back = np.asarray(nibabel.Nifti1Image.from_bytes(image.data).dataobj).transpose(2, 1, 0)
    np.testing.assert_allclose(back, volume[0], atol=1e-6)
    mask = np.asarray(nibabel.Nifti1Image.from_bytes(roi.data).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(mask > 0.5, effects.roi_mask.values)


# -- bad input ---------------------------------------------------------------------------------------------
def test_a_2d_map_gets_a_clear_error(effects):
    from pdcr_lab.schema import empty_effects

    flat = empty_effects(grid=(2, 2), block=4)
    for view in (orthoslices, max_projection, volume_figure):
        with pytest.raises(ValueError, match=r"ds\['ate'\] has dims \('block_y', 'block_x'\); expected a 3-D effects map"):
            view(flat)
    with pytest.raises(ValueError, match="effects has dims"):
        signed_max_projection(flat)


def test_bad_inputs_get_clear_errors(effects, volume):
    stacked = xr.concat([effects, effects], dim="model")
    with pytest.raises(ValueError, match=r"select along them first \(e.g. ds.isel\(model=0\)\)"):
        orthoslices(stacked)
    with pytest.raises(ValueError, match=r"image has \(D, H, W\) = \(32, 32, 16\)"):
        volume_figure(effects, volume[..., :16])
    with pytest.raises(ValueError, match="image has shape .* expected a volume"):
        orthoslices(effects, image=volume[0, 0])
    with pytest.raises(ValueError, match=r"at=\(40, 0, 0\) is not a voxel"):
        volume_figure(effects, at=(40, 0, 0))
    with pytest.raises(ValueError, match="axis='w'"):
        max_projection(effects, "w")
    with pytest.raises(ValueError, match="var='roi_mask' is not drawable"):
        orthoslices(effects, var="roi_mask")
    with pytest.raises(TypeError, match="must be an xarray.Dataset"):
        max_projection(effects.ate)
    bad = effects.assign_attrs(block_shape="[4, 4, 2]")
    with pytest.raises(ValueError, match="x_start does not match block=2"):  # the schema's own check
        max_projection(bad)


# -- the 3-D viewer in a browser, offline ---------------------------------------------------------------------
_HARNESS = """<!doctype html><html><head><meta charset="utf-8"></head><body><div id="root" style="width:800px"></div>
<script type="module">
// The widget's own bundle, driven by a minimal stand-in for the Jupyter widget model (the state Python sends).
import widget from "./widget.js";
const state = await (await fetch("state.json")).json();
const models = {};
const manager = {get_model: async id => models[id]};
window.sent = [];
class Model {
  constructor(s) { this.s = s; this.widget_manager = manager; }
  get(k) { return this.s[k]; }  set(k, v) { this.s[k] = v; }  save_changes() {}  on() {}  off() {}
  send(m) { window.sent.push(m); }  send_sync_message() { return 0; }
}
for (const [id, s] of Object.entries(state.models)) {
  for (const [k, v] of Object.entries(s)) {
    if (v && v.__b64__ !== undefined) s[k] = new DataView(Uint8Array.from(atob(v.__b64__), c => c.charCodeAt(0)).buffer);
  }
  models[id] = new Model(s);
}
try {
  await widget.initialize({model: models[state.main]});
  await widget.render({model: models[state.main], el: document.getElementById("root")});
  window.rendered = true;
} catch (e) { window.rendered = String(e); }
</script></body></html>"""


def _widget_state(widget) -> dict:
    import base64

    def plain(state):
        out = {}
        for key, value in state.items():
            if key == "_esm":
                continue
            if isinstance(value, (bytes, memoryview)):
                value = {"__b64__": base64.b64encode(bytes(value)).decode()}
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    models = {widget.model_id: plain(widget.get_state())}
    models.update({v.model_id: plain(v.get_state()) for v in widget.volumes})
    return {"main": widget.model_id, "models": models}


def test_niivue_view_renders_offline_in_chromium(effects, volume, tmp_path):
    """NiiVue's bundled JavaScript draws the volumes with no request leaving localhost (no CDN)."""
    ipyniivue = pytest.importorskip("ipyniivue")
    pytest.importorskip("playwright")
    import shutil
    import sys
    from pathlib import Path

    from browser import CHROMIUM, free_port, offline_browser, serving

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium (/usr/bin/chromium) is not installed")
    shutil.copy(Path(ipyniivue.__file__).parent / "static" / "widget.js", tmp_path / "widget.js")
    (tmp_path / "state.json").write_text(json.dumps(_widget_state(niivue_view(effects, volume)), default=str))
    (tmp_path / "index.html").write_text(_HARNESS)
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with serving(command, port, "http.server"), offline_browser(900, 700) as (context, refused):
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/index.html")
        if not page.evaluate("!!document.createElement('canvas').getContext('webgl2')"):
            pytest.skip("this Chromium offers no WebGL2")
        page.wait_for_function("window.rendered !== undefined", timeout=60_000)
        assert page.evaluate("window.rendered") is True
        page.wait_for_function("window.sent.filter(m => m.event === 'image_loaded').length === 3", timeout=60_000)
        canvas = page.locator("#root canvas")
        assert canvas.count() == 1
        shot = page.screenshot(clip=canvas.bounding_box())
    assert not refused, refused
    assert not errors, errors
    from io import BytesIO

    from PIL import Image

    rgb = np.asarray(Image.open(BytesIO(shot)).convert("RGB"), dtype=int)
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 100  # the map's colours over the grey image
    assert coloured.sum() > 500


def test_views_read_the_schemas_own_3d_maps_with_cuboid_blocks(hv):
    """A map from pdcr_lab.schema (blocks of 2 x 4 x 4 voxels on a 3 x 4 x 5 grid): planes and projections
    follow each axis's own block side, and voxels are equally large in every plane."""
    import matplotlib.pyplot as plt

    from pdcr_lab.schema import empty_effects

    ds = empty_effects(grid=(3, 4, 5), block=(2, 4, 4))
    ds["ate"][1, 2, 3] = -1.0
    ds["ate"][2, 0, 0] = 0.5
    layout = orthoslices(ds, widgets=False, at=(3, 9, 13))  # voxel (3, 9, 13) lies in block (1, 2, 3)
    axial, coronal, sagittal = (dmap[3, 9, 13] for dmap in layout)
    assert values_image(hv, axial).dimension_values("ate", flat=False).shape == (16, 20)
    assert values_image(hv, coronal).dimension_values("ate", flat=False).shape == (6, 20)
    assert values_image(hv, sagittal).dimension_values("ate", flat=False).shape == (6, 16)
    for plane in (axial, coronal, sagittal):
        assert np.nanmin(values_image(hv, plane).dimension_values("ate")) == -1.0
    widths = [opts(hv, p)["frame_width"] for p in (axial, coronal, sagittal)]
    assert widths[0] == widths[1] and widths[2] == pytest.approx(widths[0] * 16 / 20, abs=1)
    hv.render(layout, backend="bokeh")
    mip = values_image(hv, max_projection(ds, "y")).dimension_values("ate", flat=False)
    assert mip.shape == (6, 20) and mip[2, 12] == -1.0 and mip[4, 0] == 0.5
    fig = volume_figure(ds)
    assert len(fig.axes) == 7
    plt.close(fig)


def test_niivue_view_says_how_to_install_ipyniivue(effects, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ipyniivue", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'ipyniivue>=2\.4\.4'"):
        niivue_view(effects)


def test_a_channel_of_a_multichannel_volume_is_drawn(hv, effects, volume):
    two = np.concatenate([volume, 1 - volume])
    plane = orthoslices(effects, image=two, channel=1, widgets=False)[0][13, 13, 13]
    grey = plane.traverse(lambda e: e, [hv.Image])[0]
    np.testing.assert_allclose(grey.dimension_values("intensity", flat=False), 1 - volume[0, 13])
    with pytest.raises(ValueError, match="channel=2 is out of range for an image with 2 channels"):
        orthoslices(effects, image=two, channel=2)
