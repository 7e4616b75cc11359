"""PdCR's ATE estimators, independent of what is being intervened on.

The estimators see *units* (image blocks for :func:`pdcr_lab.explain`, network components for
:func:`pdcr_lab.explain_components`) and a function that returns the outcome of a batch of
(unit, draw) treatments, for one or several RoIs at once: the perturbed inputs are shared, only
the outcome differs per RoI. Draw ``d`` of unit ``u`` is always the same treatment (the draw table
is fixed up front), so no result depends on batching, on the batch size or on the device's timing.

* :func:`screened_ate` is the paper's coarse-to-fine estimator (docs/method.md section 3): every
  screening draw of every candidate unit in large batches, then *fresh* fine draws of the survivors.
* :func:`adaptive_ate` *(ours, beyond the paper)* samples every unit sequentially in rounds and stops
  it as soon as its confidence interval settles the tau question or its standard error reaches a
  target; the screening draws stay in the estimate.
* :func:`run_batched` evaluates a list of jobs in batches, halving the batch on out-of-memory (real,
  or predicted from a memory budget) and, when asked, timing a few batch sizes on the first jobs
  to keep the fastest (:class:`Batcher`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Estimate", "Batcher", "screened_ate", "adaptive_ate", "run_batched", "t_quantile"]

Evaluate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]

_OOM = tuple(
    e for e in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if e
)


def _is_oom(exc: BaseException) -> bool:
    if _OOM and isinstance(exc, _OOM):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class Estimate:
    """Per-(RoI, unit) results of an estimator; arrays of shape (R, U).

    ``ci_low``/``ci_high`` bound ``ate_raw`` (Student t interval at the run's ``ci_level``); NaN where
    a stochastic estimate rests on fewer than 2 draws, equal to ``ate_raw`` for deterministic
    treatments, 0 for units that are never perturbed.

    Parameters
    ----------
    ate : array (R, U)
        The effect after screening and tau-zeroing (the map).
    ate_raw : array (R, U)
        Mean of M_b - M0 over the draws used, before zeroing.
    stderr : array (R, U)
        Standard error of ``ate_raw`` (ddof=1; 0 below two draws).
    n_draws : int array (R, U)
        Draws in each estimate (0 for units that are not candidates).
    screened : bool array (R, U)
        True where the screening declared the unit irrelevant.
    forwards : int
        Treatments evaluated (forward passes, the factual pass not included).
    batch_size : int
        Batch size that finally worked (after tuning and halvings).
    ci_low, ci_high : array (R, U), optional
        Confidence interval of ``ate_raw`` (see above).
    rounds : int
        Batched job lists the estimator ran (2 for the paper's stages, more for adaptive rounds).
    """

    ate: np.ndarray
    ate_raw: np.ndarray
    stderr: np.ndarray
    n_draws: np.ndarray
    screened: np.ndarray
    forwards: int
    batch_size: int
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    rounds: int = 0


#: A timed tuning batch at least this long is measured once; shorter ones are repeated until this much
#: time was timed at that size (at least twice, at most :data:`MAX_TIMED_BATCHES` times; the best counts).
LONG_BATCH_SECONDS = 0.05
MAX_TIMED_BATCHES = 8


@dataclass
class Batcher:
    """Batch-size policy of one explanation, shared by all its stages and rounds.

    Parameters
    ----------
    size : int
        Current batch size (the largest allowed when `tune` is on).
    tune : bool
        Time a ladder of batch sizes (powers of two up to `size`, from `tune_from`) on the first jobs,
        one warm-up and one timed batch each (more when a batch takes under
        :data:`LONG_BATCH_SECONDS`), and keep the fastest; the ladder stops once a size
        is more than 15% slower per job than the best so far (throughput is unimodal in the batch
        size in practice). The jobs are real work, so tuning costs no extra forward passes; it never
        changes a result (draws are fixed up front). A job list too short to finish the ladder
        (an early stage, a short adaptive round) advances it, and the next list goes on from there.
    memory_budget : int, optional
        Bytes one batch may use. A batch predicted to exceed it (``size * item_bytes``) is treated
        like an out-of-memory error before it runs, and one that measurably did on CUDA right after:
        either way the size is halved and the run goes on.
    item_bytes : int, optional
        Estimated memory of one job (the engine measures the model's activations on the image).
    pad : bool
        Pad a short last batch to the full size (static shapes for ``torch.compile``).
    device : torch.device, optional
        Where the jobs run: index tensors are moved there once, results stay there until the end of
        a stage, so there is no host-device synchronisation per batch.
    tune_from : int
        Smallest batch size of the tuning ladder.
    halvings : int
        Out-of-memory halvings so far (state; leave at 0).
    peak_bytes : int
        Largest memory a batch was measured to use on CUDA with a budget (state; leave at 0).
    timings : dict of int -> float
        Best seconds per job measured at each tuned batch size (state; leave empty).
    clock : callable () -> float
        The clock batches are timed with (a fake one in tests).

    Examples
    --------
    >>> batcher = Batcher(64, tune=True, tune_from=16)
    >>> batcher.tuning, batcher.current()          # the ladder 16, 32, 64 starts at 16
    (True, 16)
    >>> batcher.halve()                            # out of memory at 16: 8 from now on, no tuning
    >>> batcher.size, batcher.tuning, batcher.stats()["batch_halvings"]
    (8, False, 1)
    """

    size: int
    tune: bool = False
    memory_budget: int | None = None
    item_bytes: int | None = None
    pad: bool = False
    device: torch.device | None = None
    tune_from: int = 8
    halvings: int = 0
    peak_bytes: int = 0
    timings: dict[int, float] = field(default_factory=dict)  # batch size -> best seconds per job
    clock: Callable[[], float] = time.perf_counter
    _ladder: list[int] | None = None
    _seen: dict[int, int] = field(default_factory=dict)
    _timed: dict[int, float] = field(default_factory=dict)
    _warned: bool = False
    _paused: bool = False

    def __post_init__(self) -> None:
        self.size = max(1, int(self.size))
        if self.tune:
            ladder, s = [], min(self.tune_from, self.size)
            while s < self.size:
                ladder.append(s)
                s *= 2
            self._ladder = [*ladder, self.size]

    # -- the policy ------------------------------------------------------------------------------
    @property
    def tuning(self) -> bool:
        """Whether the batch sizes of the ladder are still being timed."""
        return bool(self._ladder) and not self._paused

    def current(self) -> int:
        """The batch size of the next batch: the ladder's size while tuning, else :attr:`chosen`."""
        return self._ladder[0] if self.tuning else self.chosen

    @property
    def chosen(self) -> int:
        """The fastest size timed so far (within `size`), or `size` when none was timed."""
        timed = [(t, -s) for s, t in self.timings.items() if s <= self.size]
        return -min(timed)[1] if timed else self.size

    @property
    def finished(self) -> bool:
        """Whether tuning is over (or was never asked for)."""
        return not self._ladder

    def begin(self, jobs: int) -> None:
        """A new job list: tuning goes on where the previous list left it.

        A list too short for one full batch at the ladder's next size runs at the fastest size timed so
        far; a later, longer list resumes the ladder.

        Parameters
        ----------
        jobs : int
            Number of jobs in the list.
        """
        self._paused = not self._ladder or self._ladder[0] > jobs

    def state(self) -> dict:
        """The tuning state (timings, remaining ladder) for a later explanation of the same model and shape."""
        return {"timings": dict(self.timings), "ladder": list(self._ladder or []), "seen": dict(self._seen),
                "timed": dict(self._timed)}

    def resume(self, state: dict) -> None:
        """Continue tuning from :meth:`state` of an earlier explanation (sizes above `size` dropped).

        Parameters
        ----------
        state : dict
            What :meth:`state` returned.
        """
        self.timings = {s: t for s, t in state["timings"].items() if s <= self.size}
        self._seen = {s: n for s, n in state["seen"].items() if s <= self.size}
        self._timed = {s: t for s, t in state["timed"].items() if s <= self.size}
        if self.tune:
            self._ladder = [s for s in state["ladder"] if s <= self.size] or None
            self._finish_tuning()

    def halve(self) -> None:
        """Out of memory (real or predicted) at the current size: halve it and stop tuning above it."""
        size = self.current()
        self.halvings += 1
        self.size = max(1, size // 2)
        if self._ladder:
            self._ladder = [s for s in self._ladder if s <= self.size] or None
            self._finish_tuning()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def over_budget(self, size: int) -> bool:
        """Whether a batch of `size` jobs is predicted to exceed the memory budget.

        A single job never is (one warning says it exceeds the budget on its own).

        Parameters
        ----------
        size : int
            Jobs in the batch about to run.
        """
        if self.memory_budget is None or not self.item_bytes:
            return False
        if size * self.item_bytes <= self.memory_budget:
            return False
        if size == 1:
            if not self._warned:
                warnings.warn(
                    f"memory_budget={self.memory_budget} bytes is below the estimated footprint of one image "
                    f"({self.item_bytes} bytes); running one image per batch",
                    ResourceWarning,
                    stacklevel=4,
                )
                self._warned = True
            return False
        return True

    def _finish_tuning(self) -> None:
        if self._ladder is None or len(self._ladder) == 0:
            self._ladder = None
        if self._ladder is None and self.timings:
            self.size = self.chosen

    def observe(self, size: int, seconds: float, full: bool) -> None:
        """Feed the time of one batch (only full batches at a tuned size count).

        Parameters
        ----------
        size : int
            Batch size the batch ran at.
        seconds : float
            Its wall-clock time (synchronised on CUDA).
        full : bool
            Whether the batch held `size` real jobs (a short last batch is not timed).
        """
        if not self.tuning or size != self._ladder[0] or not full:
            return
        seen = self._seen.get(size, 0)
        self._seen[size] = seen + 1
        if seen == 0:  # warm-up: first call at a new shape pays one-off costs
            return
        per_job = seconds / size
        self.timings[size] = min(self.timings.get(size, math.inf), per_job)
        self._timed[size] = self._timed.get(size, 0.0) + seconds
        # One long batch is a measurement; short ones are repeated (the best counts) until enough time was
        # timed for scheduler noise on a shared machine not to decide the size.
        if seconds >= LONG_BATCH_SECONDS or (seen >= 2 and (self._timed[size] >= LONG_BATCH_SECONDS
                                                           or seen >= MAX_TIMED_BATCHES)):
            best = min(self.timings.values())
            self._ladder.pop(0)
            # Throughput per job is unimodal in the batch size in practice: stop once clearly past the top.
            if self.timings[size] > 1.15 * best:
                self._ladder = []
            self._finish_tuning()

    def stats(self) -> dict:
        """Facts for ``explain(runtime=...)``: batch size in use, halvings, tuned timings, peak bytes."""
        return {
            "batch_size": self.current() if self._ladder else self.size,
            "tuning_finished": self.finished,
            "batch_halvings": self.halvings,
            "tuned_seconds_per_job": {int(k): float(v) for k, v in sorted(self.timings.items())},
            "peak_bytes": int(self.peak_bytes),
        }


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batched(
    evaluate: Evaluate,
    units: torch.Tensor,
    draws: torch.Tensor,
    batch_size: int | Batcher,
    on_done: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Evaluate all (unit, draw) jobs in batches; halve the batch on out-of-memory and go on.

    Parameters
    ----------
    evaluate : callable (units (J,), draws (J,)) -> outcomes (J, R)
        Outcomes of a batch of jobs, for every RoI.
    units, draws : LongTensor (J,)
        The jobs: unit and draw number of each.
    batch_size : int or Batcher
        A fixed size or a :class:`Batcher` (tuning, memory budget, padding, device).
    on_done : callable(int), optional
        Called with the number of jobs of every finished batch (progress).

    Returns
    -------
    (Tensor (J, R), int)
        The outcomes as float64 on the CPU and the batch size that finally worked.

    Examples
    --------
    >>> def evaluate(units, draws):
    ...     if len(units) > 2:
    ...         raise RuntimeError("CUDA out of memory")   # pretend only 2 jobs fit
    ...     return (10.0 * units + draws)[:, None].float()
    >>> values, size = run_batched(evaluate, torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), 4)
    >>> values[:, 0].tolist(), size
    ([0.0, 10.0, 21.0], 2)
    """
    batcher = batch_size if isinstance(batch_size, Batcher) else Batcher(int(batch_size))
    device = batcher.device
    if device is not None:
        units, draws = units.to(device), draws.to(device)
    cuda = device is not None and device.type == "cuda"
    results = []
    start, total = 0, units.shape[0]
    batcher.begin(total)
    while start < total:
        size = batcher.current()
        if batcher.over_budget(size):
            batcher.halve()
            continue
        stop = min(start + size, total)
        u, d = units[start:stop], draws[start:stop]
        if batcher.pad and stop - start < size:
            fill = size - (stop - start)
            u, d = torch.cat([u, u[-1:].expand(fill)]), torch.cat([d, d[-1:].expand(fill)])
        timing = batcher.tuning
        if timing:
            _sync(device)
        if cuda and batcher.memory_budget is not None:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        began = batcher.clock()
        try:
            values = evaluate(u, d)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not _is_oom(exc) or size == 1:
                raise
            del exc
            batcher.halve()
            continue
        values = values[: stop - start].detach()
        if timing:
            _sync(device)
            batcher.observe(size, batcher.clock() - began, full=stop - start == size)
        if cuda and batcher.memory_budget is not None:
            used = torch.cuda.max_memory_allocated(device) - base
            batcher.peak_bytes = max(batcher.peak_bytes, used)
            if used > batcher.memory_budget and size > 1 and size == batcher.current():
                batcher.halve()  # this batch fitted on the card but broke the budget: smaller from now on
        results.append(values)
        if on_done is not None:
            on_done(stop - start)
        start = stop
    if not results:
        return torch.zeros(0, 0, dtype=torch.float64), batcher.size
    return torch.cat(results).to("cpu").to(torch.float64), batcher.size


def _jobs(units: np.ndarray, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs (u, d) for u in units, d in [first, first + count), unit-major."""
    u = torch.as_tensor(np.repeat(units, count), dtype=torch.long)
    d = torch.as_tensor(np.tile(np.arange(first, first + count), len(units)), dtype=torch.long)
    return u, d


def _stderr(deltas: np.ndarray, axis: int) -> np.ndarray:
    n = deltas.shape[axis]
    if n < 2:
        return np.zeros(np.delete(deltas.shape, axis))
    return deltas.std(axis=axis, ddof=1) / np.sqrt(n)


def t_quantile(level: float, n: np.ndarray | int) -> np.ndarray:
    """Two-sided Student t quantile for a `level` interval of a mean of `n` draws (inf below 2 draws).

    Parameters
    ----------
    level : float
        Confidence level in (0, 1), e.g. 0.95.
    n : int or int array
        Number of draws (n - 1 degrees of freedom).

    Examples
    --------
    >>> np.round(t_quantile(0.95, np.array([1, 2, 51])), 3)
    array([   inf, 12.706,  2.009])
    """
    from scipy.stats import t

    n = np.asarray(n, dtype=np.float64)
    dof = np.maximum(n - 1, 1)
    return np.where(n >= 2, t.ppf(0.5 + level / 2, dof), np.inf)


def _interval(mean: np.ndarray, se: np.ndarray, n: np.ndarray, level: float, stochastic: bool) -> tuple:
    if not stochastic:
        return mean.copy(), mean.copy()
    with np.errstate(invalid="ignore"):
        half = t_quantile(level, n) * se
        low, high = mean - half, mean + half
    low = np.where(n >= 2, low, np.nan)
    high = np.where(n >= 2, high, np.nan)
    return np.where(n > 0, low, 0.0), np.where(n > 0, high, 0.0)


def _progress(progress: Progress | None) -> tuple[Callable[[int], None], list[int]]:
    state = [0, 0]  # done, total

    def tick(k: int) -> None:
        state[0] += k
        if progress is not None:
            progress(state[0], state[1])

    return tick, state


def screened_ate(
    evaluate: Evaluate,
    candidates: np.ndarray,
    m0: np.ndarray,
    *,
    coarse: int,
    fine: int,
    tau: float,
    stochastic: bool,
    batch_size: int | Batcher,
    progress: Progress | None = None,
    ci_level: float = 0.95,
) -> Estimate:
    """The paper's estimator for every candidate unit and RoI.

    Parameters
    ----------
    evaluate : callable (units (J,), draws (J,)) -> outcomes (J, R)
        Draw d of unit u must always be the same treatment (draws are fixed up front), so the
        result does not depend on batching. Coarse draws are 0..S-1, fine draws S..S+N-1.
    candidates : bool array (R, U)
        Units that may be perturbed for each RoI (RoI blocks are excluded).
    m0 : array (R,)
        Factual outcome per RoI.
    coarse : int
        S, screening draws per candidate unit (draws 0..S-1).
    fine : int
        N, fresh draws of every unit that survives the screening for some RoI.
    tau : float
        Screening and zeroing threshold in outcome units.
    stochastic : bool
        False for deterministic treatments (zero, mean, blur): one forward per unit, no averaging.
    batch_size : int or Batcher
        Jobs per batch, or the batch policy (see :func:`run_batched`).
    progress : callable(done, total), optional
        Receives the counts of evaluated and planned jobs.
    ci_level : float
        Level of the reported confidence interval of ``ate_raw`` (it does not change the estimate).

    Returns
    -------
    Estimate

    Examples
    --------
    Three units whose treatments move the outcome by about -5, 0 and +3 points:

    >>> effect = torch.tensor([-5.0, 0.0, 3.0])
    >>> def evaluate(units, draws):                      # outcomes (J, R) for one RoI
    ...     return (100.0 + effect[units] * (1 + 0.1 * (draws % 2)))[:, None]
    >>> est = screened_ate(evaluate, np.ones((1, 3), bool), np.array([100.0]),
    ...                    coarse=3, fine=4, tau=0.02, stochastic=True, batch_size=8)
    >>> np.round(est.ate, 2), est.screened, est.n_draws, est.forwards
    (array([[-5.25,  0.  ,  3.15]]), array([[False,  True, False]]), array([[4, 3, 4]], dtype=int32), 17)
    """
    candidates = np.asarray(candidates, dtype=bool)
    n_roi, n_units = candidates.shape
    m0 = np.asarray(m0, dtype=np.float64).reshape(n_roi, 1, 1)
    shape = (n_roi, n_units)
    ate_raw = np.zeros(shape)
    stderr = np.zeros(shape)
    n_draws = np.zeros(shape, dtype=np.int32)
    screened = np.zeros(shape, dtype=bool)

    pool = np.flatnonzero(candidates.any(axis=0))
    n_coarse = coarse if stochastic else 1
    tick, state = _progress(progress)
    state[1] = len(pool) * n_coarse

    survivors = candidates.copy()
    forwards, rounds = 0, 0
    size = batch_size.size if isinstance(batch_size, Batcher) else int(batch_size)

    def stage(cols: np.ndarray, first: int, count: int, sub: np.ndarray) -> np.ndarray:
        """Draws first..first+count of every unit in `cols`; records the estimate where `sub`."""
        nonlocal forwards, rounds, size
        units, draws = _jobs(cols, first, count)
        values, size = run_batched(evaluate, units, draws, batch_size, tick)
        forwards += len(units)
        rounds += 1
        deltas = values.numpy().reshape(len(cols), count, n_roi).transpose(2, 0, 1) - m0  # (R, U, draws)
        ate_raw[:, cols] = np.where(sub, deltas.mean(axis=2), ate_raw[:, cols])
        stderr[:, cols] = np.where(sub, _stderr(deltas, axis=2), stderr[:, cols])
        n_draws[:, cols] = np.where(sub, count, n_draws[:, cols])
        return deltas

    if n_coarse > 0 and len(pool):
        sub = candidates[:, pool]
        quiet = (np.abs(stage(pool, 0, n_coarse, sub)) < tau).all(axis=2)  # (R, P)
        screened[:, pool] = sub & quiet
        survivors[:, pool] = sub & ~quiet
        if not stochastic:  # one forward is the whole estimate
            survivors[:] = False
    if stochastic and fine > 0:
        keep = np.flatnonzero(survivors.any(axis=0))
        state[1] += len(keep) * fine
        if len(keep):
            stage(keep, n_coarse, fine, survivors[:, keep])
    relevant = candidates & ~screened
    ate = np.where(relevant & (np.abs(ate_raw) >= tau), ate_raw, 0.0)
    low, high = _interval(ate_raw, stderr, n_draws, ci_level, stochastic)
    return Estimate(ate, ate_raw, stderr, n_draws, screened, forwards, size, low, high, rounds)


def adaptive_ate(
    evaluate: Evaluate,
    candidates: np.ndarray,
    m0: np.ndarray,
    *,
    first: int,
    max_draws: int,
    target_se: float,
    tau: float,
    batch_size: int | Batcher,
    ci_level: float = 0.95,
    band_stop: bool = True,
    stochastic: bool = True,
    progress: Progress | None = None,
) -> Estimate:
    """Sequential ATE estimation *(ours, beyond the paper)*: each unit stops when its estimate is settled.

    Every candidate unit first gets `first` draws (0..first-1, the paper's screening draws). Then, in
    rounds, every unit still active for some RoI gets its next draws from the fixed draw table, all
    of them in one batched job list. A (RoI, unit) pair stops at the first draw count n >= `first`
    where one rule holds:

    * precision: its standard error s / sqrt(n) is <= `target_se`;
    * decision (when `band_stop`): its `ci_level` Student t interval lies entirely outside the tau
      band (the unit matters and its sign is known) or entirely inside it (it does not matter);
    * budget: n == `max_draws`.

    The rules are checked at *every* draw count, so the stopping point, and hence the estimate, is a
    function of the draw sequence alone: it does not depend on the round sizes, on the batch size or
    on which other RoIs share the call (draws past a pair's stopping point, spent because the unit
    was still active for another RoI or because a round overshot, are not used). Round sizes follow
    the projected need (s / target_se)^2, between +50% and +100% of the draws so far.

    The estimate of a stopped pair is the mean of all its draws (the screening draws included),
    with its standard error and t interval. ``screened`` marks pairs that stopped at n == `first`
    with every draw within tau (the paper's screening outcome); ``ate`` is ``ate_raw`` where
    |ate_raw| >= tau and 0 elsewhere, as in the paper.

    Note: stopping on the observed standard error makes the reported interval approximate (its
    coverage can fall below the nominal level for units whose rare large effects were not yet
    seen); `first` and `max_draws` bound that risk.

    Parameters
    ----------
    evaluate : callable (units (J,), draws (J,)) -> outcomes (J, R)
        As in :func:`screened_ate`; draws may go up to `max_draws` - 1.
    candidates : bool array (R, U)
        Units that may be perturbed for each RoI.
    m0 : array (R,)
        Factual outcome per RoI.
    first : int
        Draws every candidate gets before any rule is checked (at least 1).
    max_draws : int
        Most draws per unit.
    target_se : float
        Precision rule: stop once the standard error is <= this (outcome units).
    tau : float
        Width of the band of the decision rule, and the zeroing threshold.
    batch_size : int or Batcher
        Jobs per batch, or the batch policy (see :func:`run_batched`).
    ci_level : float
        Level of the t interval of the decision rule and of the reported interval.
    band_stop : bool
        Use the decision rule.
    stochastic : bool
        False for deterministic treatments: falls back to one forward per unit
        (:func:`screened_ate` with one draw).
    progress : callable(done, total), optional
        Receives the counts of evaluated and planned jobs.

    Returns
    -------
    Estimate

    Examples
    --------
    A unit without effect stops after its first draws; a noisy one (draws of -1 and -3) as soon as its
    95% interval lies entirely below -tau, after 4 draws:

    >>> noise = torch.tensor([1.0, -1.0] * 20)
    >>> def evaluate(units, draws):
    ...     return (100.0 - 2.0 * units + units * noise[draws])[:, None]
    >>> est = adaptive_ate(evaluate, np.ones((1, 2), bool), np.array([100.0]), first=3, max_draws=40,
    ...                    target_se=0.25, tau=0.02, batch_size=16)
    >>> est.n_draws.tolist(), est.screened.tolist(), est.ate.tolist()
    ([[3, 4]], [[True, False]], [[0.0, -2.0]])
    """
    if not stochastic:  # a deterministic treatment is settled by one forward
        return screened_ate(
            evaluate, candidates, m0, coarse=1, fine=0, tau=tau, stochastic=False,
            batch_size=batch_size, progress=progress, ci_level=ci_level,
        )
    candidates = np.asarray(candidates, dtype=bool)
    n_roi, n_units = candidates.shape
    first = max(1, int(first))
    max_draws = max(first, int(max_draws))
    m0 = np.asarray(m0, dtype=np.float64).reshape(n_roi, 1)
    deltas = np.zeros((n_roi, n_units, max_draws))
    have = np.zeros(n_units, dtype=np.int64)  # draws evaluated per unit (shared by the RoIs)
    stop = np.zeros((n_roi, n_units), dtype=np.int64)  # draw count each pair stopped at; 0 = active
    active = candidates.copy()
    tick, state = _progress(progress)
    size = batch_size.size if isinstance(batch_size, Batcher) else int(batch_size)
    forwards = rounds = 0
    levels = t_quantile(ci_level, np.arange(max_draws + 1))  # quantile per draw count

    while active.any():
        units = np.flatnonzero(active.any(axis=0))
        steps = _next_steps(deltas, have, active, units, first, max_draws, target_se)
        u = np.repeat(units, steps)
        d = np.concatenate([np.arange(have[k], have[k] + s) for k, s in zip(units, steps)])
        state[1] += len(u)
        values, size = run_batched(
            evaluate, torch.as_tensor(u, dtype=torch.long), torch.as_tensor(d, dtype=torch.long), batch_size, tick
        )
        forwards += len(u)
        rounds += 1
        deltas[:, u, d] = values.numpy().T - m0
        have[units] += steps
        _update_stops(deltas, have, active, stop, units, first, max_draws, target_se, tau, levels, band_stop)

    n = stop
    ate_raw, stderr = _moments(deltas, n)
    low, high = _interval(ate_raw, stderr, n, ci_level, True)
    within = np.abs(deltas) < tau
    all_within = np.cumsum(~within, axis=2)  # count of draws beyond tau up to each n
    idx = np.clip(n - 1, 0, max_draws - 1)[..., None]
    quiet = np.take_along_axis(all_within, idx, axis=2)[..., 0] == 0
    screened = candidates & (n == first) & quiet
    ate = np.where(candidates & ~screened & (np.abs(ate_raw) >= tau), ate_raw, 0.0)
    return Estimate(
        ate, ate_raw, stderr, n.astype(np.int32), screened, forwards, size, low, high, rounds
    )


def _moments(deltas: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (ddof=1) of the first n[r, u] draws of every pair (0 where n == 0)."""
    count = deltas.shape[2]
    mask = np.arange(count)[None, None, :] < n[..., None]
    safe = np.maximum(n, 1)
    mean = np.where(mask, deltas, 0.0).sum(axis=2) / safe
    dev = np.where(mask, deltas - mean[..., None], 0.0)
    var = (dev**2).sum(axis=2) / np.maximum(n - 1, 1)
    se = np.where(n >= 2, np.sqrt(var / safe), 0.0)
    return np.where(n > 0, mean, 0.0), se


def _running(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running mean and standard error after 1..D draws, shape (..., D)."""
    k = np.arange(1, deltas.shape[-1] + 1, dtype=np.float64)
    s1 = np.cumsum(deltas, axis=-1)
    s2 = np.cumsum(deltas**2, axis=-1)
    mean = s1 / k
    var = np.maximum(s2 - s1 * mean, 0.0) / np.maximum(k - 1, 1)
    # Cancellation leaves ~1e-13 where every draw is equal; call that zero so exact ties stop.
    var = np.where(var <= 1e-12 * np.maximum(1.0, mean**2), 0.0, var)
    se = np.where(k >= 2, np.sqrt(var / k), np.inf)
    return mean, se


def _update_stops(deltas, have, active, stop, units, first, max_draws, target_se, tau, levels, band_stop) -> None:
    """Stop the active pairs of `units` at the first draw count where a rule holds."""
    count = int(have[units].max())
    mean, se = _running(deltas[:, units, :count])  # (R, K, count)
    k = np.arange(1, count + 1)
    finite = np.isfinite(se)
    with np.errstate(invalid="ignore"):  # inf quantile x 0 at one draw; masked right away
        half = np.where(finite, levels[k] * np.where(finite, se, 0.0), np.inf)
    rule = se <= target_se * (1 + 1e-9)
    if band_stop:
        low, high = mean - half, mean + half
        rule |= (low > tau) | (high < -tau) | ((low > -tau) & (high < tau))
    available = k[None, :] <= have[units][:, None]  # (K, count)
    rule &= available[None] & (k >= first)[None, None, :]
    rule |= (k == max_draws)[None, None, :] & available[None]
    hit = rule.any(axis=2)
    at = rule.argmax(axis=2) + 1  # first draw count that satisfies a rule
    sub_active = active[:, units]
    done = sub_active & hit
    stop_sub = stop[:, units]
    stop_sub[done] = at[done]
    stop[:, units] = stop_sub
    sub_active &= ~done
    active[:, units] = sub_active


def _next_steps(deltas, have, active, units, first, max_draws, target_se) -> np.ndarray:
    """Draws to add to each active unit this round: the projected need, +50% to +100% of what it has."""
    n = have[units]
    steps = np.where(n == 0, first, 0)
    grow = n > 0
    if grow.any():
        idx = units[grow]
        n_g = n[grow]
        _, se = _moments(deltas[:, idx], np.broadcast_to(n_g, (deltas.shape[0], len(idx))))
        sd = se * np.sqrt(n_g)[None, :]
        sd = np.where(active[:, idx], sd, 0.0).max(axis=0)
        if target_se > 0:
            need = np.ceil((sd / target_se) ** 2)
        else:
            need = np.full(len(idx), float(max_draws))
        step = np.clip(need - n_g, np.ceil(n_g / 2), n_g)
        steps[grow] = step.astype(np.int64)
    return np.minimum(np.maximum(steps, 1), max_draws - n)
