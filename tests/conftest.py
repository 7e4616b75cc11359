"""Shared fixtures: tiny models, small images and banks, the optional reference data, and the
hypothesis settings profile (deterministic, no deadline, no example database in the repository).

The toy models themselves live in :mod:`pdcr_lab.testing`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pdcr_lab.testing import RandomConvNet

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "pdcr_reference"

# Everything the package writes by default (results, figures) goes to the user folder: during the
# tests that is a temporary one, so neither the checkout nor the tester's ~/pdcr_lab is touched.
_USER_DIR = Path(tempfile.mkdtemp(prefix="pdcr_lab_tests_home_"))
for _name in ("PDCR_LAB_RESULTS", "PDCR_LAB_FIGURES"):
    os.environ.pop(_name, None)
os.environ["PDCR_LAB_HOME"] = str(_USER_DIR)

requires_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="reference data (../shared/data/pdcr_reference) not present"
)

# Hypothesis caches what it reads from the source (.hypothesis/constants) in the working directory,
# even without an example database, from the collection on: point it outside the repository before
# it is imported.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "pdcr_lab_hypothesis"))

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is a test dependency; test_properties skips without it
    pass
else:
    # Same examples on every run and machine (derandomize), no timing-based failures (deadline), and
    # no .hypothesis/ folder written into the repository (database=None).
    settings.register_profile(
        "pdcr-lab",
        derandomize=True,
        deadline=None,
        max_examples=25,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("PDCR_LAB_HYPOTHESIS_PROFILE", "pdcr-lab"))


def _git_status() -> str | None:
    """``git status --porcelain`` of the checkout (ignored files excluded), or None outside a git checkout."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def pytest_sessionstart(session):
    session.config._pdcr_git_status = _git_status()


def pytest_sessionfinish(session, exitstatus):
    """The test run must leave the checkout as it found it: a file it changed or added fails the run."""
    shutil.rmtree(_USER_DIR, ignore_errors=True)
    before = getattr(session.config, "_pdcr_git_status", None)
    after = _git_status()
    if before is None or after is None or before == after:
        return
    asked = [Path(os.environ[k]).resolve() for k in ("PDCR_LAB_SCREENSHOTS", "PDCR_LAB_SCREENSHOT") if os.environ.get(k)]

    def asked_for(line: str) -> bool:  # screenshots written into docs/ on request (README: refreshing them)
        path = (ROOT / line[3:].split(" -> ")[-1]).resolve()
        return any(path == target or target in path.parents for target in asked)

    changed = sorted(line for line in set(after.splitlines()) ^ set(before.splitlines()) if not asked_for(line))
    if not changed:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "the tests changed the checkout (git status before/after differs):\n  " + "\n  ".join(changed)
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _seed_everything():
    # Fixed seeds so that every test sees the same random models and images.
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip("reference data (../shared/data/pdcr_reference) not present")
    return REFERENCE


@pytest.fixture
def tiny_net() -> RandomConvNet:
    """A random 2-layer CNN for 3-channel images whose sigmoid output hovers around 0.5."""
    return RandomConvNet().eval()


@pytest.fixture
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 32, 32, generator=g)


@pytest.fixture
def small_bank():
    from pdcr_lab import PatchBank

    g = torch.Generator().manual_seed(2)
    return PatchBank(torch.rand(6, 3, 4, 4, generator=g), {"recipe": "test"})


@pytest.fixture
def quick_explain():
    """``explain`` with the small defaults of the argument tests: RoI (12, 12, 8, 8) of a 32 x 32 image,
    the zero intervention and 4-pixel blocks; keyword arguments override them."""
    from pdcr_lab import explain

    def call(model, image, **kw):
        kw.setdefault("roi", (12, 12, 8, 8))
        kw.setdefault("intervention", "zero")
        kw.setdefault("block", 4)
        return explain(model, image, **kw)

    return call


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tests on tiny models: as fast as several, and far
    faster on a shared machine where several threads spin-wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny96(seed: int) -> RandomConvNet:
    return RandomConvNet(hidden=4, kernel=5, seed=seed, scale=0.5)


@pytest.fixture(scope="session")
def tiny96():
    """Factory of the fixed random CNNs of the 96 x 96 interactive tests (viz, widgets, dashboard):
    ``tiny96(seed)``; their output hovers around 0.5, so their maps are non-trivial."""
    return _tiny96


@pytest.fixture(scope="module")
def lesions():
    """The embedded lesions dataset (generated once and cached)."""
    from pdcr_lab import datasets

    return datasets.load("lesions")


@pytest.fixture(scope="module")
def lesion_maps(lesions):
    """(image, map a, map b): two zero-intervention maps of two random CNNs on one 96 x 96 test image."""
    from pdcr_lab import explain

    image, target = lesions.images("test")[0], lesions.masks("test")[0]
    kw = dict(roi=(40, 40, 16, 16), target=target, bank=lesions.bank, fine=4, intervention="zero")
    return image, explain(_tiny96(1), image, **kw), explain(_tiny96(4), image, **kw)
