"""pdcr_lab.viz: static figures (colours follow the sign convention, one map per figure) and the
holoviews elements of notebooks and the dashboard (checked through their dimensions and data)."""

import numpy as np
import pytest

from pdcr_lab import explain, stack, statistics
from pdcr_lab.viz import EFFECT_CMAP, overlay_figure, symmetric_limit


@pytest.fixture(scope="module")
def hv():
    return pytest.importorskip("holoviews")


@pytest.fixture(scope="module")
def hvz(hv):
    """The holoviews functions of pdcr_lab.viz (imported only when holoviews is installed)."""
    from pdcr_lab import viz

    return viz


def opts(hv, element):
    return hv.Store.lookup_options("bokeh", element, "plot").kwargs | hv.Store.lookup_options("bokeh", element, "style").kwargs


# -- static matplotlib figures -----------------------------------------------------------------
def test_overlay_figure_draws_three_panels(tiny_net, image, small_bank, tmp_path):
    ds = explain(tiny_net, image, roi=(12, 12, 8, 8), bank=small_bank, block=4, fine=5)
    fig = overlay_figure(ds, image, title="t")
    assert len(fig.axes) == 4  # three panels and a colour bar
    shown = fig.axes[2].images[0]
    assert shown.get_cmap().name == EFFECT_CMAP
    lo, hi = shown.get_clim()
    assert lo == -hi == -symmetric_limit(ds.ate)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_colour_map_puts_support_in_red():
    import matplotlib

    cmap = matplotlib.colormaps[EFFECT_CMAP]
    red, _, blue, _ = cmap(0.0)
    assert red > 0.9 and blue < 0.1  # the most negative ATE (support) is red
    red, _, blue, _ = cmap(1.0)
    assert blue > 0.9 and red < 0.1


def test_overlay_refuses_stacked_maps(tiny_net, image):
    ds = explain(tiny_net, image, roi=[(12, 12, 8, 8), (0, 0, 8, 8)], intervention="zero", block=4)
    with pytest.raises(ValueError, match=r"select along \['roi'\] first"):
        overlay_figure(ds)


# -- holoviews figures -------------------------------------------------------------------------
def test_map_image_is_a_pixel_image_on_a_symmetric_scale(hv, hvz, lesion_maps):
    _, a, _ = lesion_maps
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
    options = opts(hv, image)
    assert tuple(options["clim"]) == (-limit, limit)
    assert options["cmap"] == "bwr_r"
    rect = plot.Rectangles.I.data
    assert (float(rect["x0"].iloc[0]), float(rect["y0"].iloc[0])) == (39.5, 39.5)  # RoI outline, pixel edges
    hv.render(plot, backend="bokeh")


def test_side_by_side_shares_one_colour_scale(hv, hvz, lesion_maps):
    _, a, b = lesion_maps
    layout = hvz.side_by_side({"a": a, "b": b})
    limits = {tuple(opts(hv, p.Image.I)["clim"]) for p in layout}
    expected = max(symmetric_limit(a.ate), symmetric_limit(b.ate))
    assert limits == {(-expected, expected)}
    stacked = hvz.side_by_side(stack({"m0": a, "m1": b}, dim="model"))
    # One panel per model, in the stack's order, titled by its label, on the same shared scale.
    assert len(stacked) == 2
    assert [opts(hv, p)["title"] for p in stacked] == ["m0", "m1"]
    assert {tuple(opts(hv, p.Image.I)["clim"]) for p in stacked} == {(-expected, expected)}
    for panel, ds in zip(stacked, (a, b)):
        shown = panel.Image.I.dimension_values("ate", flat=False)
        np.testing.assert_allclose(np.nan_to_num(shown[::8, ::8]), ds.ate.values)
    hv.render(stacked, backend="bokeh")


def test_overlay_hides_irrelevant_blocks(hv, hvz, lesion_maps):
    image, a, _ = lesion_maps
    plot = hvz.overlay(a, image)
    effect = plot.Image.I
    values = effect.dimension_values("ate", flat=False)
    zero = (a.ate.values == 0).repeat(8, 0).repeat(8, 1)
    assert np.isnan(values[zero]).all() and np.isfinite(values[~zero]).all()
    assert isinstance(plot.RGB.I, hv.RGB)
    hv.render(plot, backend="bokeh")


