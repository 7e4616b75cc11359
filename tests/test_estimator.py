"""pdcr_lab.estimator: the paper's screened estimator and adaptive mode (directly and through
:func:`pdcr_lab.explain`), intervals, the batching policy (:class:`Batcher`), out-of-memory halving
and the memory budget. Results never depend on how the work is batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdcr_lab import PatchBank, explain
from pdcr_lab.estimator import Batcher, adaptive_ate, run_batched, screened_ate, t_quantile
from pdcr_lab.interventions import compose, draw_table
from pdcr_lab.testing import OutOfMemoryAbove, RandomConvNet, assert_effects_equal, dice_points

ROI = (12, 12, 8, 8)
MAP_VARS = ["ate", "ate_raw", "stderr", "ci_low", "ci_high", "n_draws", "screened"]


def _exact_expectation(net, image, bank, outcome="soft_dice"):
    """E_B[M(f(X with block p := B))] - M0 for every block, enumerated over the whole bank."""
    per_block = []
    for j in range(len(bank)):
        one = PatchBank(bank.blocks[j : j + 1])
        ds = explain(net, image, roi=ROI, bank=one, block=4, coarse=0, fine=1, tau=0.0, outcome=outcome)
        per_block.append(ds.ate_raw.values)
    return np.mean(per_block, axis=0)


def _synthetic(n_units=10, n_draws=120, seed=0):
    """Outcomes of draw d of unit u, a fixed table: unit u has mean 0.3 u and spread growing with u."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(0.0, 3.0, n_units)[:, None]
    values = rng.normal(size=(n_units, n_draws)) * scale + np.arange(n_units)[:, None] * 0.3
    seen: list[tuple[int, int]] = []

    def evaluate(units, draws):
        seen.extend(zip(units.tolist(), draws.tolist()))
        return torch.as_tensor(values[units.numpy(), draws.numpy()])[:, None]

    return values, evaluate, seen


# -- the paper's estimator ----------------------------------------------------------------------


def test_screened_ate_follows_the_two_stages_on_a_known_table():
    values, evaluate, seen = _synthetic(n_units=6, n_draws=8, seed=1)
    values[0] = 0.001  # unit 0: every draw within tau -> screened after the coarse draws
    cand = np.ones((1, 6), dtype=bool)
    cand[0, 5] = False  # unit 5 is an RoI block: never evaluated
    m0 = np.array([0.0])
    est = screened_ate(evaluate, cand, m0, coarse=3, fine=5, tau=0.02, stochastic=True, batch_size=4)
    assert sorted(d for u, d in seen if u == 0) == [0, 1, 2]  # screened: its fine draws are never spent
    for u in range(1, 5):
        assert sorted(d for u2, d in seen if u2 == u) == list(range(8))  # coarse 0-2, then fresh 3-7
        fine = values[u, 3:8]
        np.testing.assert_allclose(est.ate_raw[0, u], fine.mean())
        np.testing.assert_allclose(est.stderr[0, u], fine.std(ddof=1) / np.sqrt(5))
        assert est.n_draws[0, u] == 5
    assert not any(u == 5 for u, _ in seen)
    assert est.screened[0].tolist() == [True, False, False, False, False, False]
    assert est.n_draws[0, 0] == 3 and est.ate[0, 0] == 0 and est.ate[0, 5] == 0 and est.n_draws[0, 5] == 0
    assert est.forwards == len(seen) == 3 * 5 + 5 * 4
    half = t_quantile(0.95, 5) * est.stderr[0, 1:5]
    np.testing.assert_allclose(est.ci_low[0, 1:5], est.ate_raw[0, 1:5] - half)
    np.testing.assert_allclose(est.ci_high[0, 1:5], est.ate_raw[0, 1:5] + half)


def test_screened_ate_deterministic_treatment_uses_one_draw_per_unit():
    values, evaluate, seen = _synthetic(n_units=5, n_draws=4, seed=2)
    est = screened_ate(
        evaluate, np.ones((1, 5), bool), np.array([0.5]), coarse=3, fine=50, tau=0.02, stochastic=False, batch_size=64
    )
    assert sorted(seen) == [(u, 0) for u in range(5)]
    np.testing.assert_allclose(est.ate_raw[0], values[:, 0] - 0.5)
    np.testing.assert_array_equal(est.ci_low, est.ate_raw)  # no sampling error
    assert est.forwards == 5 and (est.stderr == 0).all()


def test_t_quantile_is_student_t_and_infinite_below_two_draws():
    assert float(t_quantile(0.95, 1)) == np.inf
    assert float(t_quantile(0.95, 2)) == pytest.approx(12.7062, abs=1e-4)
    assert float(t_quantile(0.95, 10**6)) == pytest.approx(1.95996, abs=1e-4)


