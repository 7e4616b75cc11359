"""Sweeps: every (model, dataset, image, RoI, method) of a study explained into one Zarr store.

``pdcr-lab sweep CONFIG --store PATH.zarr [--scheduler ADDRESS] [--workers N]`` or
:func:`run_sweep`. The config (YAML or TOML; format in :mod:`pdcr_lab.sweep._config`, JSON schema
from :func:`config_schema` or ``pdcr-lab sweep --schema``) is validated completely before anything
runs; tasks run on dask.distributed (a LocalCluster, or any running scheduler: SLURM via
dask-jobqueue, Kubernetes, hand-started workers); each task writes only its own chunks of the
pre-allocated store and then its ``done`` marker, so a killed run resumes where it stopped and gives
the same numbers as an uninterrupted one. ``pdcr_lab.load(store)`` opens the store lazily, also
while the sweep is running.
"""

from ._config import ConfigError, Plan, SweepConfig, config_schema, derive_seed, load_config, parse_config
from ._driver import SweepSummary, plan_sweep, run_sweep
from ._methods import Method, get_method, list_methods, register_method
from ._store import provenance

__all__ = [
    # functions
    "run_sweep",
    "plan_sweep",
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
    "Plan",
    "Method",
    # exceptions
    "ConfigError",
]
