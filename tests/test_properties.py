"""Property tests of :func:`pdcr_lab.explain` over generated images, block sizes, RoIs, banks and seeds.

* the batched engine equals the naive per-block loop (:func:`pdcr_lab.testing.reference_effects`),
  with and without the screening stage;
* the map does not depend on the batch size;
* every result is a valid effects dataset whose RoI blocks are never perturbed;
* sign convention: a model whose RoI Dice depends on one planted block only gets its strongest
  (most negative) effect there, and no other block matters.

Images and banks are binary and the models are box filters or a planted gate, so no pixel sits within
rounding error of the 0.5 threshold: batching cannot flip a pixel, and equality is exact up to float
sums. Examples are derandomised by the settings profile of tests/conftest.py (same examples on every
run, no deadline, no example database written).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pdcr_lab import PatchBank, explain, validate  # noqa: E402
from pdcr_lab.interventions import draw_table  # noqa: E402
from pdcr_lab.testing import (  # noqa: E402
    CenterSurroundModel,
    PlantedCauseModel,
    RandomConvNet,
    assert_effects_equal,
    reference_effects,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: Everything the reference loop computes, with the engine's meaning.
REFERENCE_VARS = ["ate", "ate_raw", "stderr", "n_draws", "screened", "roi_block", "m0", "forwards"]


def roi_blocks(box, block, grid):
    """The blocks a (row, col, height, width) box overlaps, computed independently of the engine."""
    r, c, h, w = box
    out = np.zeros(grid, dtype=bool)
    out[r // block : (r + h - 1) // block + 1, c // block : (c + w - 1) // block + 1] = True
    return out


@st.composite
def layouts(draw, sizes=(16, 24), blocks=(2, 3, 4, 6, 8), smallest=1):
    """(size, block, roi box): a square image, a block that tiles it and an RoI that leaves a block free."""
    size = draw(st.sampled_from(sizes))
    block = draw(st.sampled_from([b for b in blocks if size % b == 0]))
    h = draw(st.integers(smallest, size // 2))
    w = draw(st.integers(smallest, size // 2))
    box = (draw(st.integers(0, size - h)), draw(st.integers(0, size - w)), h, w)
    assume(not roi_blocks(box, block, (size // block, size // block)).all())
    return size, block, box


def binary(seed, *shape):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


@st.composite
def known_answer_cases(draw):
    """A box-filter or planted-gate model on a binary image, a binary bank (or the zero intervention).

    The RoI is at least a quarter of the image wide, the box filter's blocks next to it change its
    pixels, and the planted gate's marker is a bright grid block that about half the bank's blocks
    close: most cases have real effects (an all-zero map would compare equal too easily).
    """
    size, block, box = draw(layouts(smallest=4))
    seed = draw(st.integers(0, 2**16))
    image = binary(seed, 1, size, size)
    if draw(st.sampled_from(["box filter", "planted gate"])) == "box filter":
        model = CenterSurroundModel(k=draw(st.sampled_from([3, 5, 7])))
    else:
        free = np.argwhere(~roi_blocks(box, block, (size // block, size // block)))
        by, bx = (int(v) * block for v in free[draw(st.integers(0, len(free) - 1))])
        image[:, by : by + block, bx : bx + block] = 1.0
        model = PlantedCauseModel(marker=(by, bx, block))
    n_bank = draw(st.sampled_from([3, 0, 1, 2, 4]))  # 0: the zero intervention
    bank = PatchBank(binary(seed + 1, n_bank, 1, block, block)) if n_bank else None
    target = binary(seed + 2, size, size) > 0 if draw(st.booleans()) else None
    return size, block, box, seed, image, model, bank, target


def reference_for(model, image, box, block, bank, target, seed, coarse, fine, tau):
    cells = (image.shape[-1] // block) ** 2
    table = draw_table(seed, cells, coarse + fine, len(bank)) if bank is not None else None
    return reference_effects(
        model, image, box, target=target, bank_blocks=None if bank is None else bank.blocks, table=table,
        block=block, coarse=coarse, fine=fine, tau=tau,
    )


@given(case=known_answer_cases(), fine=st.integers(1, 3))
def test_without_screening_the_engine_equals_the_naive_loop(case, fine):
    size, block, box, seed, image, model, bank, target = case
    intervention = "natural" if bank is not None else "zero"
    ds = explain(model, image, roi=box, target=target, bank=bank, intervention=intervention, block=block,
                 coarse=0, fine=fine, tau=0.0, seed=seed)
    expected = reference_for(model, image, box, block, bank, target, seed, coarse=0, fine=fine, tau=0.0)
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)


@given(case=known_answer_cases(), coarse=st.integers(1, 3), fine=st.integers(1, 3),
       tau=st.sampled_from([0.37, 1.73, 4.41]))
def test_with_screening_the_engine_equals_the_naive_loop(case, coarse, fine, tau):
    size, block, box, seed, image, model, bank, target = case
    intervention = "natural" if bank is not None else "zero"
    ds = explain(model, image, roi=box, target=target, bank=bank, intervention=intervention, block=block,
                 coarse=coarse, fine=fine, tau=tau, seed=seed)
    expected = reference_for(model, image, box, block, bank, target, seed, coarse=coarse, fine=fine, tau=tau)
    assert_effects_equal(ds, expected, variables=REFERENCE_VARS, rtol=0, atol=1e-4)


@given(case=known_answer_cases(), batch_size=st.integers(1, 5))
def test_the_batch_size_never_changes_the_map(case, batch_size):
    size, block, box, seed, image, model, bank, target = case
    kw = dict(roi=box, target=target, bank=bank, intervention="natural" if bank is not None else "zero",
              block=block, coarse=2, fine=3, seed=seed)
    one_go = explain(model, image, batch_size=4096, **kw)
    small = explain(model, image, batch_size=batch_size, **kw)
    assert_effects_equal(small, one_go, rtol=0, atol=1e-9, variables=[v for v in one_go.data_vars])


@given(
    layout=layouts(),
    extra=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(1, 8), st.integers(1, 8)), max_size=2),
    intervention=st.sampled_from(["natural", "zero", "mean", "blur"]),
    outcome=st.sampled_from(["dice", "soft_dice", "iou"]),
    mode=st.sampled_from(["paper", "adaptive"]),
    tau=st.sampled_from([0.0, 0.02, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_every_result_is_valid_and_never_perturbs_its_rois(layout, extra, intervention, outcome, mode, tau, seed):
    size, block, box = layout
    grid = (size // block, size // block)
    boxes = [box] + [(r, c, h, w) for r, c, h, w in extra if r + h <= size and c + w <= size]
    image = torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed))
    bank = PatchBank(torch.rand(3, 1, block, block, generator=torch.Generator().manual_seed(seed + 1)))
    model = RandomConvNet(channels=1, hidden=2, seed=seed % 7)
    ds = explain(model, image, roi=boxes if len(boxes) > 1 else box, bank=bank, intervention=intervention,
                 block=block, coarse=2, fine=3, tau=tau, outcome=outcome, mode=mode, max_draws=8, seed=seed)
    assert validate(ds) is ds
    forwards = int(ds.forwards)
    ds = ds if len(boxes) > 1 else ds.expand_dims(roi=[0])  # one code path for one and several RoIs
    expected_blocks = np.stack([roi_blocks(b, block, grid) for b in boxes])
    np.testing.assert_array_equal(ds.roi_block.values, expected_blocks)
    assert not ds.ate.values[expected_blocks].any() and not ds.n_draws.values[expected_blocks].any()
    ate, raw = ds.ate.values, ds.ate_raw.values
    assert np.all((ate == 0) | ((np.abs(ate) >= tau) & (ate == raw)))  # zeroed below tau, else the estimate
    assert not ate[ds.screened.values].any()
    finite = np.isfinite(ds.ci_low.values) & ~expected_blocks
    assert np.all(ds.ci_low.values[finite] <= raw[finite] + 1e-9) and np.all(raw[finite] <= ds.ci_high.values[finite] + 1e-9)
    for i, (r, c, h, w) in enumerate(boxes):
        assert int(ds.roi_mask.isel(roi=i).sum()) == h * w and int(ds.roi_row.isel(roi=i)) == r
    if intervention != "natural":  # one forward per block that is a candidate for some RoI, plus the factual one
        assert forwards == 1 + int((~expected_blocks).any(axis=0).sum())
    assert (ds.attrs["seed"], ds.attrs["block"], ds.attrs["intervention"], ds.attrs["outcome"]) == (
        seed, block, intervention, outcome)


@given(layout=layouts(blocks=(2, 4, 8)), data=st.data(),
       replacement=st.sampled_from(["zero", "natural", "mean"]), with_target=st.booleans())
def test_a_planted_block_is_the_strongest_support_and_nothing_else_matters(layout, data, replacement, with_target):
    size, block, box = layout
    grid = (size // block, size // block)
    free = np.argwhere(~roi_blocks(box, block, grid))
    by, bx = free[data.draw(st.integers(0, len(free) - 1), label="marker")]
    seed = data.draw(st.integers(0, 2**16), label="seed")
    r, c, h, w = box
    image = 0.4 * torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed))  # dark background
    image[:, r : r + h, c : c + w] = 1.0  # the object: exactly the RoI
    image[:, by * block : (by + 1) * block, bx * block : (bx + 1) * block] = 1.0  # the marker
    model = PlantedCauseModel(marker=(int(by) * block, int(bx) * block, block))
    dark = PatchBank(0.4 * torch.rand(4, 1, block, block, generator=torch.Generator().manual_seed(seed + 1)))
    target = torch.zeros(size, size, dtype=torch.bool)
    target[r : r + h, c : c + w] = True
    ds = explain(model, image, roi=box, target=target if with_target else None, bank=dark,
                 intervention=replacement, block=block, seed=seed)
    ate = ds.ate.values
    assert float(ds.m0) == pytest.approx(100.0)
    assert np.unravel_index(np.argmin(ate), ate.shape) == (by, bx)
    assert ate[by, bx] == pytest.approx(-100.0, abs=1e-3)  # the marker supports the RoI: negative
    others = np.ones(grid, dtype=bool)
    others[by, bx] = False
    assert np.all(ate[others] == 0)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_same_seed_same_map(seed):
    image = binary(seed, 1, 16, 16)
    bank = PatchBank(binary(seed + 1, 5, 1, 4, 4))
    model = CenterSurroundModel(k=5)
    kw = dict(roi=(4, 4, 8, 8), bank=bank, block=4, coarse=2, fine=4, seed=seed)
    assert_effects_equal(explain(model, image, **kw), explain(model, image, **kw), rtol=0, atol=0, check_attrs=True)


# -- bad inputs: an error or the right map, never a silent degenerate one ----------------------
#: How each accepted encoding of an image maps to [0, 1] (the documented conversion).
ENCODINGS = {
    "float_unit": (np.float32, 1.0, 0.0, True),  # dtype, scale, offset, accepted without value_range
    "float64_unit": (np.float64, 1.0, 0.0, True),
    "uint8": (np.uint8, 255.0, 0.0, True),
    "uint16": (np.uint16, 65535.0, 0.0, True),
    "float_0_255": (np.float32, 255.0, 0.0, False),
    "float_minus1_1": (np.float32, 2.0, -1.0, False),
    "int16": (np.int16, 1000.0, 0.0, False),
}


@st.composite
def bad_calls(draw):
    """An image encoding, a layout mistake or none, NaNs or none, and a bank on the right scale or not."""
    return {
        "encoding": draw(st.sampled_from(sorted(ENCODINGS))),
        "layout": draw(st.sampled_from(["chw", "chw", "hwc", "hw", "bchw"])),
        "nan": draw(st.booleans()) and draw(st.booleans()),  # about one call in four
        "bank_scale": draw(st.sampled_from([1.0, 1.0, 255.0])),
        "seed": draw(st.integers(0, 3)),
    }


@settings(max_examples=40)
@given(case=bad_calls())
def test_bad_inputs_raise_or_give_the_map_of_the_documented_conversion(case):
    g = torch.Generator().manual_seed(case["seed"])
    truth = (torch.rand(3, 16, 16, generator=g) * 0.3 + 0.1)
    truth[:, 4:12, 4:12] += 0.55  # the [0, 1] image every accepted encoding stands for
    dtype, scale, offset, accepted = ENCODINGS[case["encoding"]]
    encoded = (truth.numpy() * scale + offset)
    encoded = np.round(encoded).astype(dtype) if np.issubdtype(dtype, np.integer) else encoded.astype(dtype)
    if case["nan"]:
        encoded = encoded.astype(np.float32)
        encoded[0, 2, 3] = np.nan
    shaped = {"chw": encoded, "hwc": np.moveaxis(encoded, 0, -1), "hw": encoded[0], "bchw": encoded[None]}[case["layout"]]
    bank = PatchBank(torch.rand(8, 3, 4, 4, generator=g) * case["bank_scale"])
    model = CenterSurroundModel(k=3, channels=3)
    ok = accepted and case["layout"] == "chw" and not case["nan"] and case["bank_scale"] == 1.0
    kwargs = dict(roi=(4, 4, 4, 4), block=4, bank=bank, fine=3, seed=case["seed"])
    if not ok:
        with pytest.raises((ValueError, TypeError)):
            explain(model, shaped, **kwargs)
        return
    got = explain(model, shaped, **kwargs)
    reference_image = torch.from_numpy(encoded.astype(np.float64) / scale).float() if np.issubdtype(dtype, np.integer) \
        else torch.from_numpy(encoded.astype(np.float32))
    expected = explain(model, reference_image, **kwargs)
    assert_effects_equal(got, expected, check_attrs=False)
    assert float(got.m0) > 0, "a correctly converted image keeps its segmentation"
