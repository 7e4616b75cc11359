"""pdcr_lab.statistics: support/harm/irrelevant counts and the reference's effect histogram."""

from __future__ import annotations

import numpy as np
import pytest

from pdcr_lab import schema, stack, statistics
from pdcr_lab.statistics import histogram_labels


def test_statistics_counts_and_bins():
    ds = schema.empty_effects(grid=(2, 3), block=4, tau=0.02)
    ds["ate"].values[:] = [[-5.0, -0.5, 0.0], [0.01, 0.0, 2.0]]
    ds["ate"].values[1, 1] = 0.0
    ds["roi_block"].values[1, 1] = True
    st = statistics(ds)
    assert (int(st.pos), int(st.neg), int(st.zero)) == (2, 2, 1)
    assert float(st.pos_pct) == pytest.approx(40.0)
    assert list(st.histogram.values) == [1, 0, 1, 0, 3, 0, 0, 1, 0]
    assert histogram_labels()[0] == "to -3" and histogram_labels()[4] == "-0.02 to 0.02"


def test_statistics_of_a_stack_equal_those_of_each_map():
    maps = {}
    for k, values in enumerate(([[-1.0, 0.5], [0.0, 4.0]], [[0.0, 0.0], [-0.1, -0.2]], [[3.0, 3.0], [0.0, 0.0]])):
        ds = schema.empty_effects(grid=(2, 2), block=4, tau=0.05)
        ds["ate"] = ds.ate.copy(data=np.array(values))
        maps[f"m{k}"] = ds
    st = statistics(stack(maps, dim="model"))
    assert st.pos.dims == ("model",) and st.histogram.dims == ("model", "bin")
    for label, ds in maps.items():
        one = statistics(ds)
        for name in ("pos", "neg", "zero", "pos_pct", "neg_pct", "zero_pct", "histogram"):
            np.testing.assert_array_equal(st[name].sel(model=label).values, one[name].values, err_msg=name)
    pct = st.pos_pct + st.neg_pct + st.zero_pct
    np.testing.assert_allclose(pct.values, 100.0)


def test_tau_of_the_result_sets_the_inner_bins_and_custom_edges_replace_them():
    ds = schema.empty_effects(grid=(1, 4), block=4, tau=0.1)
    ds["ate"] = ds.ate.copy(data=np.array([[-0.05, 0.0, 0.08, 0.2]]))
    st = statistics(ds)
    assert st.bin.values[4] == "-0.1 to 0.1" and st.histogram.values[3:6].tolist() == [0, 3, 1]
    assert float(st.attrs["tau"]) == 0.1
    edges = np.array([-np.inf, -30, -10, -3, -0.01, 0.01, 0.1, 10, 30, np.inf])
    custom = statistics(ds, edges=edges)
    assert custom.bin.values[5] == "0.01 to 0.1" and custom.histogram.values[3:7].tolist() == [1, 1, 1, 1]


def test_statistics_match_the_reference_output(reference_dir):
    out = reference_dir / "reference_output"
    pixel_map = np.load(next(out.glob("*_ate.npy")))
    blocks = pixel_map[::8, ::8]
    np.testing.assert_array_equal(np.repeat(np.repeat(blocks, 8, 0), 8, 1), pixel_map)  # piecewise constant
    ds = schema.empty_effects(grid=(32, 32), block=8, tau=0.02)
    ds["ate"].values[:] = blocks
    ds["roi_block"].values[9:13, 11:15] = True  # RoI at row 72, col 88, size 32
    st = statistics(ds)
    text = (next(out.glob("*_statistics.txt"))).read_text()
    lines = text.splitlines()
    assert lines[1] == f"pos: {int(st.pos)}, neg: {int(st.neg)}, zero: {int(st.zero)}"
    expected = dict(line.split(": ", 1) for line in lines[3:])
    for label, count in zip(st.bin.values, st.histogram.values):
        assert int(expected[f"{label}_num"]) == int(count), label
    assert float(st.pos_pct) == pytest.approx(24.01, abs=0.005)


def test_histogram_edges_keep_increasing_when_tau_swallows_outer_edges():
    ds = schema.empty_effects(grid=(2, 2), block=4, tau=0.5)
    ds["ate"][:] = np.array([[-2.0, 0.0], [0.4, 5.0]])
    st = statistics(ds)
    assert st.bin.values.tolist() == ["to -3", "-3 to -1", "-1 to -0.5", "-0.5 to 0.5", "0.5 to 1", "1 to 3", "3 to"]
    assert st.histogram.values.tolist() == [0, 1, 0, 2, 0, 0, 1]
    assert np.all(np.diff(st.bin_lower.values) > 0)


def test_bad_histogram_edges_are_refused():
    ds = schema.empty_effects(grid=(2, 2), block=4)
    with pytest.raises(ValueError, match=r"edges must be a 1-D increasing array"):
        statistics(ds, edges=np.array([0.0, -1.0, 1.0]))


def test_tau_zero_keeps_a_central_bin_of_exact_zeros():
    """tau = 0 (no zeroing) once made the default edges repeat 0 and raised; zeros now have their own bin."""
    import numpy as np

    import pdcr_lab

    ds = pdcr_lab.schema.empty_effects(grid=(2, 2), block=4, tau=0.0)
    ds["ate"][:] = np.array([[0.0, 0.01], [-0.01, 0.0]])
    st = pdcr_lab.statistics(ds)
    hist = dict(zip(st.bin.values.tolist(), st.histogram.values.tolist()))
    assert hist["-0.02 to 0"] == 1 and hist["0 to 0"] == 2 and hist["0 to 0.02"] == 1
    assert (int(st.pos), int(st.neg), int(st.zero)) == (1, 1, 2)


def test_counts_of_effects_distinguishable_from_zero():
    """pos_ci / neg_ci count the non-zero effects whose interval excludes 0: never more than pos / neg,
    from ci_low / ci_high when the result has them, else from ate_raw +- 1.96 stderr."""
    import numpy as np

    import pdcr_lab

    ds = pdcr_lab.schema.empty_effects(grid=(1, 4), block=4, tau=0.02)
    ds["ate"][0, :] = [-1.0, -1.0, 0.5, 0.5]
    ds["ate_raw"][0, :] = [-1.0, -1.0, 0.5, 0.5]
    ds["stderr"][0, :] = [0.1, 1.0, 0.1, 1.0]  # only the first of each sign is distinguishable from 0
    st = pdcr_lab.statistics(ds)
    assert (int(st.neg), int(st.neg_ci), int(st.pos), int(st.pos_ci)) == (2, 1, 2, 1)
    ds["ci_low"] = ds["ate_raw"] - 5.0  # an explicit (wider) interval wins over the stderr's
    ds["ci_high"] = ds["ate_raw"] + 5.0
    st = pdcr_lab.statistics(ds)
    assert (int(st.neg_ci), int(st.pos_ci)) == (0, 0)
    stacked = pdcr_lab.stack([ds, ds.assign(ci_low=ds.ate_raw - 0.01, ci_high=ds.ate_raw + 0.01)], dim="image",
                             labels=["wide", "narrow"])
    assert pdcr_lab.statistics(stacked).neg_ci.values.tolist() == [0, 2]
    assert np.all(pdcr_lab.statistics(stacked).neg_ci <= pdcr_lab.statistics(stacked).neg)
