"""PdCR's coarse-to-fine ATE estimator, independent of what is being intervened on.

The estimator sees *units* (image blocks for :func:`pdcr_lab.explain`, network components for
:func:`pdcr_lab.explain_components`) and a function that returns the outcome of a batch of
(unit, draw) treatments. It runs every screening draw of every candidate unit in large batches,
then the fresh fine draws of the survivors (METHOD.md section 3), for one or several RoIs at once:
the perturbed inputs are shared, only the outcome differs per RoI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Estimate", "screened_ate", "run_batched"]

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
    """Per-(RoI, unit) results of the estimator; arrays of shape (R, U)."""

    ate: np.ndarray
    ate_raw: np.ndarray
    stderr: np.ndarray
    n_draws: np.ndarray
    screened: np.ndarray
    forwards: int
    batch_size: int


def run_batched(
    evaluate: Evaluate,
    units: torch.Tensor,
    draws: torch.Tensor,
    batch_size: int,
    on_done: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Evaluate all (unit, draw) jobs in batches; halve the batch on out-of-memory and go on.

    Returns the (J, R) outcomes as float64 on the CPU and the batch size that finally worked.
    """
    results = []
    start, size = 0, max(1, int(batch_size))
    while start < units.shape[0]:
        stop = min(start + size, units.shape[0])
        try:
            values = evaluate(units[start:stop], draws[start:stop])
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not _is_oom(exc) or size == 1:
                raise
            size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        results.append(values.detach().to("cpu", torch.float64))
        if on_done is not None:
            on_done(stop - start)
        start = stop
    if not results:
        return torch.zeros(0, 0, dtype=torch.float64), size
    return torch.cat(results), size


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


def screened_ate(
    evaluate: Evaluate,
    candidates: np.ndarray,
    m0: np.ndarray,
    *,
    coarse: int,
    fine: int,
    tau: float,
    stochastic: bool,
    batch_size: int,
    progress: Progress | None = None,
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
    stochastic : bool
        False for deterministic treatments (zero, mean, blur): one forward per unit, no averaging.
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
    total = [len(pool) * n_coarse]
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if progress is not None:
            progress(done[0], total[0])

    survivors = candidates.copy()
    forwards = 0
    if n_coarse > 0 and len(pool):
        units, draws = _jobs(pool, 0, n_coarse)
        values, batch_size = run_batched(evaluate, units, draws, batch_size, tick)
        forwards += len(units)
        deltas = values.numpy().reshape(len(pool), n_coarse, n_roi).transpose(2, 0, 1) - m0  # (R, P, S)
        quiet = (np.abs(deltas) < tau).all(axis=2)  # (R, P)
        sub = candidates[:, pool]
        ate_raw[:, pool] = np.where(sub, deltas.mean(axis=2), 0.0)
        stderr[:, pool] = np.where(sub, _stderr(deltas, axis=2), 0.0)
        n_draws[:, pool] = np.where(sub, n_coarse, 0)
        screened[:, pool] = sub & quiet
        survivors[:, pool] = sub & ~quiet
        if not stochastic:  # one forward is the whole estimate
            survivors[:] = False
    if stochastic and fine > 0:
        keep = np.flatnonzero(survivors.any(axis=0))
        total[0] += len(keep) * fine
        if len(keep):
            units, draws = _jobs(keep, n_coarse, fine)
            values, batch_size = run_batched(evaluate, units, draws, batch_size, tick)
            forwards += len(units)
            deltas = values.numpy().reshape(len(keep), fine, n_roi).transpose(2, 0, 1) - m0
            sub = survivors[:, keep]
            ate_raw[:, keep] = np.where(sub, deltas.mean(axis=2), ate_raw[:, keep])
            stderr[:, keep] = np.where(sub, _stderr(deltas, axis=2), stderr[:, keep])
            n_draws[:, keep] = np.where(sub, fine, n_draws[:, keep])
    relevant = candidates & ~screened
    ate = np.where(relevant & (np.abs(ate_raw) >= tau), ate_raw, 0.0)
    return Estimate(ate, ate_raw, stderr, n_draws, screened, forwards, batch_size)
