"""The fast paths of the engine are correct: adaptive mode, batching policy, memory budget, precision,
layout, interrupts and shared multi-RoI forwards. No wall-clock limits here: speed is measured by
``benchmarks/``; these tests only prove that the fast paths give the right numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from pdcr_lab import PatchBank, explain
from pdcr_lab.engine import PRECISION_TOLERANCE, PrecisionWarning
from pdcr_lab.estimator import Batcher, adaptive_ate, run_batched, screened_ate
from pdcr_lab.interventions import compose, draw_table
from pdcr_lab.testing import OutOfMemoryAbove, PlantedCauseModel, dice_points

ROI = (12, 12, 8, 8)


def _exact_expectation(net, image, bank, outcome="soft_dice"):
    """E_B[M(f(X with block p := B))] - M0 for every block, enumerated over the whole bank."""
    per_block = []
    for j in range(len(bank)):
        one = PatchBank(bank.blocks[j : j + 1])
        ds = explain(net, image, roi=ROI, bank=one, block=4, coarse=0, fine=1, tau=0.0, outcome=outcome)
        per_block.append(ds.ate_raw.values)
    return np.mean(per_block, axis=0)


# -- adaptive mode ------------------------------------------------------------------------------


def test_adaptive_interval_covers_the_exact_expectation(tiny_net, image, small_bank):
    exact = _exact_expectation(tiny_net, image, small_bank)
    ds = explain(
        tiny_net, image, roi=ROI, bank=small_bank, block=4, tau=0.0, outcome="soft_dice",
        mode="adaptive", target_se=0.05, max_draws=400, band_stop=False, seed=7,
    )
    cand = ~ds.roi_block.values
    low, high = ds.ci_low.values[cand], ds.ci_high.values[cand]
    covered = (low <= exact[cand] + 1e-9) & (exact[cand] <= high + 1e-9)
    assert np.abs(exact[cand]).max() > 1.0, "the toy model must have real effects"
    assert covered.mean() >= 0.9  # nominal 95 %; sequential stopping may cost a little
    err = np.abs(ds.ate_raw.values - exact)[cand]
    assert np.all(err <= 5 * ds.stderr.values[cand] + 1e-6)
    # Every block reached the target or the draw budget.
    se, n = ds.stderr.values[cand], ds.n_draws.values[cand]
    assert np.all((se <= 0.05 + 1e-9) | (n == 400))
    assert ds.attrs["mode"] == "adaptive" and ds.attrs["target_se"] == 0.05


def _synthetic(n_units=10, n_draws=120, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.0, 3.0, n_units)[:, None]
    values = rng.normal(size=(n_units, n_draws)) * scale + np.arange(n_units)[:, None] * 0.3
    seen: list[tuple[int, int]] = []

    def evaluate(units, draws):
        seen.extend(zip(units.tolist(), draws.tolist()))
        return torch.as_tensor(values[units.numpy(), draws.numpy()])[:, None]

    return values, evaluate, seen


def test_adaptive_keeps_the_coarse_draws_and_stops_at_the_first_settled_count():
    values, evaluate, seen = _synthetic()
    cand = np.ones((1, 10), dtype=bool)
    est = adaptive_ate(
        evaluate, cand, np.zeros(1), first=3, max_draws=120, target_se=0.25, tau=0.02,
        batch_size=7, band_stop=False,
    )
    for u in range(10):
        n = int(est.n_draws[0, u])
        draws = sorted(d for unit, d in seen if unit == u)
        assert draws == list(range(len(draws))), "draws are taken in table order, the screening ones first"
        assert n >= 3 and draws[:3] == [0, 1, 2]
        x = values[u, :n]
        np.testing.assert_allclose(est.ate_raw[0, u], x.mean())
        np.testing.assert_allclose(est.stderr[0, u], x.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0)
        # Brute force: the first count >= 3 with se <= target (or the budget) is where it stopped.
        ses = [values[u, :k].std(ddof=1) / np.sqrt(k) for k in range(3, 121)]
        expected = next((k for k, s in zip(range(3, 121), ses) if s <= 0.25 + 1e-12), 120)
        assert n == expected
    assert est.forwards == len(seen)
    assert est.forwards < 10 * 120


def test_adaptive_result_does_not_depend_on_batching_or_on_other_rois():
    values, evaluate, _ = _synthetic(seed=3)
    two = np.stack([values, values[::-1] * 0.5], axis=2)  # two "RoIs" with different outcomes

    def evaluate2(units, draws):
        return torch.as_tensor(two[units.numpy(), draws.numpy()])

    cand = np.ones((2, 10), dtype=bool)
    cand[1, 4] = False
    kwargs = dict(first=3, max_draws=120, target_se=0.3, tau=0.02)
    both = adaptive_ate(evaluate2, cand, np.zeros(2), batch_size=5, **kwargs)
    for r in range(2):
        def single(units, draws, r=r):
            return torch.as_tensor(two[units.numpy(), draws.numpy(), r])[:, None]

        alone = adaptive_ate(single, cand[r : r + 1], np.zeros(1), batch_size=64, **kwargs)
        np.testing.assert_array_equal(both.n_draws[r], alone.n_draws[0])
        np.testing.assert_allclose(both.ate_raw[r], alone.ate_raw[0])
        np.testing.assert_allclose(both.ci_low[r], alone.ci_low[0])
    assert both.n_draws[1, 4] == 0 and both.ate[1, 4] == 0


def test_adaptive_engine_uses_the_paper_draws_first(tiny_net, image, small_bank):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, mode="adaptive", target_se=0.3, seed=11)
    table = draw_table(11, 64, 4 * 53, len(small_bank), prefix=53)
    np.testing.assert_array_equal(table[:, :53], draw_table(11, 64, 53, len(small_bank)))
    roi = torch.zeros(32, 32)
    roi[12:20, 12:20] = 1
    with torch.no_grad():
        ref = (tiny_net(image[None])[:, 0] > 0.5).float()[0]
        m0 = float(dice_points(ref, ref, roi))
        cand = ~ds.roi_block.values.reshape(-1)
        n_draws = ds.n_draws.values.reshape(-1)
        for cell in np.flatnonzero(cand)[::7]:
            n = int(n_draws[cell])
            assert n >= 3
            cells = torch.full((n,), int(cell))
            batch = compose(image, cells, small_bank.blocks[table[cell, :n]], 4)
            m = dice_points((tiny_net(batch)[:, 0] > 0.5).float(), ref, roi)
            expected = float((m - m0).double().mean())
            assert ds.ate_raw.values.reshape(-1)[cell] == pytest.approx(expected, abs=1e-4)


def test_adaptive_multi_roi_equals_single_calls(tiny_net, image, small_bank):
    rois = [(12, 12, 8, 8), (0, 0, 8, 8), (20, 4, 8, 8)]
    kw = dict(bank=small_bank, block=4, mode="adaptive", target_se=0.2, seed=2)
    multi = explain(tiny_net, image, roi=rois, **kw)
    total = 0
    for i, r in enumerate(rois):
        single = explain(tiny_net, image, roi=r, **kw)
        total += int(single.forwards)
        for name in ("ate", "ate_raw", "stderr", "ci_low", "ci_high", "n_draws", "screened"):
            np.testing.assert_allclose(multi[name].isel(roi=i).values, single[name].values, atol=1e-9)
    assert int(multi.forwards) < total


def test_adaptive_bounds_and_deterministic_interventions(tiny_net, image, small_bank):
    lazy = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, mode="adaptive", target_se=1e6)
    assert int(lazy.forwards) == 1 + 60 * 3  # every block settled by the screening draws
    assert set(np.unique(lazy.n_draws.values)) == {0, 3}
    full = explain(
        tiny_net, image, roi=ROI, bank=small_bank, block=4, mode="adaptive", target_se=0.0, band_stop=False,
        max_draws=20, tau=0.0, outcome="soft_dice",
    )
    n, se = full.n_draws.values[~full.roi_block.values], full.stderr.values[~full.roi_block.values]
    assert np.all((n == 20) | ((n == 3) & (se == 0)))  # only blocks with no variance at all stop early
    assert (n == 20).sum() > 5
    zero = explain(tiny_net, image, roi=ROI, block=4, intervention="zero", mode="adaptive")
    paper = explain(tiny_net, image, roi=ROI, block=4, intervention="zero")
    np.testing.assert_allclose(zero.ate.values, paper.ate.values)
    assert int(zero.forwards) == int(paper.forwards) == 61


def test_every_block_reports_stderr_and_interval(tiny_net, image, small_bank):
    ds = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10)
    cand = ~ds.roi_block.values
    assert np.all(ds.ci_low.values[cand] <= ds.ate_raw.values[cand] + 1e-12)
    assert np.all(ds.ate_raw.values[cand] <= ds.ci_high.values[cand] + 1e-12)
    assert np.all(ds.ci_low.values[~cand] == 0) and np.all(ds.ci_high.values[~cand] == 0)
    wide = ds.stderr.values > 0
    assert np.all(ds.ci_high.values[wide] > ds.ci_low.values[wide])
    zero = explain(tiny_net, image, roi=ROI, block=4, intervention="zero")
    np.testing.assert_array_equal(zero.ci_low.values, zero.ate_raw.values)  # no sampling error
    assert ds.attrs["ci_level"] == 0.95 and ds.attrs["mode"] == "paper"


# -- batching, out-of-memory and memory budget -----------------------------------------------------


def test_memory_budget_halves_the_batch_and_keeps_the_map(tiny_net, image, small_bank):
    free: dict = {}
    ref = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=64, runtime=free)
    item = free["item_bytes"]
    assert item > image.nbytes
    runtime: dict = {}
    ds = explain(
        tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=64,
        memory_budget=5 * item, runtime=runtime,
    )
    np.testing.assert_allclose(ds.ate.values, ref.ate.values, atol=1e-5)
    assert runtime["batch_size"] == 4 and runtime["batch_halvings"] == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert ds.attrs["memory_budget"] == 5 * item
    with pytest.warns(ResourceWarning, match="memory_budget"):
        tiny = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, memory_budget=1)
    np.testing.assert_allclose(tiny.ate.values, ref.ate.values, atol=1e-5)


def test_out_of_memory_in_adaptive_rounds_halves_and_continues(tiny_net, image, small_bank):
    fussy = OutOfMemoryAbove(tiny_net, 5, "CUDA out of memory (simulated)")
    kw = dict(roi=ROI, bank=small_bank, block=4, mode="adaptive", target_se=0.3, batch_size=64)
    runtime: dict = {}
    ds = explain(fussy, image, runtime=runtime, **kw)
    ref = explain(tiny_net, image, **kw)
    xr.testing.assert_allclose(ds, ref)
    assert fussy.largest == 4 and runtime["batch_halvings"] == 4


def test_out_of_memory_at_batch_one_is_raised(image):
    class Hopeless(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:  # the factual forward works, every perturbed batch fails
                raise torch.OutOfMemoryError("out of memory (simulated)")
            return torch.sigmoid(self.conv(x))

    with pytest.raises(torch.OutOfMemoryError):
        explain(Hopeless(), image, roi=ROI, block=4, intervention="zero", batch_size=4)


def test_batch_size_tuning_keeps_the_fastest_and_never_changes_results(tiny_net, image, small_bank):
    batcher = Batcher(64, tune=True, tune_from=8)
    batcher.begin(10_000)
    # Synthetic timings (seconds per batch): 16 is the fastest per job, 32 is clearly slower.
    for size, seconds in [(8, 1.0), (8, 0.8), (8, 0.8), (16, 1.0), (16, 0.8), (16, 0.9), (32, 9.0), (32, 2.4), (32, 2.5)]:
        assert batcher.current() == size
        batcher.observe(size, seconds, full=True)
    assert not batcher.tuning and batcher.current() == 16
    assert set(batcher.timings) == {8, 16, 32}

    short = Batcher(64, tune=True)
    short.begin(100)  # too few jobs to be worth tuning: one big batch instead
    assert short.current() == 64

    values = torch.arange(3000, dtype=torch.float64)[:, None]
    out, _ = run_batched(lambda u, d: values[u], torch.arange(3000), torch.arange(3000), Batcher(64, tune=True))
    torch.testing.assert_close(out, values)
    padded, _ = run_batched(lambda u, d: values[u], torch.arange(10), torch.arange(10), Batcher(8, pad=True))
    torch.testing.assert_close(padded, values[:10])

    a = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=40)
    b = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=40, batch_size=3)
    np.testing.assert_allclose(a.ate.values, b.ate.values, atol=1e-5)


# -- precision, layout, compile ----------------------------------------------------------------


def test_bfloat16_stays_within_the_documented_tolerance(tiny_net, image, small_bank):
    kw = dict(roi=ROI, bank=small_bank, block=4, fine=20, outcome="soft_dice", seed=1)
    ref = explain(tiny_net, image, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        low = explain(tiny_net, image, precision="bfloat16", check_precision=True, **kw)
    assert low.attrs["precision"] == "bfloat16" and low.attrs["precision_ok"] == 1
    assert 0 <= low.attrs["precision_error"] <= PRECISION_TOLERANCE
    assert low.attrs["precision_checked"] > 0
    assert np.abs(low.ate_raw.values - ref.ate_raw.values).max() <= PRECISION_TOLERANCE
    assert int(low.forwards) > int(ref.forwards)  # the check's forwards are counted


def test_precision_beyond_tolerance_is_reported_not_hidden(image):
    class Knife(torch.nn.Module):
        """Decides on the channel mean with a very sharp threshold: bfloat16 rounding flips pixels."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1, bias=False)
            torch.nn.init.constant_(self.conv.weight, 1 / 3)

        def forward(self, x):
            return torch.sigmoid(4000.0 * (self.conv(x).float() - 0.5))

    g = torch.Generator().manual_seed(5)
    near = 0.5 + 0.0015 * (torch.rand(3, 32, 32, generator=g) - 0.5)  # every pixel a hair from the threshold
    with pytest.warns(PrecisionWarning, match="float32"):
        ds = explain(Knife(), near, roi=ROI, block=4, intervention="zero", precision="bfloat16", check_precision=True)
    assert ds.attrs["precision_ok"] == 0
    assert ds.attrs["precision_error"] > PRECISION_TOLERANCE or ds.attrs["precision_m0_error"] > 0