def test_estimate_converges_to_exact_expectation_over_bank(tiny_net, image, small_bank):
    ds = explain(
        tiny_net, image, roi=ROI, bank=small_bank, block=4, coarse=0, fine=3000, tau=0.0, outcome="soft_dice", seed=3
    )
    exact = _exact_expectation(tiny_net, image, small_bank)  # the average over the 6 bank blocks, enumerated
    checked = ~ds.roi_block.values
    err = np.abs(ds.ate.values - exact)[checked]
    se = ds.stderr.values[checked]
    assert np.all(err <= 4 * se + 1e-6)
    assert np.all(ds.n_draws.values[~ds.roi_block.values] == 3000)


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


# -- adaptive mode --------------------------------------------------------------------------------


def test_adaptive_interval_covers_the_exact_expectation(tiny_net, image, small_bank):
    exact = _exact_expectation(tiny_net, image, small_bank)
    ds = explain(
        tiny_net, image, roi=ROI, bank=small_bank, block=4, tau=0.0, outcome="soft_dice",
        mode="adaptive", target_se=0.05, max_draws=400, band_stop=False, seed=7,
    )
    cand = ~ds.roi_block.values
    low, high = ds.ci_low.values[cand], ds.ci_high.values[cand]
    # float32 forward passes at different batch sizes differ by ~1e-5 points: blocks without any effect
    # have zero-width intervals that must not miss the exact 0 by that rounding.
    covered = (low <= exact[cand] + 1e-4) & (exact[cand] <= high + 1e-4)
    assert np.abs(exact[cand]).max() > 1.0, "the toy model must have real effects"
    assert covered.mean() >= 0.9  # nominal 95 %; sequential stopping may cost a little
    err = np.abs(ds.ate_raw.values - exact)[cand]
    assert np.all(err <= 5 * ds.stderr.values[cand] + 1e-4)
    # Every block reached the target or the draw budget.
    se, n = ds.stderr.values[cand], ds.n_draws.values[cand]
    assert np.all((se <= 0.05 + 1e-9) | (n == 400))
    assert ds.attrs["mode"] == "adaptive" and ds.attrs["target_se"] == 0.05


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
        assert_effects_equal(multi.isel(roi=i), single, variables=MAP_VARS, rtol=0, atol=1e-9)
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
    assert_effects_equal(zero, paper, variables=["ate"])
    assert int(zero.forwards) == int(paper.forwards) == 61


# -- batching, out-of-memory and memory budget -----------------------------------------------------


def test_batch_size_does_not_change_the_map(tiny_net, image, small_bank):
    maps = [explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=b) for b in (1, 7, 200)]
    assert_effects_equal(maps[1], maps[0], variables=["ate"], rtol=0, atol=1e-5)
    assert_effects_equal(maps[2], maps[0], variables=["ate"], rtol=0, atol=1e-5)


def test_batch_size_tuning_keeps_the_fastest_and_never_changes_results(tiny_net, image, small_bank):
    batcher = Batcher(64, tune=True, tune_from=8)
    batcher.begin(10_000)
    # Synthetic timings (seconds per batch): 16 is the fastest per job, 32 is clearly slower.
    # Synthetic timings (warm-up, then short batches until 0.05 s were timed, or one long batch): 16 is the
    # fastest per job, 32 clearly slower.
    for size, seconds in [(8, .030), (8, .024), (8, .026), (16, .030), (16, .024), (16, .027), (32, .09), (32, .07)]:
        assert batcher.current() == size
        batcher.observe(size, seconds, full=True)
    assert not batcher.tuning and batcher.current() == 16
    assert set(batcher.timings) == {8, 16, 32}
    long = Batcher(64, tune=True, tune_from=8)
    long.begin(10_000)
    for size, seconds in [(8, 1.0), (8, 0.8), (16, 1.0), (16, 0.8), (32, 9.0), (32, 2.4)]:  # one timed batch each
        assert long.current() == size
        long.observe(size, seconds, full=True)
    assert not long.tuning and long.current() == 16

    short = Batcher(64, tune=True, tune_from=1)
    short.begin(100)  # a short list tunes too (from the smallest size), never the largest size untimed
    assert short.current() == 1

    values = torch.arange(3000, dtype=torch.float64)[:, None]
    out, _ = run_batched(lambda u, d: values[u], torch.arange(3000), torch.arange(3000), Batcher(64, tune=True))
    torch.testing.assert_close(out, values)
    padded, _ = run_batched(lambda u, d: values[u], torch.arange(10), torch.arange(10), Batcher(8, pad=True))
    torch.testing.assert_close(padded, values[:10])

    a = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=40)
    b = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=40, batch_size=3)
    assert_effects_equal(b, a, variables=["ate"], rtol=0, atol=1e-5)


def test_run_batched_halves_on_out_of_memory_and_keeps_the_order():
    values = torch.arange(20, dtype=torch.float64)[:, None]
    fussy = OutOfMemoryAbove(torch.nn.Identity(), limit=3)
    out, size = run_batched(lambda u, d: fussy(values[u]), torch.arange(20), torch.zeros(20, dtype=torch.long), 16)
    torch.testing.assert_close(out, values)
    assert size == 2 and fussy.largest == 2  # 16 -> 8 -> 4 -> 2


