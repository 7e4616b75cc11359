"""pdcr_lab (the package's ``__init__`` and ``version``): exports and lazily imported submodules."""

from __future__ import annotations

import importlib

import pytest

import pdcr_lab


def test_package_exports_are_importable():
    for name in pdcr_lab.__all__:
        assert hasattr(pdcr_lab, name), name


def test_submodules_load_on_first_use_and_are_listed():
    assert pdcr_lab.testing is importlib.import_module("pdcr_lab.testing")
    assert {"zoo", "testing", "estimator", "rois"} <= set(dir(pdcr_lab))
    with pytest.raises(AttributeError, match=r"module 'pdcr_lab' has no attribute 'nonexistent'"):
        pdcr_lab.nonexistent  # noqa: B018


def test_version_is_one_string():
    from pdcr_lab.version import __version__

    assert pdcr_lab.__version__ == __version__ and __version__.count(".") >= 1