def test_channels_last_gives_the_same_map_and_restores_the_model(tiny_net, image, small_bank):
    kw = dict(roi=ROI, bank=small_bank, block=4, fine=10)
    ref = explain(tiny_net, image, **kw)
    ds = explain(tiny_net, image, channels_last=True, check_precision=True, **kw)
    np.testing.assert_allclose(ds.ate.values, ref.ate.values, atol=1e-4)
    assert ds.attrs["channels_last"] == 1 and ds.attrs["precision_ok"] == 1
    assert all(p.is_contiguous() for p in tiny_net.parameters())


@pytest.mark.slow
def test_compile_gives_the_same_map(tiny_net, image):
    ref = explain(tiny_net, image, roi=ROI, block=4, intervention="zero")
    try:
        ds = explain(tiny_net, image, roi=ROI, block=4, intervention="zero", compile=True, batch_size=16)
    except Exception as exc:  # pragma: no cover - depends on the machine's compiler
        pytest.skip(f"torch.compile unavailable here: {exc}")
    if ds.attrs["compile"] == 0:
        pytest.skip("torch.compile fell back to eager on this machine")
    np.testing.assert_allclose(ds.ate.values, ref.ate.values, atol=1e-4)


# -- interrupts -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["paper", "adaptive"])
def test_keyboard_interrupt_returns_nothing_and_restores_the_model(tiny_net, image, small_bank, mode):
    tiny_net.train()
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    runtime: dict = {}
    result = None
    with pytest.raises(KeyboardInterrupt):
        result = explain(
            tiny_net, image, roi=ROI, bank=small_bank, block=4, batch_size=8, mode=mode,
            channels_last=True, progress=interrupt, runtime=runtime,
        )
    assert result is None and runtime == {}
    assert tiny_net.training, "training mode restored"
    assert all(p.is_contiguous() for p in tiny_net.parameters()), "memory layout restored"
    tiny_net.eval()
    after = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, batch_size=8, mode=mode)
    fresh = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, batch_size=8, mode=mode)
    xr.testing.assert_identical(after, fresh)