def test_composition_and_histogram_follow_statistics(hv, hvz, lesion_maps):
    _, a, _ = lesion_maps
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


def test_radial_profile_is_the_strategies_mass_share(hvz, lesion_maps):
    from pdcr_lab.strategies import descriptors

    _, a, b = lesion_maps
    overlay = hvz.radial_profile({"a": a, "b": b}, dim="model")
    assert overlay.kdims[0].name == "model"
    curve = overlay["a"]
    assert [d.name for d in curve.kdims] == ["ring"] and [d.name for d in curve.vdims] == ["mass_share"]
    d = descriptors(a)
    expected = (d.radial_mass / d.mass).values
    np.testing.assert_allclose(curve.dimension_values("mass_share"), expected)
    assert hvz.radial_profile(stack({"a": a, "b": b}, dim="method")).kdims[0].name == "method"


def test_one_map_functions_refuse_stacks(hvz, lesion_maps):
    _, a, b = lesion_maps
    with pytest.raises(ValueError, match=r"select along \['model'\] first"):
        hvz.map_image(stack({"a": a, "b": b}, dim="model"))


def test_overlay_opacity_grows_with_the_effect_in_every_backend(hv, hvz):
    """Irrelevant blocks are transparent, opacity grows with |ATE| and is the same in the matplotlib
    figure and the holoviews overlay (before: zero transparent, any non-zero effect a 65% wash)."""
    import numpy as np

    import pdcr_lab
    from pdcr_lab.viz import OVERLAY_ALPHA, effect_rgba, overlay_figure

    ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4)
    ds["ate"][:] = np.array([[0.0, -0.1], [-2.0, 1.0]])
    ds["ate_raw"][:] = ds["ate"].values
    ds["stderr"][:] = 0.05
    image = np.full((3, 8, 8), 0.5)
    alpha = effect_rgba(pdcr_lab.schema.to_pixels(ds)["ate"].values, limit=2.0)[..., 3]
    assert alpha[0, 0] == 0.0 and alpha[0, 4] < alpha[4, 4] < alpha[4, 0] == OVERLAY_ALPHA
    assert np.isclose(alpha[0, 4], OVERLAY_ALPHA * 0.1 / 2.0) and np.isclose(alpha[4, 4], OVERLAY_ALPHA / 2.0)

    fig = overlay_figure(ds, image)
    drawn = fig.axes[1].get_images()[1].get_array()  # the map over the image, as RGBA
    np.testing.assert_allclose(np.asarray(drawn)[..., 3], alpha)

    hv_overlay = hvz.overlay(ds, image)
    (rgb,) = [el for el in hv_overlay if type(el).__name__ == "RGB" and "A" in [d.name for d in el.vdims]]
    np.testing.assert_allclose(rgb.dimension_values("A", flat=False), alpha, atol=1e-12)
    (values,) = [el for el in hv_overlay if "stderr" in [d.name for d in getattr(el, "vdims", [])]]
    assert values.opts.get().kwargs["alpha"] == 0  # carries the hover (ATE, stderr, interval) and the colour bar


def test_an_exported_map_says_its_settings():
    """N, S, tau, intervention, seed, model, image and RoI travel with the figure (its caption)."""
    import numpy as np

    import pdcr_lab
    from pdcr_lab.viz import overlay_figure

    ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4, coarse=3, fine=50, tau=0.02, intervention="blur",
                                       seed=7, model="segformer", dataset="vessels", image_id="v_0001")
    ds["roi_height"], ds["roi_width"] = 4, 4
    fig = overlay_figure(ds, np.zeros((3, 8, 8)))
    caption = fig.get_supxlabel() if hasattr(fig, "get_supxlabel") else fig._supxlabel.get_text()
    for part in ("blur blocks of 4 px", "S = 3", "N = 50", "tau = 0.02", "seed 7", "model segformer",
                 "image v_0001", "RoI (0, 0, 4, 4)"):
        assert part in caption, (part, caption)
    assert overlay_figure(ds, np.zeros((3, 8, 8)), caption=False)._supxlabel is None