def test_out_of_memory_halves_the_batch(tiny_net, image, small_bank):
    fussy = OutOfMemoryAbove(tiny_net, 8, "out of memory (simulated)")
    ds = explain(fussy, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=64)
    ref = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, batch_size=64)
    assert_effects_equal(ds, ref, variables=["ate"], rtol=0, atol=1e-5)
    assert fussy.largest == 8


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
    assert_effects_equal(ds, ref, variables=["ate"], rtol=0, atol=1e-5)
    assert runtime["batch_size"] == 4 and runtime["batch_halvings"] == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert ds.attrs["memory_budget"] == 5 * item
    with pytest.warns(ResourceWarning, match="memory_budget"):
        tiny = explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=10, memory_budget=1)
    assert_effects_equal(tiny, ref, variables=["ate"], rtol=0, atol=1e-5)


def test_out_of_memory_in_adaptive_rounds_halves_and_continues(tiny_net, image, small_bank):
    fussy = OutOfMemoryAbove(tiny_net, 5, "CUDA out of memory (simulated)")
    kw = dict(roi=ROI, bank=small_bank, block=4, mode="adaptive", target_se=0.3, batch_size=64)
    runtime: dict = {}
    ds = explain(fussy, image, runtime=runtime, **kw)
    ref = explain(tiny_net, image, **kw)
    assert_effects_equal(ds, ref)
    assert fussy.largest == 4 and runtime["batch_halvings"] == 4


def test_out_of_memory_at_batch_one_is_raised(image):
    # The factual forward works, every perturbed batch fails, even of one image.
    hopeless = OutOfMemoryAbove(RandomConvNet(), limit=0, free_calls=1)
    with pytest.raises(torch.OutOfMemoryError):
        explain(hopeless, image, roi=ROI, block=4, intervention="zero", batch_size=4)
    assert hopeless.calls == 4  # the factual forward, then batches of 4, 2 and 1


class FakeClock:
    """A clock that a fake model advances by the cost of each batch (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


COSTS = {  # seconds per batch of b jobs: unimodal curves of per-job cost, as measured on CPUs and GPUs
    "cpu cache cliff": lambda b: b * (0.010 if b <= 16 else 0.026),  # the U-Net: 144 vs 55 img/s
    "overhead then flat": lambda b: 0.02 + 0.004 * b,
    "best at one": lambda b: 0.003 * b ** 1.3,
    "gpu saturation": lambda b: 0.05 + 0.0005 * max(b, 32),
    "shallow valley": lambda b: b * (0.01 + 0.0004 * abs(np.log2(b) - 3)),
}


def _policy_run(cost, jobs: int, lists: int, noise: float, seed: int, cap: int = 64) -> tuple[int, dict]:
    clock = FakeClock()
    rng = np.random.default_rng(seed)

    def evaluate(units, draws):
        clock.now += cost(len(units)) * (1 + noise * rng.uniform(-1, 1))
        return units[:, None].double()

    batcher = Batcher(cap, tune=True, tune_from=1, clock=clock)
    for k in range(lists):  # e.g. paper mode's coarse and fine stages, or adaptive rounds
        units = torch.arange(jobs)
        out, _ = run_batched(evaluate, units, units, batcher)
        torch.testing.assert_close(out[:, 0], units.double())
    return batcher.chosen, batcher.timings


@pytest.mark.parametrize("name", sorted(COSTS))
@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("jobs, lists", [(5000, 1), (180, 2), (60, 6)])
def test_batch_policy_never_picks_a_size_more_than_15_percent_slower_than_the_best(name, noise, jobs, lists):
    """Against the true per-job cost of every size of the ladder, with noisy timings and short job lists."""
    cost = COSTS[name]
    ladder = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= jobs]  # a batch cannot hold more than the list
    best = min(cost(b) / b for b in ladder)
    for seed in range(5):
        size, timings = _policy_run(cost, jobs, lists, noise, seed)
        assert cost(size) / size <= 1.15 * best * (1 + noise), (name, size, timings)
        assert size in timings  # a measured size, never the largest one untimed


def test_batch_policy_resumes_across_calls_and_keeps_the_measured_best(tiny_net, image, small_bank):
    from pdcr_lab import engine

    engine._TUNED.pop(tiny_net, None)
    timed: list[dict] = []
    for _ in range(12):  # short calls: each one goes on with the ladder where the last one stopped
        runtime: dict = {}
        explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=5, runtime=runtime)
        timed.append(runtime["tuned_seconds_per_job"])
        if runtime["tuning_finished"]:
            break
    assert runtime["tuning_finished"], timed
    for before, after in zip(timed, timed[1:]):  # later calls go on (a size's second timing may lower it)
        assert set(before) <= set(after) and all(after[k] <= v for k, v in before.items())
    timings = runtime["tuned_seconds_per_job"]
    assert runtime["batch_size"] == min(timings, key=timings.get)
    again: dict = {}
    explain(tiny_net, image, roi=ROI, bank=small_bank, block=4, fine=5, runtime=again)
    assert again["tuned_seconds_per_job"] == timings and again["batch_size"] == runtime["batch_size"]