# -- several RoIs share forwards ----------------------------------------------------------------


def test_multi_roi_forwards_follow_the_union_of_survivors(tiny_net, image, small_bank):
    rois = [(0, 0, 4, 4), (0, 28, 4, 4), (28, 0, 4, 4), (28, 28, 4, 4), (12, 12, 8, 8), (4, 16, 4, 8)]
    kw = dict(bank=small_bank, block=4, fine=10, seed=3)
    multi = explain(tiny_net, image, roi=rois, **kw)
    singles = [explain(tiny_net, image, roi=r, **kw) for r in rois]
    cand = np.stack([~s.roi_block.values.reshape(-1) for s in singles])
    surv = np.stack([(~s.roi_block.values & ~s.screened.values).reshape(-1) for s in singles])
    expected = 1 + 3 * int(cand.any(0).sum()) + 10 * int(surv.any(0).sum())
    assert int(multi.forwards) == expected
    for i, s in enumerate(singles):
        np.testing.assert_allclose(multi.ate.isel(roi=i).values, s.ate.values, atol=1e-5)


def test_eight_rois_with_shared_survivors_cost_under_1_3_times_one():
    image = torch.zeros(1, 32, 32)
    image[:, 8:24, 4:28] = 1.0  # the object the RoIs sit on
    image[:, 0:4, 28:32] = 1.0  # the marker that gates every RoI's segmentation
    model = PlantedCauseModel(marker=(0, 28, 4))
    g = torch.Generator().manual_seed(0)
    bank = PatchBank(torch.rand(8, 1, 4, 4, generator=g))
    rois = [(8 + 8 * (i // 4), 4 + 6 * (i % 4), 4, 4) for i in range(8)]
    one = explain(model, image, roi=rois[0], bank=bank, block=4)
    eight = explain(model, image, roi=rois, bank=bank, block=4)
    assert int(eight.forwards) < 1.3 * int(one.forwards)
    assert (eight.ate.isel(block_y=0, block_x=7) < 0).all()  # the marker supports every RoI
