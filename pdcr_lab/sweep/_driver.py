"""The sweep driver: validate, prepare the store, submit the pending tasks to dask, show progress.

The driver never computes: it plans (in this process, before anything starts), creates or checks the
store, then submits one dask task per pending (model, dataset, image, method), model by model, with
deterministic keys (a second driver on the same scheduler attaches to tasks still running instead of
duplicating them). Workers write their own results and markers, so the driver can die at any moment
without losing finished work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import Plan, SweepConfig, load_config, parse_config, resolve
from ._store import check_target, done_mask, prepare, record_run
from ._tasks import build_specs, run_task

__all__ = ["run_sweep", "plan_sweep", "SweepSummary"]


@dataclass
class SweepSummary:
    """What a :func:`run_sweep` call did."""

    store: Path  #: the sweep store
    total: int  #: tasks of the sweep
    skipped: int = 0  #: tasks done before this run
    computed: int = 0  #: tasks done by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (task, error) of the failed tasks
    seconds: float = 0.0  #: wall time of this run
    workers: int = 0  #: dask workers used
    dashboard: str | None = None  #: the dask dashboard's address, if served

    @property
    def complete(self) -> bool:
        """True when every task of the sweep is done (in this run or an earlier one)."""
        return self.skipped + self.computed == self.total

    @property
    def tasks_per_minute(self) -> float:
        return 60.0 * self.computed / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.skipped + self.computed} of {self.total} tasks done ({self.computed} now, {self.skipped} before) "
            f"in {self.seconds:.1f} s on {self.workers} worker(s): {self.tasks_per_minute:.1f} tasks/min",
        ]
        for what, error in self.failed[:10]:
            lines.append(f"FAILED {what}: {error}")
        if len(self.failed) > 10:
            lines.append(f"... and {len(self.failed) - 10} more failures")
        if not self.complete:
            lines.append("rerun the same command to compute the missing tasks")
        lines.append(f"store: {self.store} (open with pdcr_lab.load)")
        return "\n".join(lines)


def _as_config(config: str | os.PathLike | Mapping[str, Any] | SweepConfig) -> SweepConfig:
    if isinstance(config, SweepConfig):
        return config
    if isinstance(config, Mapping):
        return parse_config(config)
    return load_config(config)


def plan_sweep(config: str | os.PathLike | Mapping[str, Any] | SweepConfig, store: str | os.PathLike) -> Plan:
    """Validate `config` and the `store` location without computing anything; return the plan.

    Raises :class:`~pdcr_lab.sweep.ConfigError` naming the offending entry.

    Parameters
    ----------
    config : path to a YAML/TOML file, a mapping, or a SweepConfig
        What the sweep computes.
    store : str or os.PathLike
        Where its Zarr store goes (checked, not created).
    """
    cfg = _as_config(config)
    check_target(store)
    return resolve(cfg)


def _wants_gpu(cfg: SweepConfig) -> bool:
    if cfg.device.startswith("cuda"):
        return True
    if cfg.device != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


def _local_resources(cfg: SweepConfig) -> dict[str, float] | None:
    """Resources the workers of a LocalCluster advertise: one GPU each when the sweep uses GPUs."""
    if cfg.resources != "auto":
        return dict(cfg.resources) or None
    return {"GPU": 1} if _wants_gpu(cfg) else None


@contextlib.contextmanager
def _connect(client: Any, scheduler: str | None, workers: int | None, resources: dict[str, float] | None,
             n_tasks: int, log: Callable[[str], None]) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if scheduler:
        log(f"connecting to the dask scheduler at {scheduler}")
        # A scheduler file (dask scheduler --scheduler-file, SLURM setups) or an address.
        target = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
        with Client(**target) as remote:
            if workers:
                log(f"waiting for {workers} worker(s) to join")
                remote.wait_for_workers(workers)
            yield remote
        return
    if workers is None:
        import torch
        from dask.system import CPU_COUNT  # honours cgroup and affinity limits

        gpus = torch.cuda.device_count() if resources and "GPU" in resources else 0
        workers = gpus or CPU_COUNT
    workers = max(1, min(workers, n_tasks))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, resources=resources,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as local:
        yield local


def _resources(cfg: SweepConfig, client: Any, log: Callable[[str], None]) -> dict[str, float] | None:
    """What each task asks for: ``resources`` of the config, else one GPU when the workers have GPUs."""
    offered = [w.get("resources") or {} for w in _workers(client).values()]
    if cfg.resources != "auto":
        wanted = dict(cfg.resources) or None
        if wanted and not any(all(have.get(k, 0) >= v for k, v in wanted.items()) for have in offered):
            log(f"warning: no connected worker offers resources {wanted}; tasks wait until one joins "
                f"(start workers with: dask worker ADDRESS --resources \"{' '.join(f'{k}={v}' for k, v in wanted.items())}\")")
        return wanted
    if any("GPU" in have for have in offered):
        return {"GPU": 1}
    return None


def _workers(client: Any) -> dict[str, Any]:
    try:  # newer distributed lists only 5 workers unless asked for all
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # pragma: no cover - older distributed
        info = client.scheduler_info()
    return dict(info.get("workers", {}))


def _dashboard(client: Any) -> str | None:
    try:
        link = client.dashboard_link
    except Exception:
        link = None
    if link and importlib.util.find_spec("bokeh") is None and getattr(client, "cluster", None) is not None:
        return None  # a local scheduler without bokeh serves no dashboard
    return link


def run_sweep(
    config: str | os.PathLike | Mapping[str, Any] | SweepConfig,
    store: str | os.PathLike,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: bool = True,
    on_task: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
) -> SweepSummary:
    """Run (or resume) a sweep into a Zarr store.

    Parameters
    ----------
    config : path to a YAML/TOML file, a mapping, or a SweepConfig
        What to compute (see :mod:`pdcr_lab.sweep`).
    store : path ending in ``.zarr``
        Created on the first run; later runs with the same config compute only the tasks not yet
        done (a different config is refused).
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``) or the path of its scheduler file
        (``dask scheduler --scheduler-file``); default: a LocalCluster.
    workers : int, optional
        Local cluster: its number of worker processes (default: one per GPU, else one per core).
        With `scheduler`: wait until this many workers have joined before submitting.
    client : distributed.Client, optional
        Use this client (and its cluster) instead.
    progress : bool
        Show a progress bar with counts and the time left.
    on_task : callable(provenance dict), optional
        Called in this process after every finished task (e.g. to follow a sweep from a notebook).
    log : callable(str)
        Where progress messages go (default: print).

    Returns
    -------
    SweepSummary
        Counts, failures (the sweep continues past a failing task; rerun to retry it), timing.

    Raises
    ------
    ConfigError
        Before any work starts, naming the offending config entry or the store problem.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    start = time.perf_counter()
    cfg = _as_config(config)
    path = check_target(store)
    plan = resolve(cfg)
    tasks = plan.tasks()
    created = prepare(path, plan)
    done = done_mask(path)
    pending = [t for t in tasks if not done[t]]
    summary = SweepSummary(store=path, total=len(tasks), skipped=len(tasks) - len(pending))
    log(f"sweep {plan.fingerprint[:12]}: {len(tasks)} tasks ({len(plan.models)} models x {len(plan.datasets)} datasets x "
        f"{int((plan.image_ids != '').sum())} images x {len(plan.methods)} methods), {summary.skipped} already done; "
        f"store {path} ({'created' if created else 'resumed'})")
    if not pending:
        summary.seconds = time.perf_counter() - start
        return summary
    run = {"run_id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
           "pid": os.getpid(), "scheduler": scheduler or ("client" if client is not None else "LocalCluster"),
           "pending": len(pending), "status": "running"}
    record_run(path, run)
    # Keys name the sweep and the store: a second driver on the same scheduler attaches to tasks
    # still running there instead of starting them twice.
    prefix = hashlib.sha256(f"{plan.fingerprint}|{path.resolve()}".encode()).hexdigest()[:12]
    specs = {f"pdcr-sweep-{prefix}-{s.name}": s for s in build_specs(plan, str(path), pending)}
    with _connect(client, scheduler, workers, _local_resources(cfg), len(pending), log) as dask_client:
        summary.dashboard = _dashboard(dask_client)
        summary.workers = len(_workers(dask_client))
        log(f"dask dashboard: {summary.dashboard}" if summary.dashboard
            else "dask dashboard: not served (install bokeh>=3.1 for it)")
        resources = _resources(cfg, dask_client, log)
        futures = [
            dask_client.submit(run_task, spec, key=key, resources=resources, retries=cfg.retries)
            for key, spec in specs.items()
        ]
        bar = tqdm(total=len(tasks), initial=summary.skipped, unit="task", desc="sweep", disable=not progress,
                   dynamic_ncols=True, smoothing=0.05)
        status = "interrupted"
        finished: set[str] = set()
        failures: dict[str, str] = {}
        try:
            for future in as_completed(futures):
                if future.status != "finished":
                    try:  # waits for a result that was lost with its worker and is being recomputed
                        exc = future.exception()
                    except (Exception, asyncio.CancelledError) as error:  # cancelled futures raise
                        exc = error
                    if exc is not None:
                        failures[future.key] = f"{type(exc).__name__}: {exc}"
                        bar.set_postfix(failed=len(failures))
                        future.release()
                        continue
                info = future.result()
                failures.pop(future.key, None)
                if future.key not in finished:
                    finished.add(future.key)
                    bar.update(1)
                    if on_task is not None:
                        on_task(info)
                future.release()
            status = "finished" if not failures else "finished with failures"
        finally:
            bar.close()
            # The store, not the client, says what is done (the tasks write their own markers).
            done = done_mask(path)
            summary.computed = sum(bool(done[t]) for t in tasks) - summary.skipped
            summary.failed = [(specs[k].describe(), msg) for k, msg in failures.items() if not done[specs[k].index]]
            summary.seconds = time.perf_counter() - start
            run.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), computed=summary.computed,
                       failed=len(summary.failed), workers=summary.workers, seconds=round(summary.seconds, 3))
            with contextlib.suppress(OSError):
                record_run(path, run)
    return summary

