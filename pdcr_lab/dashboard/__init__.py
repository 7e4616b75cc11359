"""The ``pdcr-lab serve`` dashboard (panel) and the result folder it shares with the notebooks.

- :class:`Dashboard` / :func:`create_app`: the app (choose dataset, image, models; click the RoI;
  explain with a progress bar; browse stored results; export the figure).
- :class:`ResultStore`: a folder of ``.nc`` results, used as a cache by the notebooks.
"""

from ._app import DATASETS, Dashboard, ModelSource, create_app, zoo_source
from ._store import RESULTS_ENV, ResultStore, fingerprint, result_name, results_dir

__all__ = ["DATASETS", "RESULTS_ENV", "Dashboard", "ModelSource", "ResultStore", "create_app", "fingerprint", "result_name", "results_dir", "zoo_source"]
