"""The ``pdcr-lab serve`` dashboard (panel) and the result folder it shares with the notebooks.

- :class:`Dashboard` / :func:`create_app`: the app (choose dataset, image, models; click the RoI;
  explain with a progress bar; browse stored results; export the figure).
- :class:`ResultStore`: a folder of ``.nc`` results, used as a cache by the notebooks;
  :func:`confine` keeps the dashboard's folders inside the results root.
- :func:`serve` / :func:`server_options`: ``pdcr-lab serve`` (localhost only unless told otherwise).
"""

from ._app import DATASETS, Dashboard, ModelSource, create_app, zoo_source
from ._store import (
    RESULTS_ENV,
    ResultStore,
    confine,
    fingerprint,
    notebook_store,
    result_name,
    results_dir,
)
from .cli import serve, server_options

__all__ = ["DATASETS", "RESULTS_ENV", "Dashboard", "ModelSource", "ResultStore", "confine", "create_app", "fingerprint",
           "notebook_store", "result_name", "results_dir", "serve", "server_options", "zoo_source"]
