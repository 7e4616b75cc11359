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

from ._config import ConfigError, Plan, SweepConfig, check_config, load_config, parse_config, resolve
from ._store import check_sweep_store, check_target, done_mask, prepare, record_run
from ._tasks import build_specs, run_task

__all__ = ["run_sweep", "plan_sweep", "check_sweep", "SweepSummary", "SweepCheck", "LOCALHOST"]

#: Where every service of a local cluster listens (scheduler, workers, nannies, HTTP servers).
LOCALHOST = "127.0.0.1"


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


def plan_sweep(config: str | os.PathLike | Mapping[str, Any] | SweepConfig, store: str | os.PathLike, *,
               local: bool = True) -> Plan:
    """Validate `config` and the `store` location and compute the plan, without writing anything.

    Planning needs the data: it loads every dataset (calling dataset factories) and, with
    ``probe: true``, builds every model once (calling model factories). :func:`check_sweep` (a dry
    run) checks what can be checked without calling anything. Raises
    :class:`~pdcr_lab.sweep.ConfigError` naming the offending entry.

    Parameters
    ----------
    config : path to a YAML/TOML file, a mapping, or a SweepConfig
        What the sweep computes.
    store : str or os.PathLike
        Where its Zarr store goes (checked, not created).
    local : bool
        The workers will run on this machine: a CUDA `device` of the config must exist here.
    """
    cfg = _as_config(config)
    check_target(store)
    return resolve(cfg, local=local)


@dataclass
class SweepCheck:
    """What a dry run (:func:`check_sweep`) found: the config's size and what happens to the store."""

    store: Path  #: the sweep store
    models: int  #: model entries
    datasets: int  #: dataset entries
    methods: int  #: method entries
    store_action: str  #: "create", "resume" or "replace"

    def __str__(self) -> str:
        return (f"config OK: {self.models} model(s) x {self.datasets} dataset(s) x {self.methods} method(s); "
                f"store {self.store}: {self.store_action}\n"
                "a dry run imports and checks the factories and explainers but calls none of them: images, "
                "RoIs on the images and the models' outputs are checked when the sweep starts")


def check_sweep(config: str | os.PathLike | Mapping[str, Any] | SweepConfig, store: str | os.PathLike, *,
                local: bool = True, overwrite: bool = False) -> SweepCheck:
    """A dry run: every check of the config and the store that calls nothing the config names.

    The structure, the methods and their parameters (the explainers' own checks), the device, model
    and dataset factories (imported, callable, taking their options: their modules are imported but
    no factory is called), RoI files, and the store location. Nothing is written.

    Parameters
    ----------
    config : path to a YAML/TOML file, a mapping, or a SweepConfig
        What the sweep computes.
    store : str or os.PathLike
        Where its Zarr store goes.
    local : bool
        The workers will run on this machine: a CUDA `device` of the config must exist here.
    overwrite : bool
        The run will replace an existing store: it must be a sweep store.

    Raises
    ------
    ConfigError
        Naming the config file and the offending entry, or the store problem.
    """
    cfg = _as_config(config)
    path = check_target(store)
    check_config(cfg, local=local)
    action = "create"
    if path.exists() or path.is_symlink():
        check_sweep_store(path) if overwrite else _same_config(path, cfg)
        action = "replace" if overwrite else "resume"
    return SweepCheck(path, len(cfg.models), len(cfg.datasets), len(cfg.methods), action)


def _same_config(path: Path, cfg: SweepConfig) -> None:
    """Refuse a store made from another config (a dry run cannot compare the data: the run does)."""
    import json

    import zarr

    attrs = dict(zarr.open_group(store=str(path), mode="r").attrs)
    if "sweep_config" not in attrs:
        raise ConfigError(f"store {str(path)!r} is a Zarr store but not a sweep store; choose another --store")
    stored = json.loads(attrs["sweep_config"])
    if stored != json.loads(json.dumps(cfg.as_dict(), sort_keys=True, default=str)):
        raise ConfigError(f"store {str(path)!r} holds a different sweep (made from "
                          f"{attrs.get('sweep_config_source') or 'another config'}); choose a new --store, "
                          "or start it afresh with --overwrite")


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


def dashboard_address(spec: str | int | None) -> str | None:
    """``[ADDRESS:]PORT`` of the local cluster's dashboard as an address; a bare port is on localhost.

    Parameters
    ----------
    spec : str, int or None
        ``8787``, ``":8787"``, ``"127.0.0.1:8787"``, ``"0"`` (a free port); None: no dashboard.

    Examples
    --------
    >>> dashboard_address(8787), dashboard_address(":0"), dashboard_address("localhost:8788")
    ('127.0.0.1:8787', '127.0.0.1:0', 'localhost:8788')
    """
    if spec is None:
        return None
    host, _, port = str(spec).strip().rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"dashboard={spec!r} is not [ADDRESS:]PORT (e.g. 8787 or 127.0.0.1:8787)")
    return f"{host or LOCALHOST}:{int(port)}"


