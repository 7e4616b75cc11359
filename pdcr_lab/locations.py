"""Where pdcr_lab writes, and where it finds what the checkout ships.

Everything a user computes (maps cached by the notebooks, the dashboard's results, paper figures)
goes to a **user folder**, never into the source checkout:

==================  ===================================  =================================
what                default                              override
==================  ===================================  =================================
user folder         ``~/pdcr_lab``                        ``$PDCR_LAB_HOME``
results             ``<user folder>/results``             ``$PDCR_LAB_RESULTS``
figures             ``<user folder>/figures``             ``$PDCR_LAB_FIGURES``
==================  ===================================  =================================

The checkout's ``data/results`` holds the recorded studies and the notebooks' maps that ship
with the project (:func:`shipped_results`): they are read, as a fallback, but never written by a
notebook, the dashboard or the tests. Rebuilding them is a deliberate command (see the README).

Examples
--------
>>> import os
>>> os.environ["PDCR_LAB_HOME"] = "/tmp/lab"
>>> results_dir().as_posix(), figures_dir().as_posix()
('/tmp/lab/results', '/tmp/lab/figures')
>>> del os.environ["PDCR_LAB_HOME"]
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "RESULTS_ENV", "FIGURES_ENV", "user_dir", "results_dir", "figures_dir", "shipped_results",
           "find_result"]

#: Environment variable of the user folder (results and figures inside it unless set apart).
HOME_ENV = "PDCR_LAB_HOME"
#: Environment variable that points stored results (and the notebooks' cache) elsewhere.
RESULTS_ENV = "PDCR_LAB_RESULTS"
#: Environment variable that points the paper figures elsewhere.
FIGURES_ENV = "PDCR_LAB_FIGURES"


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def user_dir() -> Path:
    """The user folder: ``$PDCR_LAB_HOME``, else ``~/pdcr_lab``."""
    return _from_env(HOME_ENV) or Path.home() / "pdcr_lab"


def results_dir() -> Path:
    """Where results are written: ``$PDCR_LAB_RESULTS``, else ``results`` in the user folder."""
    return _from_env(RESULTS_ENV) or user_dir() / "results"


def figures_dir() -> Path:
    """Where paper figures are written: ``$PDCR_LAB_FIGURES``, else ``figures`` in the user folder."""
    return _from_env(FIGURES_ENV) or user_dir() / "figures"


def shipped_results() -> Path:
    """The recorded results of the checkout (``data/results``; read-only for everything but the study commands)."""
    return Path(__file__).resolve().parents[1] / "data" / "results"


def find_result(relative: str | os.PathLike) -> Path | None:
    """A stored result by its path relative to a results folder: the user's first, then the shipped one.

    Parameters
    ----------
    relative : str or os.PathLike
        E.g. ``"strategies.nc"`` or ``"notebooks/components_quick.nc"``.

    Returns
    -------
    pathlib.Path or None
        The first existing file, or None when neither folder has it.

    Examples
    --------
    >>> find_result("strategies.nc") in (results_dir() / "strategies.nc", shipped_results() / "strategies.nc", None)
    True
    """
    for root in (results_dir(), shipped_results()):
        path = root / relative
        if path.is_file():
            return path
    return None
