"""Sweeps: every (model, dataset, image, RoI, method) of a study explained into one Zarr store.

``pdcr-lab sweep CONFIG --store PATH.zarr [--scheduler ADDRESS] [--workers N] [--dashboard [ADDRESS:]PORT]
[--overwrite] [--dry-run]`` or :func:`run_sweep`. The config (YAML or TOML; format in
:mod:`pdcr_lab.sweep._config`, JSON schema from :func:`config_schema` or ``pdcr-lab sweep --schema``)
is validated completely before anything runs, method parameters by the explainers' own checks;
tasks run on dask.distributed (a LocalCluster, or any running scheduler: SLURM via dask-jobqueue,
Kubernetes, hand-started workers); each task writes only its own chunks of the pre-allocated store
and then its ``done`` marker, so a killed run resumes where it stopped and gives the same numbers as
an uninterrupted one. ``pdcr_lab.load(store)`` opens the store lazily, also while the sweep is
running. ``--overwrite`` replaces an existing sweep store (never any other folder) by a new one.

A local cluster listens on 127.0.0.1 only (scheduler, workers, nannies); its dashboard is off
unless asked for with ``--dashboard`` (a bare port is on 127.0.0.1 too).

Security: **a sweep config is code.** It names Python callables (``factory: "package.module:function"``,
``method: "package.module:function"``) that are imported and called with the config's options, like any
Python entry point; a config can run anything the user running it can. Run only configs you trust
(write them yourself or read them first). ``--dry-run`` (:func:`check_sweep`) imports the modules it
names (which runs their module-level code) and checks the callables' signatures, but calls none of them;
:func:`plan_sweep` and :func:`run_sweep` call the dataset and model factories.
"""

from ._config import ConfigError, Plan, SweepConfig, config_schema, derive_seed, load_config, parse_config
from ._driver import SweepCheck, SweepSummary, check_sweep, plan_sweep, run_sweep
from ._methods import Method, get_method, list_methods, register_method
from ._store import provenance

__all__ = [
    # functions
    "run_sweep",
    "plan_sweep",
    "check_sweep",
    "load_config",
    "parse_config",
    "config_schema",
    "derive_seed",
    "provenance",
    "register_method",
    "get_method",
    "list_methods",
    # classes
    "SweepConfig",
    "SweepSummary",
    "SweepCheck",
    "Plan",
    "Method",
    # exceptions
    "ConfigError",
]