@contextlib.contextmanager
def local_cluster(workers: int, resources: dict[str, float] | None = None, dashboard: str | int | None = None,
                  processes: bool = True) -> Iterator[Any]:
    """A dask LocalCluster whose every service listens on 127.0.0.1 only; yields a client of it.

    Scheduler, workers, nannies and their HTTP servers (health and metrics routes) bind to
    :data:`LOCALHOST` on free ports. The dashboard is served only when asked for (`dashboard`).

    Parameters
    ----------
    workers : int
        Worker processes (threads with ``processes=False``), one thread each.
    resources : dict, optional
        Resources every worker advertises (``{"GPU": 1}``).
    dashboard : str, int or None
        ``[ADDRESS:]PORT`` of the dashboard (see :func:`dashboard_address`); None: none.
    processes : bool
        Workers in their own processes (the sweep's choice) or as threads of this process.
    """
    from distributed import Client, LocalCluster

    address = dashboard_address(dashboard)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, resources=resources,
                      host=LOCALHOST, protocol="tcp", silence_logs=logging.ERROR, dashboard_address=address,
                      worker_dashboard_address=None,
                      # without a dashboard the scheduler still serves health/metrics routes: on a free local port
                      scheduler_kwargs=None if address else {"dashboard_address": f"{LOCALHOST}:0"}) as cluster, \
            Client(cluster) as client:
        yield client


def listening() -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets this process and its children (local workers) listen on."""
    import psutil

    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            found += [(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    return sorted(set(found))


@contextlib.contextmanager
def _connect(client: Any, scheduler: str | None, workers: int | None, resources: dict[str, float] | None,
             n_tasks: int, log: Callable[[str], None], dashboard: str | int | None = None) -> Iterator[Any]:
    from distributed import Client

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
    with local_cluster(workers, resources, dashboard) as local:
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


def _info(client: Any) -> dict[str, Any]:
    try:  # newer distributed lists only 5 workers unless asked for all
        return dict(client.scheduler_info(n_workers=-1))
    except TypeError:  # pragma: no cover - older distributed
        return dict(client.scheduler_info())


def _workers(client: Any) -> dict[str, Any]:
    return dict(_info(client).get("workers", {}))


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _dashboard(client: Any, local: bool, requested: bool) -> str | None:
    """The dashboard's link; a local one read back from the socket its server really listens on."""
    if not local:
        try:
            return client.dashboard_link
        except Exception:
            return None
    if not requested or importlib.util.find_spec("bokeh") is None:
        return None  # not asked for, or a local scheduler without bokeh serves no dashboard
    port = (_info(client).get("services") or {}).get("dashboard")
    bound = [host for host, p in listening() if p == port]
    return f"http://{bound[0]}:{port}/status" if bound else None


def _cluster_sockets(client: Any) -> list[tuple[str, int]]:
    """What a local cluster really listens on: its processes' listening sockets on its services' ports."""
    info = _info(client)
    ports = {_port(info["address"]), *(p for p in (info.get("services") or {}).values() if isinstance(p, int))}
    for address, worker in info.get("workers", {}).items():
        ports.add(_port(address))
        if worker.get("nanny"):
            ports.add(_port(worker["nanny"]))
        ports |= {p for p in (worker.get("services") or {}).values() if isinstance(p, int)}
    return [(host, port) for host, port in listening() if port in ports]


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
    dashboard: str | int | None = None,
    overwrite: bool = False,
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
    dashboard : str or int, optional
        Local cluster: serve the dask dashboard at ``[ADDRESS:]PORT`` (a bare port is on
        127.0.0.1; default: no dashboard). Every other service of a local cluster listens on
        127.0.0.1 only.
    overwrite : bool
        Start the store afresh: an existing sweep store at `store` (and only a sweep store) is
        replaced by a new, empty one, after the config has been validated; the new store is built
        beside the old one and renamed into place. Make sure no other sweep writes into it.

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
    local = client is None and not scheduler
    if dashboard is not None and not local:
        raise ConfigError("dashboard= serves the dashboard of a local cluster; a running scheduler serves its own")
    dashboard_address(dashboard)  # a malformed address fails before any work
    cfg = _as_config(config)
    path = check_target(store)
    if overwrite and (path.exists() or path.is_symlink()):
        check_sweep_store(path)  # before planning: a folder that is not a sweep store is never touched
    plan = resolve(cfg, local=local)
    tasks = plan.tasks()
    created = prepare(path, plan, overwrite=overwrite)
    done = done_mask(path)
    pending = [t for t in tasks if not done[t]]
    summary = SweepSummary(store=path, total=len(tasks), skipped=len(tasks) - len(pending))
    log(f"sweep {plan.fingerprint[:12]}: {len(tasks)} tasks ({len(plan.models)} models x {len(plan.datasets)} datasets x "
        f"{int((plan.image_ids != '').sum())} images x {len(plan.methods)} methods), {summary.skipped} already done; "
        f"store {path} ({('replaced' if overwrite else 'created') if created else 'resumed'})")
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
    with _connect(client, scheduler, workers, _local_resources(cfg), len(pending), log, dashboard) as dask_client:
        summary.dashboard = _dashboard(dask_client, local, dashboard is not None)
        summary.workers = len(_workers(dask_client))
        if summary.dashboard:
            log(f"dask dashboard: {summary.dashboard}")
            host = summary.dashboard.split("//")[1].rpartition(":")[0]
            if local and not (host.startswith("127.") or host in ("localhost", "[::1]", "::1")):
                log(f"warning: the dashboard listens on {host}: other machines can reach it")
        elif local and dashboard is None:
            log("dask dashboard: off (serve it on this machine with --dashboard PORT)")
        else:
            log("dask dashboard: not served (install bokeh>=3.1 for it)")
        if local:
            log(f"local dask cluster listening on {', '.join(f'{h}:{p}' for h, p in _cluster_sockets(dask_client))}")
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

