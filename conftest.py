"""Root conftest: a seeded namespace for the doctests of ``pytest --doctest-modules pdcr_lab``.

It lives at the repository root, not in ``pdcr_lab/``: a ``pdcr_lab/conftest.py`` would be installed
with the package (it imports pytest, a dev-only dependency) and listed among its modules by
``pkgutil.walk_packages``. At the root it is loaded for both ``pytest pdcr_lab`` and ``pytest tests``
(the rootdir is this folder), and it only acts on doctest items.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import xarray as xr

import pdcr_lab

try:  # public since pytest 8.x; the private path for older 8.x releases
    from pytest import DoctestItem
except ImportError:  # pragma: no cover
    from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_namespace(request: pytest.FixtureRequest, doctest_namespace: dict) -> None:
    """Seed every random source and offer ``np``, ``torch``, ``xr`` and ``pdcr_lab`` to each doctest."""
    if not isinstance(request.node, DoctestItem):
        return
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    doctest_namespace.update(np=np, torch=torch, xr=xr, pdcr_lab=pdcr_lab)
